"""``costspan doctor``: a read-only pre-flight of a deployment, one check per concern.

Each check only looks: it reads settings and package metadata, opens SQLite files read-only,
pings Redis, and never creates, writes or loads anything the launcher would run. What
``opentelemetry-instrument`` would do is worked out the way its own code does it
(``opentelemetry.instrumentation.auto_instrumentation._load`` and the SDK's
``_configuration``): the first distro and configurator entry points win unless
``OTEL_PYTHON_DISTRO`` / ``OTEL_PYTHON_CONFIGURATOR`` name one, exporters and propagators are
looked up by entry-point name, and an instrumentor runs unless it is disabled or the library it
instruments is missing or out of its range.

A check returns :class:`Check` lines: ``ok``, ``note`` (worth knowing), ``warn`` (works, with a
cost) or ``problem`` (broken; the command exits 1). Every warning and problem names its fix.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:
    from costspan._config import Settings
    from costspan.ledgers._open import LedgerSpec

Status = Literal["ok", "note", "warn", "problem"]

_SQLITE_HEADER: Final = b"SQLite format 3\x00"
_SIGNALS: Final = ("traces", "metrics", "logs")
# What the distros we know set when a variable is unset (costspan's and opentelemetry-distro's
# are the same: OTLP over gRPC for every signal).
_KNOWN_DISTRO_DEFAULTS: Final = {
    "costspan": {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
    },
}
_KNOWN_DISTRO_DEFAULTS["distro"] = _KNOWN_DISTRO_DEFAULTS["costspan"]  # opentelemetry-distro
# The SDK's own mapping of "otlp" to the exporter of a protocol (sdk/_configuration).
_OTLP_BY_PROTOCOL: Final = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}
# Exporters people often name, and what to install for them.
_EXPORTER_PACKAGES: Final = {
    "prometheus": "pip install 'costspan[prometheus]'",
    "zipkin": "pip install opentelemetry-exporter-zipkin",
}
_COSTSPAN_INSTRUMENTOR: Final = "costspan_openai"
_DISABLED: Final = "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the pre-flight: a status, what was checked, what was found, the fix."""

    status: Status
    what: str
    detail: str
    fix: str | None = None


@dataclass(frozen=True, slots=True)
class Launch:
    """Who the launcher would pick (shared by the distro, configurator and exporter checks)."""

    distro: str | None
    defaults: Mapping[str, str] = field(default_factory=dict[str, str])


def run(env: Mapping[str, str] | None = None) -> list[Check]:
    """Every check, in the order a person reads them."""
    from costspan import _config

    env = os.environ if env is None else env
    settings, errors = _config.checked_env(env)
    checks = [Check("problem", "settings", str(e), _setting_fix(str(e))) for e in errors]
    if not errors:
        checks.append(Check("ok", "settings", "every COSTSPAN_* variable is valid"))
    checks.append(openai_installed())
    checks.append(openai_instrumentors(env))
    launch, distro = distro_check(env)
    checks.append(distro)
    checks.append(configurator_check(env))
    checks.extend(exporter_checks(env, launch))
    checks.append(propagator_check(env))
    checks.append(ledger_check(settings))
    checks.append(outbox_check(settings))
    checks.append(prices_check(settings))
    checks.append(records_check(settings))
    return checks


def _setting_fix(message: str) -> str:
    name = message.split("=", 1)[0]
    return f"correct or unset {name} (docs/configuration.md lists its values)"


# -- packages and metadata ------------------------------------------------------------------------
def _entry_points(group: str) -> list[metadata.EntryPoint]:
    # The same order the launcher sees: distributions in sys.path order, unique by name.
    return list(metadata.entry_points(group=group))


def _dist_label(ep: metadata.EntryPoint) -> str:
    dist = ep.dist
    return f"{dist.metadata['Name']} {dist.version}" if dist is not None else "unknown package"


