"""The costspan command line, run as a user would run it: as a subprocess, output checked."""

from __future__ import annotations

import csv
import io
import json
import socket
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest

from tests.cli import run


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
    # The demo's summary, exactly; the unpriced call is left out of it, and said to be.
    assert "total $0.00484963 in 10 call(s), excluding 1 unpriced call(s)" in table.stdout
    support = next(line for line in table.stdout.splitlines() if "support" in line)
    assert "unpriced" in support
    assert "$0.0" not in support  # unknown is not zero
    csv_out = run("report", "--group-by", "feature,user.id", "--format", "csv", env=state)
    as_csv = list(csv.DictReader(io.StringIO(csv_out.stdout)))
    assert [
        (
            r["feature"],
            r["user.id"],
            r["usd"] and Decimal(r["usd"]),
            r["calls"],
            r["unpriced_calls"],
        )
        for r in as_csv
    ] == [
        ("essays", "demo-user", Decimal("0.003202"), "3", "0"),
        ("museum-guide", "visitor-2", Decimal("0.0009225"), "1", "0"),
        ("museum-guide", "visitor-1", Decimal("0.00072505"), "4", "0"),
        ("search", "visitor-2", Decimal("0.00000008"), "1", "0"),
        ("support", "visitor-3", "", "1", "1"),  # unpriced: empty, never 0
    ]
    as_json = json.loads(run("report", "--group-by", "model", "--format", "json", env=state).stdout)
    assert as_json["calls"] == 10
    assert as_json["unpriced_calls"] == 1
    assert Decimal(as_json["usd"]) == Decimal("0.00484963")
    unpriced = [r for r in as_json["rows"] if r["model"] == "acme-support-7b"]
    assert [(r["usd"], r["unpriced_calls"]) for r in unpriced] == [(None, 1)]
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


def test_estimate_and_prices_agree_on_an_unknown_model() -> None:
    """A model with no price: `estimate` still counts the tokens, and both commands exit 1
    with the same one-line error naming COSTSPAN_PRICES; with a price, both exit 0."""
    estimate = run("estimate", "house-model", "--max-output-tokens", "10", stdin="hi")
    prices = run("prices", "house-model")
    assert (estimate.returncode, prices.returncode) == (1, 1)
    assert estimate.stdout.strip() == "house-model: 12 input + up to 10 output tokens, unpriced"
    error = "Error: no price for 'house-model' (openai); add one with COSTSPAN_PRICES"
    assert estimate.stderr.strip().splitlines() == [error]
    assert prices.stderr.strip().splitlines() == [error]
    priced = {"COSTSPAN_PRICES": '{"house-model": {"input_mtok": 1, "output_mtok": 4}}'}
    estimate = run("estimate", "house-model", "--max-output-tokens", "10", stdin="hi", env=priced)
    assert estimate.returncode == 0, estimate.stderr
    assert estimate.stdout.strip().endswith("at most $0.000052")  # 12 x $1 + 10 x $4 per M
    assert run("prices", "house-model", env=priced).returncode == 0


def test_demo_without_openai_says_what_to_install(state: dict[str, str]) -> None:
    """`costspan demo` in an environment without openai (hidden from the child process, as if
    never installed): one line naming the install command, exit 1, no traceback."""
    result = run("demo", env=state, hide="openai")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: costspan demo runs an openai app, and openai is not installed:"
        " pip install openai (or pip install 'costspan[demo]')"
    ]
    # The same child without the hiding imports openai: the hiding, not the set-up, did it.
    probe = run("demo", "--rounds", "0", env=state)  # a usage error, after the import check
    assert "openai is not installed" not in probe.stderr


def _spend_store(path: Path) -> None:
    """A real spend store, written by costspan itself."""
    from costspan._records import SpendRecord, Store

    store = Store(path)
    store.add(SpendRecord(1, "chat", "openai", "gpt-4o", None, {"feature": "x"}, usd=None))
    store.flush()
    assert path.is_file()


def test_report_on_files_that_are_not_a_store(tmp_path: Path) -> None:
    """--store pointed at a text file, a folder, another app's SQLite database, a missing
    folder: one line each, exit 1, and none of those files is changed."""
    notes = tmp_path / "notes.txt"
    notes.write_text("shopping: milk, eggs\n")
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE things (a)")
    conn.close()
    before = {p.name: p.read_bytes() for p in (notes, other)}
    cases = {
        str(notes): f"Error: {notes} is not a SQLite database",
        str(tmp_path): f"Error: {tmp_path} is a folder, not a SQLite file",
        str(other): f"Error: {other} is a SQLite database without costspan spend records",
        str(tmp_path / "nope" / "s.db"): (
            f"Error: no spend store at {tmp_path / 'nope' / 's.db'}:"
            f" the folder {tmp_path / 'nope'} does not exist"
        ),
    }
    for store, error in cases.items():
        result = run("report", "--store", store)
        assert result.returncode == 1, store
        assert result.stderr.strip().splitlines() == [error]
    assert {p.name: p.read_bytes() for p in (notes, other)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "other.db"]
    good = tmp_path / "spend.db"
    _spend_store(good)
    read = run("report", "--store", str(good), "--format", "json")
    assert read.returncode == 0, read.stderr
    assert json.loads(read.stdout)["rows"][0]["usd"] is None


def test_report_on_an_unreadable_store(tmp_path: Path) -> None:
    """A store the user may not read: one line naming the file, exit 1. (Root reads any file,
    so as root the command runs without the capabilities that let it.)"""
    import os

    store = tmp_path / "spend.db"
    _spend_store(store)
    store.chmod(0)
    prefix = ()
    if os.geteuid() == 0:
        prefix = ("setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search")
    result = run("report", "--store", str(store), prefix=prefix)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"Error: cannot read {store}: Permission denied"]


def test_report_json_lines_with_bad_lines(tmp_path: Path) -> None:
    """Bad JSON-lines input, line by line: a list, a record without its fields, bytes that are
    not UTF-8, an amount that is not a cost. One line each, exit 1."""
    good = json.dumps(
        {"time": "2026-11-22T10:00:00+00:00", "operation": "chat", "provider": "openai",
         "usd": "0.5"}
    )  # fmt: skip
    cases = {
        f"{good}\n[1, 2]\n": "Error: <stdin>, line 2: not a costspan spend record",
        '{"usd": "1"}\n': "Error: <stdin>, line 1: not a costspan spend record: 'time'",
        good.replace('"0.5"', '"NaN"'): "Error: <stdin>: a record has usd=NaN, not a cost",
        good.replace('"0.5"', '"-2"'): "Error: <stdin>: a record has usd=-2, not a cost",
    }
    for text, error in cases.items():
        result = run("report", "--jsonl", "-", stdin=text)
        assert result.returncode == 1, text
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith(error), (text, line)
    binary = tmp_path / "export.jsonl"
    binary.write_bytes(b"\xff\xfe{}\n")
    result = run("report", "--jsonl", str(binary))
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert "can't decode byte 0xff" in line


def test_prices_never_cut_a_price() -> None:
    """`costspan prices` at 80 columns, 16 columns and piped with COLUMNS unset: each rate is
    printed whole (a table where it fits, plain lines where it does not)."""
    for columns in (80, 16, None):
        result = run("prices", "gpt-4o-mini", columns=columns)
        assert result.returncode == 0, result.stderr
        assert "…" not in result.stdout
        for rate in ("$0.15", "$0.6", "$0.075"):
            assert rate in result.stdout.split(), (columns, result.stdout)
