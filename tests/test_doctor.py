"""`costspan doctor`, run as a subprocess in each situation it must recognise, output checked.

Where the doctor predicts what `opentelemetry-instrument` will do (which configurator loads, an
exporter or propagator that does not exist, who instruments openai), the real launcher is run
in the same environment to prove the prediction.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from costspan.ledgers import SQLiteLedger
from tests.cli import LAUNCHER, clean_env, run
from tests.processes import free_port
from tests.redis_server import RedisServer


def lines(result: subprocess.CompletedProcess[str], what: str) -> list[str]:
    """The doctor's line for ``what`` and its fix line, if any."""
    out = result.stdout.splitlines()
    for i, line in enumerate(out):
        if line[4:].startswith(f"{what} "):
            fix = out[i + 1] if i + 1 < len(out) and out[i + 1].startswith(" " * 19) else ""
            return [line, fix.strip()]
    raise AssertionError(f"no {what} line in:\n{result.stdout}")


def launch(env: dict[str, str], code: str = "pass") -> subprocess.CompletedProcess[str]:
    """``opentelemetry-instrument python -c CODE`` with exporters that send nothing anywhere."""
    full = {
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        **env,
    }
    return subprocess.run(
        [str(LAUNCHER), sys.executable, "-c", code],
        env=clean_env(full),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


def test_a_healthy_set_up_is_all_ok(tmp_path: Path) -> None:
    """costspan alone, a SQLite ledger whose file does not exist yet: every check ok or a note,
    exit 0, and the doctor created nothing."""
    result = run("doctor", env={"COSTSPAN_LEDGER": f"sqlite:///{tmp_path / 'ledger.db'}"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "!!" not in result.stdout
    assert "~~" not in result.stdout
    assert lines(result, "settings")[0].startswith("ok  settings       every COSTSPAN_*")
    assert lines(result, "openai")[0].startswith("ok  openai ")
    assert "openai calls are traced once, by costspan_openai (costspan " in result.stdout
    assert "not loaded: openai (opentelemetry-instrumentation-genai-openai" in result.stdout
    assert "costspan (the only one installed): CostSpanProcessor sits in front" in result.stdout
    for signal in ("traces", "metrics", "logs"):
        assert "otlp -> otlp_proto_grpc" in lines(result, signal)[0]
    assert lines(result, "propagators")[0].startswith("ok  propagators    tracecontext, baggage")
    assert f"{tmp_path / 'ledger.db'} will be created on first use" in result.stdout
    assert "gpt-4o-mini: $0.15 in + $0.6 out per million tokens (genai-prices" in result.stdout
    assert result.stdout.splitlines()[-1] == "no problems found"
    assert list(tmp_path.iterdir()) == []


def test_a_missing_ledger_folder_is_reported_not_created(tmp_path: Path) -> None:
    """sqlite:///.../no-such-dir/x.db: a problem naming the folder and the fix, exit 1; the
    folder is still not there afterwards."""
    folder = tmp_path / "no-such-dir"
    result = run("doctor", env={"COSTSPAN_LEDGER": f"sqlite:///{folder / 'x.db'}"})
    assert result.returncode == 1
    assert lines(result, "ledger") == [
        f"!!  ledger         the folder {folder} does not exist",
        f"fix: mkdir -p {folder}",
    ]
    assert not folder.exists()
    assert result.stdout.splitlines()[-1].startswith("1 problem(s)")


@pytest.mark.parametrize("in_use", [False, True], ids=["closed", "open-elsewhere"])
def test_an_existing_sqlite_ledger_is_only_read(tmp_path: Path, in_use: bool) -> None:
    """A real SQLite ledger, closed or held open by another process's connection: the doctor
    reads it and changes no byte, makes no -wal or -shm file, touches no time stamp."""
    path = tmp_path / "ledger.db"
    ledger = SQLiteLedger(path)
    ledger.ping()  # creates the file, its WAL and its tables
    holder: sqlite3.Connection | None = None
    if in_use:
        holder = sqlite3.connect(path)
        holder.execute("SELECT count(*) FROM scopes").fetchall()
    ledger.close()
    before = listing(tmp_path)
    assert ("ledger.db-wal" in before) == in_use
    result = run("doctor", env={"COSTSPAN_LEDGER": f"sqlite:///{path}"})
    after = listing(tmp_path)
    if holder is not None:
        holder.close()
    assert result.returncode == 0, result.stdout
    ledger_line = lines(result, "ledger")[0]
    assert ledger_line.startswith(f"ok  ledger         {path} reads in ")
    assert "(read-only), holds budget counters; fail mode local" in ledger_line
    assert after == before


def test_a_ledger_that_is_not_sqlite(tmp_path: Path) -> None:
    """A text file or a folder as the SQLite ledger: a problem each, exit 1, nothing changed."""
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database\n")
    for target, found in (
        (notes, f"{notes} is not a SQLite database"),
        (tmp_path, f"{tmp_path} is a folder, not a SQLite file"),
    ):
        result = run("doctor", env={"COSTSPAN_LEDGER": f"sqlite:///{target}"})
        assert result.returncode == 1
        assert lines(result, "ledger")[0] == f"!!  ledger         {found}"
    assert notes.read_text() == "not a database\n"
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_redis_ledger_answers_with_its_latency(redis_server: RedisServer) -> None:
    """A live Redis: ok with a ping time, exit 0; the doctor wrote no key."""
    import redis

    redis_server.flushed()
    result = run("doctor", env={"COSTSPAN_LEDGER": redis_server.url})
    assert result.returncode == 0, result.stdout
    line = lines(result, "ledger")[0]
    assert line.startswith(f"ok  ledger         {redis_server.url} answers in ")
    assert line.endswith(" ms; fail mode local")
    assert redis.Redis(port=redis_server.port).dbsize() == 0


def test_a_dead_ledger_and_bad_settings_are_problems_with_fixes() -> None:
    """A Redis nobody listens on and a bad COSTSPAN_ON_UNPRICED: both reported with fixes (the
    bad variable does not hide the others), exit 1."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = run("doctor", env={"COSTSPAN_LEDGER": url, "COSTSPAN_ON_UNPRICED": "explode"})
    assert result.returncode == 1
    settings, fix = lines(result, "settings")
    assert settings.startswith("!!  settings       COSTSPAN_ON_UNPRICED='explode'")
    assert (
        fix == "fix: correct or unset COSTSPAN_ON_UNPRICED (docs/configuration.md lists its values)"
    )
    ledger, fix = lines(result, "ledger")
    assert ledger.startswith(f"!!  ledger         {url} does not answer")
    assert fix.startswith("fix: start Redis or correct COSTSPAN_LEDGER")
    assert result.stdout.splitlines()[-1].startswith("2 problem(s)")


def test_install_hints_print_literally() -> None:
    """Without redis-py (hidden from the child), a Redis ledger's hint reads
    pip install 'costspan[redis]' with its brackets: no markup eats them."""
    result = run("doctor", env={"COSTSPAN_LEDGER": "redis://127.0.0.1:6379/0"}, hide="redis")
    assert result.returncode == 1
    assert "needs redis-py (pip install 'costspan[redis]')" in lines(result, "settings")[0]


def test_an_unknown_exporter_is_a_problem_as_the_launcher_finds(tmp_path: Path) -> None:
    """OTEL_TRACES_EXPORTER=bogus: a problem naming the installed exporters, exit 1; the real
    launcher fails to set up OpenTelemetry with the error the doctor quoted."""
    env = {"OTEL_TRACES_EXPORTER": "bogus"}
    result = run("doctor", env=env)
    assert result.returncode == 1
    traces, fix = lines(result, "traces")
    assert traces.startswith("!!  traces         OTEL_TRACES_EXPORTER='bogus': no installed traces")
    assert "(installed: console, otlp, otlp_proto_grpc, otlp_proto_http, none)" in traces
    choices = "console, otlp, otlp_proto_grpc, otlp_proto_http, none"
    assert fix == f"fix: set OTEL_TRACES_EXPORTER to one of: {choices}"
    launched = launch(env)
    assert "Requested component 'bogus' not found" in launched.stderr
    fine = run("doctor", env={"OTEL_TRACES_EXPORTER": "console", "OTEL_METRICS_EXPORTER": "none"})
    assert fine.returncode == 0, fine.stdout
    assert lines(fine, "traces")[0].startswith("ok  traces         console (opentelemetry-sdk ")
    metrics = lines(fine, "metrics")[0]
    assert metrics == "--  metrics        not exported (OTEL_METRICS_EXPORTER=none)"
    # Set but empty: costspan's distro only fills in unset variables, so nothing is exported.
    empty = run("doctor", env={"OTEL_LOGS_EXPORTER": ""})
    assert (
        lines(empty, "logs")[0] == "--  logs           not exported (OTEL_LOGS_EXPORTER is empty)"
    )


def test_a_bad_otlp_protocol_is_a_problem() -> None:
    """otlp with an OTLP protocol the SDK does not know: a problem, as the launcher finds."""
    env = {"OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon", "OTEL_TRACES_EXPORTER": "otlp"}
    result = run("doctor", env=env)
    assert result.returncode == 1
    assert "OTEL_EXPORTER_OTLP_PROTOCOL='carrier-pigeon' is not an OTLP protocol" in result.stdout
    assert "Unsupported OTLP protocol 'carrier-pigeon'" in launch(env).stderr
    http = run("doctor", env={"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"})
    assert "ok  traces         otlp -> otlp_proto_http" in http.stdout


def test_propagators_are_checked_as_the_app_loads_them() -> None:
    """An unknown propagator: a problem (the app itself would fail to start, as the launcher
    shows); a list without baggage: a warning, since budgets and tags travel in baggage.

    The unknown name is checked in-process: any process that imports costspan (the costspan
    command too) stops at ``import opentelemetry.propagate`` under such a value."""
    from costspan._doctor import propagator_check

    bogus = propagator_check({"OTEL_PROPAGATORS": "tracecontext,bogus"})
    assert bogus.status == "problem"
    assert "no installed propagator is called 'bogus'" in bogus.detail
    assert bogus.fix == "set OTEL_PROPAGATORS to installed names, e.g. tracecontext,baggage"
    launched = launch({"OTEL_PROPAGATORS": "tracecontext,bogus"}, "print('app ran')")
    assert launched.returncode != 0
    assert "app ran" not in launched.stdout
    assert "Propagator bogus not found" in launched.stderr
    assert propagator_check({"OTEL_PROPAGATORS": "none"}).status == "warn"
    no_baggage = run("doctor", env={"OTEL_PROPAGATORS": "tracecontext"})
    assert no_baggage.returncode == 0
    assert lines(no_baggage, "propagators") == [
        "~~  propagators    OTEL_PROPAGATORS='tracecontext' leaves out baggage: budgets and"
        " tags stop at this process",
        "fix: OTEL_PROPAGATORS=tracecontext,baggage",
    ]


def _acme(tmp_path: Path) -> Path:
    """An installed package (on PYTHONPATH) with a configurator of its own, registered before
    costspan's: like opentelemetry-distro, it wins unless told otherwise."""
    site = tmp_path / "site"
    info = site / "acme_otel-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-otel\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[opentelemetry_configurator]\nacme = acme_otel:AcmeConfigurator\n"
    )
    (site / "acme_otel.py").write_text(
        "import sys\n"
        "from opentelemetry.sdk._configuration import _BaseConfigurator\n"
        "class AcmeConfigurator(_BaseConfigurator):\n"
        "    def _configure(self, **kwargs):\n"
        "        print('acme configurator loaded', file=sys.stderr)\n"
    )
    return site


def test_the_winning_configurator(tmp_path: Path) -> None:
    """Another configurator installed first: a warning (exported foreign spans lack cost) with
    the fix, exit 0, and the launcher indeed loads it; with OTEL_PYTHON_CONFIGURATOR=costspan,
    ok, and the launcher loads costspan's; a name nobody registered: a problem."""
    site = {"PYTHONPATH": str(_acme(tmp_path))}
    other = run("doctor", env=site)
    assert other.returncode == 0, other.stdout
    assert lines(other, "configurator") == [
        "~~  configurator   acme (acme-otel 1.0, the first of acme, costspan: "
        "OTEL_PYTHON_CONFIGURATOR=costspan pins it) sets up the SDK, not costspan: spans of other"
        " GenAI instrumentations are exported without cost (costspan's own carry it)",
        "fix: OTEL_PYTHON_CONFIGURATOR=costspan",
    ]
    assert other.stdout.splitlines()[-1] == "no problems; 1 warning(s) above"
    assert "acme configurator loaded" in launch(site).stderr

    pinned = {**site, "OTEL_PYTHON_CONFIGURATOR": "costspan"}
    ours = run("doctor", env=pinned)
    assert ours.returncode == 0, ours.stdout
    assert lines(ours, "configurator") == [
        "ok  configurator   costspan (chosen by OTEL_PYTHON_CONFIGURATOR): CostSpanProcessor"
        " sits in front of every span exporter",
        "",
    ]
    assert "~~" not in ours.stdout
    assert "acme configurator loaded" not in launch(pinned).stderr

    missing = run("doctor", env={"OTEL_PYTHON_CONFIGURATOR": "nope"})
    assert missing.returncode == 1
    configurator, fix = lines(missing, "configurator")
    assert "OTEL_PYTHON_CONFIGURATOR='nope' names no installed configurator" in configurator
    assert fix == "fix: OTEL_PYTHON_CONFIGURATOR=costspan"


def test_an_unknown_distro_is_a_problem() -> None:
    """OTEL_PYTHON_DISTRO naming nothing installed: the launcher would fall back to no distro
    and no default exporters."""
    result = run("doctor", env={"OTEL_PYTHON_DISTRO": "nope"})
    assert result.returncode == 1
    distro, fix = lines(result, "distro")
    assert "OTEL_PYTHON_DISTRO='nope' names no installed distro (installed: costspan)" in distro
    assert fix == "fix: unset OTEL_PYTHON_DISTRO or set it to one of: costspan"
    assert (
        lines(result, "traces")[0]
        == "--  traces         not exported (OTEL_TRACES_EXPORTER is unset)"
    )


INSTRUMENTED = (
    "from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor as Official\n"
    "from costspan._instrumentor import OpenAIInstrumentor as Ours\n"
    "print(sorted(n for n, i in (('openai', Official()), ('costspan_openai', Ours()))"
    " if i.is_instrumented_by_opentelemetry))\n"
)


def test_who_instruments_openai_as_the_launcher_decides() -> None:
    """The official OpenAI instrumentation (installed by the test extra) next to costspan's:
    costspan's distro disables it, the doctor says so, and the launcher indeed instruments
    openai once, keeping what the user disabled; COSTSPAN_OTHER_OPENAI_INSTRUMENTORS=keep keeps
    both (a warning), and another distro leaves both on (a problem, exit 1, with the fix)."""
    unset = {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": ""}
    once = run("doctor", env=unset)
    assert once.returncode == 0, once.stdout
    line = lines(once, "instrumentors")[0]
    assert line.startswith("ok  instrumentors  openai calls are traced once, by costspan_openai")
    assert "openai (opentelemetry-instrumentation-genai-openai " in line
    assert (
        "disabled by costspan's distro; COSTSPAN_OTHER_OPENAI_INSTRUMENTORS=keep keeps it" in line
    )
    launched = launch(unset, INSTRUMENTED)
    assert launched.stdout.strip() == "['costspan_openai']", launched.stderr
    kept_env = {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "redis, flask", **_KEEP}
    both = run("doctor", env=kept_env)
    line, fix = lines(both, "instrumentors")
    assert line.startswith("~~  instrumentors  openai is instrumented 2 times: ")
    assert "openai (opentelemetry-instrumentation-genai-openai " in line
    assert "costspan_openai (costspan " in line
    assert fix == "fix: unset COSTSPAN_OTHER_OPENAI_INSTRUMENTORS"
    twice = launch(kept_env, INSTRUMENTED)
    assert twice.stdout.strip() == "['costspan_openai', 'openai']", twice.stderr
    # Under a distro that is not costspan's, nothing disables the official one.
    other = run("doctor", env={**unset, "OTEL_PYTHON_DISTRO": "someone-else"})
    assert other.returncode == 1
    assert lines(other, "instrumentors")[0].startswith(
        "!!  instrumentors  openai is instrumented 2 times: "
    )


_KEEP = {"COSTSPAN_OTHER_OPENAI_INSTRUMENTORS": "keep"}


def test_costspan_disabled_leaves_a_warning() -> None:
    """costspan_openai disabled while the official one runs: a warning that says how to swap
    them; everything disabled: a warning that nothing instruments openai."""
    swapped = run("doctor", env={"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "costspan_openai"})
    assert swapped.returncode == 0
    line, fix = lines(swapped, "instrumentors")
    assert line.startswith("~~  instrumentors  openai calls are traced by openai (")
    assert "docs/instrumentations.md" in line
    assert fix.startswith("fix: remove costspan_openai from OTEL_PYTHON_DISABLED_INSTRUMENTATIONS")
    nothing = run("doctor", env={"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "*"})
    assert "nothing instruments openai under opentelemetry-instrument" in nothing.stdout


def test_settlements_waiting_in_the_outbox_are_reported(tmp_path: Path) -> None:
    """Entries a shared ledger could not take yet are a warning with what they carry; entries
    it rejected for good are a problem (exit 1). The doctor only reads the file."""
    from costspan.ledgers import ScopeLimit
    from costspan.ledgers._outbox import MAX_ATTEMPTS, Entry, Outbox

    path = tmp_path / "outbox.db"
    box = Outbox(path, "redis://cache:6379/0#costspan")
    scopes = (ScopeLimit("limit:*:d1", cap_micros=10),)
    box.put(Entry("a", 1_500, 10, scopes, release=False))
    box.put(Entry("b", 0, 0, scopes, release=True))
    box.close()
    env = {"COSTSPAN_OUTBOX": str(path)}
    waiting = run("doctor", env=env)
    line, _ = lines(waiting, "outbox")
    assert "redis://cache:6379/0#costspan: 2 waiting ($0.0015)" in line
    assert line.startswith("~~")
    before = listing(tmp_path)
    box = Outbox(path, "redis://cache:6379/0#costspan")
    for _ in range(MAX_ATTEMPTS):
        claimed = box.claim()
        assert claimed is not None
        box.failed(claimed[0], "ResponseError: WRONGTYPE")
    box.close()
    dead = run("doctor", env=env)
    line, fix = lines(dead, "outbox")
    assert line.startswith("!!")
    assert "1 settlement(s) the ledger rejected 20 times" in line
    assert "troubleshooting" in fix
    assert dead.returncode == 1
    assert listing(tmp_path).keys() == before.keys()