def openai_installed() -> Check:
    """openai is installed, in the range costspan's instrumentor covers."""
    from opentelemetry.instrumentation.dependencies import get_dependency_conflicts

    from costspan._instrumentor import OpenAIInstrumentor

    wanted = ", ".join(OpenAIInstrumentor().instrumentation_dependencies())
    try:
        version = metadata.version("openai")
    except metadata.PackageNotFoundError:
        return Check(
            "problem",
            "openai",
            "not installed: there is nothing to instrument",
            "pip install openai",
        )
    conflict = get_dependency_conflicts(list(OpenAIInstrumentor().instrumentation_dependencies()))
    if conflict is not None:
        return Check(
            "problem",
            "openai",
            f"{version} is outside what costspan instruments ({wanted}): calls are not traced",
            f"pip install '{wanted.replace(' ', '')}'",
        )
    return Check("ok", "openai", f"{version} (costspan instruments {wanted})")


def openai_instrumentors(env: Mapping[str, str]) -> Check:
    """Who traces openai calls under ``opentelemetry-instrument``: exactly one must.

    The launcher runs every ``opentelemetry_instrumentor`` entry point that is not named in
    ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` (``*`` disables all) and whose package's
    ``instruments`` requirements are installed; costspan's distro, when it is the one the
    launcher picks, first adds the other instrumentors of openai to that variable
    (:mod:`costspan._launch`). Two that instrument openai trace each call twice.
    """
    from costspan import _launch

    found = [
        ep for ep in _entry_points("opentelemetry_instrumentor") if _launch.instruments_openai(ep)
    ]
    if not any(ep.name == _COSTSPAN_INSTRUMENTOR for ep in found):
        return Check(
            "problem",
            "instrumentors",
            "costspan's instrumentor entry point (costspan_openai) is missing",
            "reinstall costspan (pip install --force-reinstall costspan)",
        )
    distro = _winner("opentelemetry_distro", env.get("OTEL_PYTHON_DISTRO"))
    by_distro = _launch.to_disable(env) if distro is not None and distro.name == "costspan" else []
    disabled = _launch.disabled(env)
    active: list[metadata.EntryPoint] = []
    off: list[str] = []
    for ep in found:
        if "*" in disabled or ep.name in disabled:
            off.append(f"{ep.name} ({_dist_label(ep)}, disabled)")
        elif ep.name in by_distro:
            off.append(
                f"{ep.name} ({_dist_label(ep)}, disabled by costspan's distro; "
                "COSTSPAN_OTHER_OPENAI_INSTRUMENTORS=keep keeps it)"
            )
        elif _launch.conflicts(ep):
            off.append(f"{ep.name} ({_dist_label(ep)}, openai out of its range)")
        else:
            active.append(ep)
    names = ", ".join(f"{ep.name} ({_dist_label(ep)})" for ep in active)
    also = f"; not loaded: {', '.join(off)}" if off else ""
    if len(active) > 1:
        others = [ep.name for ep in active if ep.name != _COSTSPAN_INSTRUMENTOR]
        detail = f"openai is instrumented {len(active)} times: {names}; every call is traced twice"
        if _launch.keeps_others(env):
            return Check(
                "warn",
                "instrumentors",
                f"{detail} (COSTSPAN_OTHER_OPENAI_INSTRUMENTORS=keep); CostSpanProcessor "
                "charges each call once, but spans and gen_ai.client.* metrics are doubled",
                "unset COSTSPAN_OTHER_OPENAI_INSTRUMENTORS",
            )
        keep = [d for d in disabled if d]
        fix = _DISABLED + "=" + ",".join(dict.fromkeys([*keep, *others]))
        if distro is not None and distro.name != "costspan":
            fix = f"OTEL_PYTHON_DISTRO=costspan (its distro disables {', '.join(others)}), or {fix}"
        return Check("problem", "instrumentors", detail, fix)
    if not active:
        return Check(
            "warn",
            "instrumentors",
            f"nothing instruments openai under opentelemetry-instrument{also}",
            "remove costspan_openai from OTEL_PYTHON_DISABLED_INSTRUMENTATIONS "
            "(or call costspan.instrument() in code)",
        )
    (only,) = active
    if only.name != _COSTSPAN_INSTRUMENTOR:
        return Check(
            "warn",
            "instrumentors",
            f"openai calls are traced by {names}, not costspan{also}; CostSpanProcessor "
            "charges and gates its spans with a weaker guarantee (no output cap or input known "
            "at span start: docs/instrumentations.md)",
            "remove costspan_openai from OTEL_PYTHON_DISABLED_INSTRUMENTATIONS",
        )
    return Check("ok", "instrumentors", f"openai calls are traced once, by {names}{also}")


