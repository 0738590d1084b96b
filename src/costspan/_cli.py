"""The ``costspan`` command line: demo, report, estimate, prices, doctor.

Built on click (commands, options, errors) and rich (tables, progress). Every error is one line
on stderr and a non-zero exit code; nothing here prints a traceback for bad input.
"""

from __future__ import annotations

import functools
import importlib
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, TypeVar

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

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
        except (ValueError, OSError, LedgerUnavailable, sqlite3.Error) as exc:
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
    try:
        importlib.import_module("openai")  # the demo's app is openai code
    except ImportError:
        raise ValueError(
            "costspan demo runs an openai app, and openai is not installed:"
            " pip install openai (or pip install 'costspan[demo]')"
        ) from None
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
    from costspan import _records, _tables
    from costspan._report import report as build

    filters: dict[str, str] = {}
    for item in where:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--where {item!r}: write key=value")
        filters[key] = value
    if jsonl is not None:
        records = _records.read_jsonl(jsonl, getattr(jsonl, "name", "input"))
        for record in records:  # a cost is a finite, non-negative amount or unknown (null)
            if record.usd is not None and not (record.usd.is_finite() and record.usd >= 0):
                raise ValueError(f"{jsonl.name}: a record has usd={record.usd}, not a cost")
        source = f"JSON lines {getattr(jsonl, 'name', '-')}"
    else:
        path = _store_path(store)
        _check_store(path)
        with _err.status(f"reading {path} ...", spinner="dots"):
            try:
                records = _records.Store(path).read()
            except sqlite3.Error as exc:
                raise ValueError(f"cannot read spend records from {path}: {exc}") from None
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
    title = f"spend by {', '.join(result.group_by) or 'everything'} ({source})"
    for part in _tables.render(result, title, _out.width):
        if isinstance(part, str):
            click.echo(part)  # wrapped between words already; never cut
        else:
            _out.print(part, soft_wrap=False)


def _check_store(path: Path) -> None:
    """A one-line error, before anything opens it for writing, unless ``path`` is a SQLite
    file with spend records in it."""
    from costspan._doctor import inspect_sqlite

    found = None if not path.exists() else inspect_sqlite(path)  # ValueError: not SQLite...
    if found is None or not found.exists:
        if path.parent.is_dir() or path.parent == default_store().parent:
            raise ValueError(
                f"no spend store at {path}: run `costspan demo`, or pass --store or --jsonl"
            )
        raise ValueError(f"no spend store at {path}: the folder {path.parent} does not exist")
    if "spend" not in found.tables:
        raise ValueError(f"{path} is a SQLite database without costspan spend records")


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
    tokens = f"{model}: {result.input_tokens} input + up to {result.output_tokens} output tokens"
    if result.usd is None:  # the same answer, and exit status, as `costspan prices MODEL`
        _out.print(f"{tokens}, unpriced")
        raise ValueError(_no_price(model, provider))
    _out.print(f"{tokens}, at most {_money(result.usd)}")


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
        raise ValueError(_no_price(model, provider))
    out = per_million(TokenUsage(0, 1_000_000))
    cached = per_million(TokenUsage(1_000_000, 0, cache_read_tokens=1_000_000))
    title = f"{inp.model or model} ({inp.provider or provider}), USD per million tokens"
    rates = [
        ("input", _money(inp.total)),
        ("output", _money(out.total if out else None)),
        ("cached input", _money(cached.total if cached else None)),
    ]
    usd_width = max(len("USD"), *(len(usd) for _, usd in rates))
    # A table only where it fits whole (borders and padding: 7 columns): rich would crop a
    # price to fit a narrower one; then plain lines, which a terminal wraps but never cuts.
    if len("cached input") + usd_width + 7 <= _out.width:
        table = Table(title=title)
        table.add_column("tokens")
        table.add_column("USD", justify="right", no_wrap=True, min_width=usd_width)
        for name, usd in rates:
            table.add_row(name, usd)
        _out.print(table)
    else:
        click.echo(title)
        for name, usd in rates:
            click.echo(f"{name}: {usd}")
    click.echo(f"source: {_source(inp.source)}")


def _money(value: Decimal | None) -> str:
    return "-" if value is None else f"${value.normalize():f}"


def _no_price(model: str, provider: str) -> str:
    return f"no price for {model!r} ({provider}); add one with COSTSPAN_PRICES"


def _source(source: str) -> str:
    from costspan._doctor import genai_prices_version

    if source == "override":
        return "your price overrides (COSTSPAN_PRICES / configure(prices=...))"
    return f"genai-prices {genai_prices_version()} (bundled with the package, used offline)"


# -- doctor ---------------------------------------------------------------------------------------
_MARKS: Final = {"ok": ("ok", "green"), "note": ("--", "yellow"), "warn": ("~~", "yellow"),
                 "problem": ("!!", "red")}  # fmt: skip


@main.command()
def doctor() -> None:
    """Check a deployment, read-only: settings, openai and who instruments it, what
    opentelemetry-instrument would load, the ledger, prices, records. Exit 1 on a problem."""
    from costspan import _doctor

    checks = _doctor.run()
    for check in checks:
        mark, style = _MARKS[check.status]
        # Text, not markup: a detail such as pip install 'costspan[redis]' prints as written.
        _out.print(Text.assemble((mark, style), f"  {check.what:<14} {check.detail}"))
        if check.fix:
            label = "hint" if check.status == "note" else "fix"
            _out.print(Text(f"{'':<19}{label}: {check.fix}"))
    code, closing = _doctor.summary(checks)
    _out.print(Text(closing))
    sys.exit(code)


if __name__ == "__main__":
    main()
