"""The ``costspan`` command line: demo, report, estimate, prices, doctor.

Built on click (commands, options, errors) and rich (tables, progress). Every error is one line
on stderr and a non-zero exit code; nothing here prints a traceback for bad input.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from costspan._version import __version__

F = TypeVar("F", bound=Callable[..., Any])

_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False)


def default_store() -> Path:
    """Where the CLI keeps and reads spend records when nothing else is configured."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "costspan" / "spend.db"


def _store_path(store: str | None) -> Path:
    """--store, else COSTSPAN_RECORDS or the SQLite ledger, else the default store."""
    if store:
        return Path(store).expanduser()
    from costspan import _config, _runtime

    configured = _config.records_path(_runtime.settings())
    return Path(configured) if configured else default_store()


def _one_line_errors(fn: F) -> F:
    """Turn the errors bad input causes into click's one-line error and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from costspan.ledgers import LedgerUnavailable

        try:
            return fn(*args, **kwargs)
        except (ValueError, OSError, LedgerUnavailable) as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="costspan")
def main() -> None:
    """LLM spend made visible and bounded with OpenTelemetry."""


# -- demo -----------------------------------------------------------------------------------------
@main.command()
@click.option("--store", help="SQLite file for the demo's spend records [default: the store]")
@click.option(
    "--otlp",
    is_flag=True,
    help="also export spans and metrics over OTLP (OTEL_EXPORTER_OTLP_ENDPOINT, _PROTOCOL...)",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    help="serve Prometheus metrics on 127.0.0.1:PORT, and keep serving until Ctrl-C",
)
@click.option(
    "--rounds",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="send the traffic N times",
)
@click.option(
    "--interval",
    type=click.FloatRange(0),
    default=2.0,
    show_default=True,
    help="seconds between rounds",
)
@_one_line_errors
def demo(
    store: str | None, otlp: bool, metrics_port: int | None, rounds: int, interval: float
) -> None:
    """Run an instrumented app against a local OpenAI-compatible server and print its spans."""
    from costspan import _demo

    path = _store_path(store)
    run = functools.partial(
        _demo.run,
        sys.stdout,
        records=path,
        otlp=otlp,
        metrics_port=metrics_port,
        rounds=rounds,
        interval=interval,
    )
    if metrics_port is not None:  # it serves until stopped: no spinner for that
        code = run()
    else:
        with _err.status("running the demo app against the local server ...", spinner="dots"):
            code = run()
    _out.print(
        f"\nspend records written to {path}; see them with:"
        " costspan report --group-by feature,user.id"
    )
    sys.exit(code)


# -- report ---------------------------------------------------------------------------------------
@main.command()
@click.option(
    "--store",
    help="SQLite store to read [default: COSTSPAN_RECORDS, the SQLite ledger, or the CLI's store]",
)
@click.option(
    "--jsonl", type=click.File("r"), help="read records from a JSON-lines export ('-': stdin)"
)
@click.option(
    "--group-by",
    "group_by",
    default="",
    help="comma-separated keys: tags (feature, user.id...) or model, provider, operation",
)
@click.option("--since", help="only records since then: 90m, 24h, 7d or an ISO 8601 time")
@click.option("--where", "where", multiple=True, help="key=value filter (repeatable)")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json", "jsonl"]),
    default="table",
    show_default=True,
)
@_one_line_errors
def report(
    store: str | None,
    jsonl: Any,
    group_by: str,
    since: str | None,
    where: Sequence[str],
    fmt: str,
) -> None:
    """Where the money went: spend grouped by tags or models, biggest first."""
    from costspan import _records
    from costspan._report import report as build

    filters: dict[str, str] = {}
    for item in where:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--where {item!r}: write key=value")
        filters[key] = value
    if jsonl is not None:
        records = _records.read_jsonl(jsonl, getattr(jsonl, "name", "input"))
        source = f"JSON lines {getattr(jsonl, 'name', '-')}"
    else:
        path = _store_path(store)
        if not path.exists():
            raise ValueError(
                f"no spend store at {path}: run `costspan demo`, or pass --store or --jsonl"
            )
        with _err.status(f"reading {path} ...", spinner="dots"):
            records = _records.Store(path).read()
        source = str(path)
    result = build(group_by, since=since, where=filters or None, records=records)
    if fmt == "csv":
        click.echo(result.to_csv(), nl=False)
        return
    if fmt == "json":
        click.echo(result.to_json())
        return
    if fmt == "jsonl":  # the records themselves, for --jsonl elsewhere
        click.echo(result.to_jsonl(), nl=False)
        return
    table = Table(title=f"spend by {', '.join(result.group_by) or 'everything'} ({source})")
    for key in result.group_by:
        table.add_column(key)
    for name in ("usd", "calls", "input", "cached", "output", "reasoning", "unpriced"):
        table.add_column(name, justify="right")
    for row in result:
        table.add_row(
            *(row.tags[k] for k in result.group_by),
            f"${row.usd:.6f}",
            str(row.calls),
            str(row.input_tokens),
            str(row.cached_input_tokens),
            str(row.output_tokens),
            str(row.reasoning_tokens),
            str(row.unpriced_calls),
        )
    _out.print(table)
    _out.print(f"total ${result.usd:.6f} in {result.calls} call(s)")


# -- estimate -------------------------------------------------------------------------------------
@main.command()
@click.argument("model")
@click.argument("prompt", type=click.File("r"), default="-")
@click.option(
    "--max-output-tokens",
    type=click.IntRange(min=0),
    help="the request's output cap [default: 1024]",
)
@click.option(
    "--operation",
    type=click.Choice(["chat", "responses", "text_completion", "embeddings"]),
    default="chat",
    show_default=True,
)
@click.option("--provider", default="openai", show_default=True)
@_one_line_errors
def estimate(
    model: str, prompt: Any, max_output_tokens: int | None, operation: str, provider: str
) -> None:
    """The worst-case cost of sending PROMPT (a file, or stdin) to MODEL, counted offline."""
    from costspan._estimate import estimate as project

    text = prompt.read()
    if not text.strip():
        raise ValueError("the prompt is empty")
    result = project(
        model, text, max_output_tokens=max_output_tokens, provider=provider, operation=operation
    )
    cost = "unpriced (no known price for this model)" if result.usd is None else _money(result.usd)
    _out.print(
        f"{model}: {result.input_tokens} input + up to {result.output_tokens} output tokens,"
        f" at most {cost}"
    )


# -- prices ---------------------------------------------------------------------------------------
@main.command()
@click.argument("model")
@click.option("--provider", default="openai", show_default=True)
@_one_line_errors
def prices(model: str, provider: str) -> None:
    """What MODEL costs per million tokens, and where the price comes from."""
    from costspan._runtime import runtime
    from costspan._usage import TokenUsage

    pricer = runtime().pricer
    now = time.time_ns()

    def per_million(usage: TokenUsage) -> Any:
        return pricer.price(usage, models=(model,), provider=provider, when_ns=now)

    inp = per_million(TokenUsage(1_000_000, 0))
    if inp is None:
        raise ValueError(f"no price for {model!r} ({provider}); add one with COSTSPAN_PRICES")
    out = per_million(TokenUsage(0, 1_000_000))
    cached = per_million(TokenUsage(1_000_000, 0, cache_read_tokens=1_000_000))
    table = Table(
        title=f"{inp.model or model} ({inp.provider or provider}), USD per million tokens"
    )
    table.add_column("tokens")
    table.add_column("USD", justify="right")
    table.add_row("input", _money(inp.total))
    table.add_row("output", _money(out.total if out else None))
    table.add_row("cached input", _money(cached.total if cached else None))
    _out.print(table)
    _out.print(f"source: {_source(inp.source)}")


def _money(value: Decimal | None) -> str:
    return "-" if value is None else f"${value.normalize():f}"


def _source(source: str) -> str:
    if source == "override":
        return "your price overrides (COSTSPAN_PRICES / configure(prices=...))"
    return f"genai-prices {_genai_prices()} (bundled with the package, used offline)"


def _genai_prices() -> str:
    from importlib import metadata

    dist = metadata.distribution("genai-prices")
    installed = ""
    files = dist.files or []
    record = next((f for f in files if f.name == "METADATA"), None)
    if record is not None:
        stamp = Path(str(record.locate())).stat().st_mtime
        installed = time.strftime(", installed %Y-%m-%d", time.gmtime(stamp))
    return f"{dist.version}{installed}"


# -- doctor ---------------------------------------------------------------------------------------
@main.command()
def doctor() -> None:
    """Check the installation: instrumentation, export pipeline, ledger, prices, settings."""
    problems = 0

    def line(ok: bool | None, what: str, detail: str) -> None:
        nonlocal problems
        mark = {True: "[green]ok[/]", False: "[red]!![/]", None: "[yellow]--[/]"}[ok]
        problems += ok is False
        _out.print(f"{mark}  {what:<14} {detail}")

    from costspan import _config

    settings, errors = _config.checked_env()
    for error in errors:  # each bad variable; the valid ones are still checked below
        line(False, "settings", str(error))
    if not errors:
        line(True, "settings", "every COSTSPAN_* variable is valid")
    line(*_check_openai())
    line(*_check_launcher())
    line(*_check_ledger(settings))
    line(True, "prices", f"genai-prices {_genai_prices()}; {len(settings.prices)} override(s)")
    store = _config.records_path(settings)
    line(
        None if store is None else True,
        "records",
        f"stored in {store}" if store else "in memory only (set COSTSPAN_RECORDS to keep them)",
    )
    sys.exit(1 if problems else 0)


def _check_openai() -> tuple[bool | None, str, str]:
    from importlib import metadata

    try:
        version = metadata.version("openai")
    except metadata.PackageNotFoundError:
        return False, "openai", "not installed: nothing to instrument"
    from costspan._instrumentor import OpenAIInstrumentor

    missing = OpenAIInstrumentor().instrumentation_dependencies()
    return True, "openai", f"{version} (instrumentor costspan_openai wants {', '.join(missing)})"


def _check_launcher() -> tuple[bool | None, str, str]:
    from importlib.metadata import entry_points

    configurators = sorted(ep.name for ep in entry_points(group="opentelemetry_configurator"))
    chosen = os.environ.get("OTEL_PYTHON_CONFIGURATOR")
    instrumentors = {ep.name for ep in entry_points(group="opentelemetry_instrumentor")}
    if "costspan_openai" not in instrumentors:
        return (
            False,
            "auto-launch",
            "the costspan_openai entry point is missing: reinstall costspan",
        )
    if configurators == ["costspan"] or chosen == "costspan":
        detail = "opentelemetry-instrument puts CostSpanProcessor in front of the exporter"
        if "openai" in instrumentors and "openai" not in os.environ.get(
            "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", ""
        ):
            detail += (
                "; another 'openai' instrumentor is installed too:"
                " set OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=openai"
            )
            return None, "auto-launch", detail
        return True, "auto-launch", detail
    return (
        False,
        "auto-launch",
        (
            f"configurators {', '.join(configurators)} are installed:"
            " set OTEL_PYTHON_CONFIGURATOR=costspan "
            "or spans of other instrumentations leave unpriced"
        ),
    )


def _check_ledger(settings: Any) -> tuple[bool | None, str, str]:
    from costspan.ledgers import FailSafeLedger, LedgerUnavailable
    from costspan.ledgers._open import LedgerSpec

    spec = settings.ledger
    if not isinstance(spec, LedgerSpec) or spec.engine == "memory":
        return None, "ledger", "memory: budgets are per process (set COSTSPAN_LEDGER to share them)"
    ledger = spec.open("closed")
    assert isinstance(ledger, FailSafeLedger)
    start = time.perf_counter()
    try:
        ledger.engine.ping()
    except LedgerUnavailable as exc:
        return False, "ledger", f"{spec} does not answer: {exc} (fail mode {settings.fail_mode})"
    finally:
        ledger.engine.close()
    elapsed = (time.perf_counter() - start) * 1000
    return True, "ledger", f"{spec} answers in {elapsed:.1f} ms; fail mode {settings.fail_mode}"


if __name__ == "__main__":
    main()