# -- the launcher ---------------------------------------------------------------------------------
def _winner(group: str, chosen: str | None) -> metadata.EntryPoint | None:
    """The launcher's rule for distros and configurators: the one named, else the first."""
    for ep in _entry_points(group):
        if chosen is None or ep.name == chosen:
            return ep
    return None


def distro_check(env: Mapping[str, str]) -> tuple[Launch, Check]:
    """Which distro the launcher would configure (it sets the exporters' defaults)."""
    chosen = env.get("OTEL_PYTHON_DISTRO")
    installed = [ep.name for ep in _entry_points("opentelemetry_distro")]
    winner = _winner("opentelemetry_distro", chosen)
    if winner is None:
        if chosen is None:
            return Launch(None), Check(
                "problem",
                "distro",
                "no OpenTelemetry distro is installed: no exporter is set up by default",
                "reinstall costspan (it registers the distro 'costspan')",
            )
        return Launch(None), Check(
            "problem",
            "distro",
            f"OTEL_PYTHON_DISTRO={chosen!r} names no installed distro"
            f" (installed: {', '.join(installed)}); the launcher falls back to none, so no"
            " exporter is set up by default",
            f"unset OTEL_PYTHON_DISTRO or set it to one of: {', '.join(installed)}",
        )
    why = (
        "chosen by OTEL_PYTHON_DISTRO"
        if chosen is not None
        else (
            "the only one installed"
            if len(installed) == 1
            else "the first of " + ", ".join(installed)
        )
    )
    defaults = _KNOWN_DISTRO_DEFAULTS.get(winner.name, {})
    says = "OTLP exporters by default" if defaults else "its own defaults"
    return Launch(winner.name, defaults), Check(
        "ok", "distro", f"{winner.name} ({_dist_label(winner)}, {why}): {says}"
    )


def configurator_check(env: Mapping[str, str]) -> Check:
    """Which configurator sets up the SDK: costspan's puts CostSpanProcessor in front of every
    exporter; another one exports spans of other GenAI instrumentations without cost."""
    chosen = env.get("OTEL_PYTHON_CONFIGURATOR")
    installed = [ep.name for ep in _entry_points("opentelemetry_configurator")]
    winner = _winner("opentelemetry_configurator", chosen)
    if winner is None:
        listed = ", ".join(installed) or "none"
        return Check(
            "problem",
            "configurator",
            f"OTEL_PYTHON_CONFIGURATOR={chosen!r} names no installed configurator"
            f" (installed: {listed}): the launcher sets up no SDK and nothing is exported"
            if chosen is not None
            else "no configurator is installed: the launcher sets up no SDK",
            "OTEL_PYTHON_CONFIGURATOR=costspan"
            if "costspan" in installed
            else "reinstall costspan",
        )
    if chosen is not None:
        why = "chosen by OTEL_PYTHON_CONFIGURATOR"
    elif len(installed) == 1:
        why = "the only one installed"
    else:
        why = f"the first of {', '.join(installed)}: OTEL_PYTHON_CONFIGURATOR=costspan pins it"
    if winner.name == "costspan":
        return Check(
            "ok",
            "configurator",
            f"costspan ({why}): CostSpanProcessor sits in front of every span exporter",
        )
    return Check(
        "warn",
        "configurator",
        f"{winner.name} ({_dist_label(winner)}, {why}) sets up the SDK, not costspan: spans of"
        " other GenAI instrumentations are exported without cost (costspan's own carry it)",
        "OTEL_PYTHON_CONFIGURATOR=costspan",
    )


def _otlp_name(env: Mapping[str, str], signal: str, launch: Launch) -> str | Check:
    """``otlp`` resolved by protocol, as the SDK does (``_get_exporter_entry_point``)."""
    var = f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL"
    protocol = (
        env.get(var)
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or launch.defaults.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    )
    if not protocol:
        return "otlp_proto_grpc"
    if protocol.strip() not in _OTLP_BY_PROTOCOL:
        which = var if env.get(var) else "OTEL_EXPORTER_OTLP_PROTOCOL"
        return Check(
            "problem",
            signal,
            f"{which}={protocol!r} is not an OTLP protocol: the launcher would fail"
            " (Unsupported OTLP protocol)",
            f"{which}=grpc or {which}=http/protobuf",
        )
    return _OTLP_BY_PROTOCOL[protocol.strip()]


