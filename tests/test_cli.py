"""The costspan command line, run as a user would run it: as a subprocess, output checked."""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from tests.processes import free_port

COSTSPAN = Path(sys.executable).with_name("costspan")


def run(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("COSTSPAN_")}
    base["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] = "openai"
    base["COLUMNS"] = "160"  # rich wraps tables to the terminal width
    return subprocess.run(
        [str(COSTSPAN), *args],
        env={**base, **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(name="state")
def _state(tmp_path: Path) -> dict[str, str]:
    """A home for the CLI's own store, so tests never touch the user's."""
    return {"XDG_STATE_HOME": str(tmp_path)}


def test_demo_prints_spans_with_usage_and_an_error(state: dict[str, str]) -> None:
    """`costspan demo` runs the app and prints one line per call, usage included: a cached
    prompt, a stream with reasoning, an unpriced model, a server error, then a refusal, a
    downgrade, a clamp and a soft budget's warning."""
    result = run("demo", env=state)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    rows = [line for line in lines if line.startswith(("chat ", "embeddings "))]
    assert [row.split()[1] for row in rows] == [
        "gpt-4o-mini",
        "gpt-4o-mini",
        "gpt-4o-mini",
        "o4-mini",
        "gpt-5",
        "text-embedding-3-small",
        "acme-support-7b",
        "o3",
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4o",
        "gpt-4o-mini",
    ]
    assert "in 13  out 21" in rows[0]
    assert "$0.00001455" in rows[0]  # 13 x $0.15 + 21 x $0.60 per million tokens
    assert "(cached 1152)" in rows[2]  # the same long system prompt again
    assert "(cached" not in rows[1]
    assert "stream" in rows[3]
    assert "(reasoning 64)" in rows[3]
    assert "unpriced" in rows[6]
    assert "ERROR BadRequestError" in rows[7]
    assert "gen_ai.usage.input_tokens" in result.stdout
    total = next(line for line in lines if line.strip().startswith("total"))
    # The rejected and the refused call were not billed; the unpriced one is not $0.
    assert total.split()[1] == "10"
    assert total.endswith("(+ 1 unpriced)")
    assert "[budget: refuse by 'block $0.002', nothing sent]" in rows[8]
    assert "[budget: downgrade from gpt-4o]" in rows[9]
    assert "[budget: clamp to" in rows[10]
    assert "budget 'warn $0.001' passed 50% of its cap" in result.stderr  # a log record
    store = Path(state["XDG_STATE_HOME"]) / "costspan" / "spend.db"
    assert f"spend records written to {store}" in result.stdout
    assert store.is_file()


def test_report_after_demo_shows_where_the_money_went(state: dict[str, str]) -> None:
    """`costspan report --group-by feature,user.id` after the demo: a table, CSV and JSON
    that agree, biggest spender first."""
    assert run("demo", env=state).returncode == 0
    table = run("report", "--group-by", "feature,user.id", env=state)
    assert table.returncode == 0, table.stderr
    assert "spend by feature, user.id" in table.stdout
    assert "essays" in table.stdout
    assert "visitor-1" in table.stdout
    assert "total $0.004850" in table.stdout  # the demo's summary: $0.00484963
    csv_out = run("report", "--group-by", "feature,user.id", "--format", "csv", env=state)
    as_csv = list(csv.DictReader(io.StringIO(csv_out.stdout)))
    assert [(r["feature"], r["user.id"], r["calls"], r["unpriced_calls"]) for r in as_csv] == [
        ("essays", "demo-user", "3", "0"),
        ("museum-guide", "visitor-2", "1", "0"),
        ("museum-guide", "visitor-1", "4", "0"),
        ("search", "visitor-2", "1", "0"),
        ("support", "visitor-3", "1", "1"),
    ]
    as_json = json.loads(run("report", "--group-by", "model", "--format", "json", env=state).stdout)
    assert as_json["calls"] == 10
    assert Decimal(as_json["usd"]) == Decimal("0.00484963")
    exported = run("report", "--format", "jsonl", env=state)
    again = run("report", "--jsonl", "-", "--format", "json", stdin=exported.stdout)
    assert json.loads(again.stdout)["calls"] == 10  # an export reads back whole
    recent = run(
        "report", "--since", "1h", "--where", "feature=search", "--format", "json", env=state
    )
    assert json.loads(recent.stdout)["calls"] == 1


def test_report_reads_json_lines_from_stdin() -> None:
    """--jsonl - reads an export; bad input is one line and exit 1."""
    line = json.dumps(
        {"time": "2026-11-22T10:00:00+00:00", "operation": "chat", "provider": "openai",
         "request_model": "gpt-4o", "response_model": None, "tags": {"feature": "x"},
         "input_tokens": 10, "output_tokens": 5, "usd": "0.25"}
    )  # fmt: skip
    result = run("report", "--jsonl", "-", "--group-by", "feature", "--format", "csv", stdin=line)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].startswith("x,0.25,1,10,0,5,0,0,0")
    bad = run("report", "--jsonl", "-", stdin="{not json\n")
    assert bad.returncode == 1
    assert len(bad.stderr.strip().splitlines()) == 1
    assert "<stdin>, line 1: Expecting property name" in bad.stderr


def test_report_errors_are_one_line(state: dict[str, str]) -> None:
    """No store yet, a bad --since, a bad --where: one line on stderr, exit code 1."""
    missing = run("report", env=state)
    assert missing.returncode == 1
    assert "no spend store at" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    assert run("demo", env=state).returncode == 0
    since = run("report", "--since", "yesterday", env=state)
    assert since.returncode == 1
    assert "a duration like 90m" in since.stderr
    where = run("report", "--where", "feature", env=state)
    assert where.returncode == 1
    assert "write key=value" in where.stderr


def test_estimate_from_stdin_and_from_a_file(tmp_path: Path) -> None:
    """The offline projection, for a prompt on stdin or in a file."""
    result = run("estimate", "gpt-4o", "--max-output-tokens", "100", stdin="Hello there")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "gpt-4o: 9 input + up to 100 output tokens, at most $0.0010225"
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Summarise the Louvre.")
    from_file = run("estimate", "text-embedding-3-small", str(prompt), "--operation", "embeddings")
    assert "text-embedding-3-small: 7 input + up to 0 output tokens" in from_file.stdout
    unknown = run("estimate", "house-model", stdin="hi")
    assert "unpriced" in unknown.stdout
    empty = run("estimate", "gpt-4o", stdin="")
    assert empty.returncode == 1
    assert "the prompt is empty" in empty.stderr


def test_prices_shows_rates_and_their_source() -> None:
    """A known model's rates per million tokens and where they come from; an override; an
    unknown model is an error."""
    known = run("prices", "gpt-4o-mini")
    assert known.returncode == 0, known.stderr
    assert "$0.15" in known.stdout  # input
    assert "$0.6" in known.stdout  # output
    assert "$0.075" in known.stdout  # cached input
    assert "source: genai-prices" in known.stdout
    override = run(
        "prices", "house-model",
        env={"COSTSPAN_PRICES": '{"house-model": {"input_mtok": 1, "output_mtok": 4}}'},
    )  # fmt: skip
    assert "$4" in override.stdout
    assert "your price overrides" in override.stdout
    unknown = run("prices", "house-model")
    assert unknown.returncode == 1
    assert "no price for 'house-model'" in unknown.stderr


def test_doctor_reports_a_healthy_sqlite_set_up(tmp_path: Path) -> None:
    result = run("doctor", env={"COSTSPAN_LEDGER": f"sqlite:///{tmp_path / 'ledger.db'}"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok  settings" in result.stdout
    assert "ok  openai" in result.stdout
    assert "ok  ledger" in result.stdout
    assert "answers in" in result.stdout
    assert f"stored in {tmp_path / 'ledger.db'}" in result.stdout
    assert "genai-prices 0." in result.stdout


def test_doctor_finds_a_dead_ledger_and_bad_settings() -> None:
    result = run(
        "doctor",
        env={
            "COSTSPAN_LEDGER": f"redis://127.0.0.1:{free_port()}/0",
            "COSTSPAN_ON_UNPRICED": "explode",
        },
    )
    assert result.returncode == 1
    assert "!!  settings       COSTSPAN_ON_UNPRICED='explode'" in result.stdout
    # The bad variable does not hide the others: the Redis ledger was still tried.
    assert "!!  ledger         redis://127.0.0.1:" in result.stdout
    assert "does not answer" in result.stdout


def test_unknown_command_is_one_clear_error() -> None:
    """A mistyped command exits non-zero and names it."""
    result = run("demoo")
    assert result.returncode == 2
    assert "No such command 'demoo'" in result.stderr


def test_demo_metrics_port_in_use_is_one_line(state: dict[str, str]) -> None:
    """A taken --metrics-port is a one-line error and exit 1, before any traffic is sent."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run("demo", "--metrics-port", str(port), env=state)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: --metrics-port {port}: Address already in use"
    ]
    assert "chat gpt-4o-mini" not in result.stdout
    assert run("demo", "--rounds", "0", env=state).returncode == 2  # click's usage error