def exporter_checks(env: Mapping[str, str], launch: Launch) -> list[Check]:
    """Each signal's exporters resolve to installed entry points (``none`` exports nothing)."""
    checks: list[Check] = []
    for signal in _SIGNALS:
        var = f"OTEL_{signal.upper()}_EXPORTER"
        raw = env.get(var)
        source = var
        if raw is None and var in launch.defaults:  # the distro's setdefault: only if unset
            raw, source = launch.defaults[var], f"the {launch.distro} distro's default"
        if raw is None and launch.distro is not None and not launch.defaults:
            checks.append(
                Check("note", signal, f"{var} is unset: the {launch.distro} distro decides")
            )
            continue
        if not raw or raw.strip().lower() == "none":
            if raw is None:
                why = f"{var} is unset"
            else:
                why = f"{source}={raw}" if raw.strip() else f"{var} is empty"
            checks.append(Check("note", signal, f"not exported ({why})"))
            continue
        group = f"opentelemetry_{signal}_exporter"
        available = {ep.name: ep for ep in _entry_points(group)}
        resolved: list[str] = []
        failed: Check | None = None
        for name in (part.strip() for part in raw.split(",")):
            entry = name
            if name == "otlp":
                otlp = _otlp_name(env, signal, launch)
                if isinstance(otlp, Check):
                    failed = otlp
                    break
                entry = otlp
            ep = available.get(entry)
            if ep is None:
                choices = ", ".join([*sorted(available), "none"])
                hint = _EXPORTER_PACKAGES.get(name)
                failed = Check(
                    "problem",
                    signal,
                    f"{source}={raw!r}: no installed {signal} exporter is called {entry!r}"
                    f" (installed: {choices}); opentelemetry-instrument would not set up"
                    f" OpenTelemetry (\"Requested component '{entry}' not found\") and the"
                    " app would run without telemetry",
                    (hint + f", or set {var} to one of: {choices}")
                    if hint
                    else f"set {var} to one of: {choices}",
                )
                break
            resolved.append(
                f"{entry} ({_dist_label(ep)})"
                if entry == name
                else f"{name} -> {entry} ({_dist_label(ep)})"
            )
        if failed is not None:
            checks.append(failed)
        else:
            checks.append(Check("ok", signal, f"{', '.join(resolved)}, from {source}"))
    return checks


def propagator_check(env: Mapping[str, str]) -> Check:
    """``OTEL_PROPAGATORS`` names installed propagators (an unknown one makes
    ``import opentelemetry.propagate`` raise in the app), and baggage travels: budgets and tags
    reach downstream services in it."""
    raw = env.get("OTEL_PROPAGATORS")
    if not raw:
        return Check("ok", "propagators", "tracecontext, baggage (the default)")
    available = {ep.name for ep in _entry_points("opentelemetry_propagator")}
    names: list[str] = []
    for part in raw.split(","):
        name = part.strip()
        if name.lower() == "none":
            names = []
            break
        if name not in available:
            return Check(
                "problem",
                "propagators",
                f"OTEL_PROPAGATORS={raw!r}: no installed propagator is called {name!r}"
                f" (installed: {', '.join(sorted(available))}); the app would fail at start"
                f' with "Propagator {name} not found"',
                "set OTEL_PROPAGATORS to installed names, e.g. tracecontext,baggage",
            )
        names.append(name)
    if "baggage" not in names:
        return Check(
            "warn",
            "propagators",
            f"OTEL_PROPAGATORS={raw!r} leaves out baggage: budgets and tags stop at this process",
            f"OTEL_PROPAGATORS={','.join([*names, 'baggage'])}",
        )
    return Check("ok", "propagators", ", ".join(names))


# -- the ledger, the records, the prices ----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SQLiteFile:
    """What a read-only look at a SQLite file found."""

    path: Path
    exists: bool
    tables: frozenset[str] = frozenset()
    latency_ms: float = 0.0


def inspect_sqlite(path: Path) -> SQLiteFile:
    """Look at a SQLite file without creating or changing anything; ``ValueError`` (one line)
    when it is not a usable SQLite file.

    A read-only connection to a WAL database creates its ``-wal`` and ``-shm`` files when they
    are missing, so those are only opened read-only when both exist (a database in use);
    otherwise the file is opened as immutable (nobody has it open, and nothing is written).
    """
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a SQLite file")
    if not path.exists():
        if not path.parent.is_dir():
            raise ValueError(f"the folder {path.parent} does not exist")
        return SQLiteFile(path, exists=False)
    try:
        with path.open("rb") as fh:
            header = fh.read(len(_SQLITE_HEADER))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    if header and header != _SQLITE_HEADER:
        raise ValueError(f"{path} is not a SQLite database")
    live = Path(f"{path}-wal").exists() and Path(f"{path}-shm").exists()
    uri = path.resolve().as_uri() + ("?mode=ro" if live else "?mode=ro&immutable=1")
    start = time.perf_counter()
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=2.0)
        try:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise ValueError(f"{path}: {exc}") from None
    elapsed = (time.perf_counter() - start) * 1000
    return SQLiteFile(path, True, frozenset(str(r[0]) for r in rows), elapsed)


def _writable(found: SQLiteFile) -> str | None:
    """Why the processes could not write the file (None: they can)."""
    if found.exists and not os.access(found.path, os.W_OK):
        return f"{found.path} is read-only"
    if not os.access(found.path.parent, os.W_OK):
        return f"the folder {found.path.parent} is not writable (SQLite keeps its journal there)"
    return None


def _sqlite_check(what: str, path: Path, table: str, holds: str, extra: str = "") -> Check:
    try:
        found = inspect_sqlite(path)
    except ValueError as exc:
        fix = (
            f"mkdir -p {path.parent}"
            if "does not exist" in str(exc)
            else f"point {'COSTSPAN_LEDGER' if what == 'ledger' else 'COSTSPAN_RECORDS'} at a"
            " SQLite file of costspan's (or a path where it may create one)"
        )
        return Check("problem", what, str(exc), fix)
    blocked = _writable(found)
    if blocked is not None:
        return Check("problem", what, blocked, f"let the service's user write {path.parent}")
    if not found.exists:
        return Check("ok", what, f"{path} will be created on first use{extra}")
    state = f"holds {holds}" if table in found.tables else f"no {holds} yet (created on first use)"
    return Check(
        "ok", what, f"{path} reads in {found.latency_ms:.1f} ms (read-only), {state}{extra}"
    )


def ledger_check(settings: Settings) -> Check:
    """The shared ledger answers: SQLite read-only, Redis a ping (and how fast)."""
    from costspan.ledgers._open import LedgerSpec

    spec = settings.ledger
    mode = f"; fail mode {settings.fail_mode}"
    if not isinstance(spec, LedgerSpec):
        return Check("note", "ledger", f"{spec!r}, set in code{mode}")
    if spec.engine == "memory":
        return Check(
            "note",
            "ledger",
            "memory: budgets and limits hold per process",
            "COSTSPAN_LEDGER=sqlite:///... or redis://... to share them",
        )
    if spec.engine == "sqlite":
        return _sqlite_check("ledger", Path(spec.target), "scopes", "budget counters", mode)
    return _redis_check(spec, settings.fail_mode)


def _redis_check(spec: LedgerSpec, fail_mode: str) -> Check:
    """The Redis ledger usable now (TLS verified, user authenticated, scripts allowed, not a
    Cluster node behind a plain URL), how fast it answers, and settings that risk spend."""
    from costspan.ledgers import LedgerUnavailable
    from costspan.ledgers._redis_url import open_redis

    engine = open_redis(spec.target, dict(spec.options))
    try:
        check = getattr(engine, "check", None)
        warnings: list[str] = list(check() if check is not None else [])
        if check is None:
            engine.ping()
        rounds: list[float] = []
        for _ in range(5):
            start = time.perf_counter()
            engine.ping()
            rounds.append((time.perf_counter() - start) * 1000)
    except LedgerUnavailable as exc:
        return Check(
            "problem",
            "ledger",
            f"{spec} does not answer: {str(exc).partition(': ')[2] or exc} (fail mode {fail_mode})",
            "start Redis or correct COSTSPAN_LEDGER; a distant server may need ?timeout=0.5",
        )
    finally:
        engine.close()
    detail = f"{spec} answers in {statistics.median(rounds):.2f} ms; fail mode {fail_mode}"
    if warnings:
        return Check("warn", "ledger", f"{detail}; {'; '.join(warnings)}")
    return Check("ok", "ledger", detail)


def outbox_check(settings: Settings) -> Check:
    """Settlements a shared ledger could not take yet, waiting in the durable outbox (read-only):
    live ones are replayed by the next process that opens their ledger; dead ones were rejected
    by it and need a person."""
    from costspan import _config
    from costspan._money import usd
    from costspan.ledgers._outbox import summary

    path = _config.outbox_path(settings)
    if path is None:
        return Check(
            "note",
            "outbox",
            "off: settlements a shared ledger cannot take wait in memory only",
            "unset COSTSPAN_OUTBOX to keep them on disk",
        )
    try:
        ledgers = summary(path)
    except Exception as exc:
        return Check("problem", "outbox", f"{path} cannot be read: {exc}", "check the file")
    live = sum(n for _, n, _, _ in ledgers)
    dead = sum(d for _, _, d, _ in ledgers)
    waiting = ", ".join(
        f"{ledger}: {n} waiting (${usd(micros)})" for ledger, n, _, micros in ledgers if n
    )
    if dead:
        return Check(
            "problem",
            "outbox",
            f"{path}: {dead} settlement(s) the ledger rejected 20 times"
            + (f"; {waiting}" if live else ""),
            "see docs/troubleshooting.md (settlements wait in the outbox)",
        )
    if live:
        return Check("warn", "outbox", f"{path}: {waiting}; replayed when the ledger answers")
    return Check("ok", "outbox", f"{path}: nothing waiting")


def records_check(settings: Settings) -> Check:
    from costspan import _config

    store = _config.records_path(settings)
    if store is None:
        return Check(
            "note", "records", "in memory only", "COSTSPAN_RECORDS=/path/spend.db keeps them"
        )
    ledger = settings.ledger
    same = getattr(ledger, "engine", None) == "sqlite" and getattr(ledger, "target", None) == store
    if same:
        return Check("ok", "records", f"stored in {store} (the ledger's file)")
    return _sqlite_check("records", Path(store), "spend", "spend records")


_PROBE: Final = "gpt-4o-mini"


def prices_check(settings: Settings) -> Check:
    """The price data answers: a probe model priced offline, plus the overrides."""
    from costspan._pricing import Pricer
    from costspan._usage import TokenUsage

    pricer = Pricer(settings.prices)
    million = TokenUsage(1_000_000, 1_000_000)
    cost = pricer.price(million, models=(_PROBE,), provider="openai", when_ns=time.time_ns())
    overrides = f"; {len(settings.prices)} override(s) from COSTSPAN_PRICES"
    source = "your override" if cost and cost.source == "override" else (
        f"genai-prices {genai_prices_version()}"
    )  # fmt: skip
    if cost is None:
        return Check(
            "problem",
            "prices",
            f"no price for the probe model {_PROBE}: the price data is missing or broken",
            "pip install --force-reinstall genai-prices",
        )
    return Check(
        "ok",
        "prices",
        f"{_PROBE}: ${cost.input.normalize():f} in + ${cost.output.normalize():f} out per"
        f" million tokens ({source}){overrides}",
    )


def genai_prices_version() -> str:
    """genai-prices' version and the day it was installed (its data is as old as that)."""
    dist = metadata.distribution("genai-prices")
    record = next((f for f in dist.files or [] if f.name == "METADATA"), None)
    if record is None:
        return dist.version
    stamp = Path(str(record.locate())).stat().st_mtime
    return dist.version + time.strftime(", installed %Y-%m-%d", time.gmtime(stamp))


def summary(checks: Iterable[Check]) -> tuple[int, str]:
    """The exit code and the closing line."""
    counted: dict[Status, int] = {"problem": 0, "warn": 0}
    for check in checks:
        if check.status in counted:
            counted[check.status] += 1
    problems, warnings = counted["problem"], counted["warn"]
    if problems:
        return 1, f"{problems} problem(s), {warnings} warning(s): fix the problems above"
    if warnings:
        return 0, f"no problems; {warnings} warning(s) above"
    return 0, "no problems found"
