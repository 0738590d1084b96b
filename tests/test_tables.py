"""`costspan report`'s table at every width a person meets: amounts and counts are never cut,
an unpriced group reads as unpriced, and a group mixing both says what its sum leaves out.

Each case runs the command as a subprocess and reads the numbers back out of what it printed.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.cli import run

LONG = "a-feature-name-much-longer-than-any-terminal-column-would-ever-give-it-room-for"
AMOUNT = re.compile(r"\$(\d+\.\d+)")


def _record(feature: str, user: str, usd: str | None, model: str = "gpt-4o") -> str:
    return json.dumps(
        {"time": "2026-11-22T10:00:00+00:00", "operation": "chat", "provider": "openai",
         "request_model": model, "response_model": None,
         "tags": {"feature": feature, "user.id": user},
         "input_tokens": 123456789, "cached_input_tokens": 1024, "output_tokens": 98765,
         "reasoning_tokens": 64, "usd": usd}
    )  # fmt: skip


@pytest.fixture(name="export")
def _export(tmp_path: Path) -> Path:
    """Spend records with what breaks tables: tiny and large amounts, long tag values, an
    unpriced group and a group with both priced and unpriced calls."""
    lines = [
        _record("search", "alice", "0.00000008"),
        _record("search", "alice", "0.00320200"),
        _record(LONG, "user-with-a-rather-long-identifier-0123456789", "12345.678901234"),
        _record("support", "bob", None, "house-model"),
        _record("mixed", "carol", "0.5"),
        _record("mixed", "carol", None, "house-model"),
        _record("mixed", "carol", None, "house-model"),
    ]
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _expected(export: Path) -> tuple[Counter[Decimal], dict[str, Any]]:
    """The exact amounts the table must show (each group's and the total), from --format json."""
    result = run("report", "--jsonl", str(export), "--group-by", "feature,user.id", "--format",
                 "json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    amounts = Counter(Decimal(r["usd"]) for r in data["rows"] if r["usd"] is not None)
    amounts[Decimal(data["usd"])] += 1
    return amounts, data


@pytest.mark.parametrize("columns", [200, 80, 60, 40, None])
def test_no_amount_is_cut_at_any_width(export: Path, columns: int | None) -> None:
    """At 200, 80, 60 and 40 columns, and with COLUMNS unset and output piped: every amount
    printed is a group's or the total's exact amount, nothing is elided, and the unpriced and
    mixed groups say so."""
    amounts, data = _expected(export)
    result = run("report", "--jsonl", str(export), "--group-by", "feature,user.id", columns=columns)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "…" not in out  # rich's mark of a cropped cell
    printed = Counter(Decimal(m) for m in AMOUNT.findall(out))
    assert printed == amounts
    assert "unpriced" in out
    assert "excl. 2 unpriced" in out  # the mixed group: $0.5 without its two unpriced calls
    assert data["unpriced_calls"] == 3
    total = f"total ${Decimal(data['usd']):.9f} in 7 call(s), excluding 3 unpriced call(s)"
    assert " ".join(out.split()).count(total) == 1
    width = columns or 80  # piped with COLUMNS unset: rich's 80
    for line in out.splitlines():
        # A line may pass the width only when it is one word that cannot fit anyway.
        assert len(line) <= width or " " not in line.strip(), line
    # Every group is shown; a group value may fold over lines, but all of it is there.
    cells = [line.split("│")[1].strip() for line in out.splitlines() if line.startswith("│")]
    shown = "".join(cells) if cells else out
    for value in ("search", "support", "mixed", LONG):
        assert value in shown


def test_unset_columns_match_an_80_column_terminal(export: Path) -> None:
    """Piped with COLUMNS unset, the report is laid out for 80 columns."""
    unset = run("report", "--jsonl", str(export), "--group-by", "feature", columns=None)
    eighty = run("report", "--jsonl", str(export), "--group-by", "feature", columns=80)
    assert unset.stdout == eighty.stdout


def test_columns_go_in_order_of_least_use(export: Path) -> None:
    """Wide: every column. Narrower: reasoning goes first, then cached, then the input and
    output tokens, and a note says what was left out; very narrow: one block per group."""
    args = ("report", "--jsonl", str(export), "--group-by", "model")

    def header(columns: int) -> list[str]:
        out = run(*args, columns=columns).stdout
        line = next(line for line in out.splitlines() if "usd" in line and "calls" in line)
        return line.replace("┃", " ").split()

    assert header(200) == ["model", "usd", "calls", "input", "cached", "output", "reasoning"]
    assert header(80) == ["model", "usd", "calls", "input", "cached", "output"]
    assert header(70) == ["model", "usd", "calls", "input", "output"]
    assert header(50) == ["model", "usd", "calls"]
    narrow = run(*args, columns=80).stdout
    assert "(reasoning tokens left out to fit; --format csv has them)" in narrow
    blocks = run(*args, columns=30).stdout.splitlines()
    assert "  reasoning  192" in blocks  # three gpt-4o calls of 64 reasoning tokens
    assert "  usd        unpriced" in blocks  # house-model
    assert "             excl. 0 unpriced" not in blocks


def test_an_unpriced_group_is_not_zero_in_any_format(export: Path) -> None:
    """The unpriced group: `unpriced` in the table, null in JSON, an empty cell in CSV; the
    mixed group keeps its priced sum in every format."""
    args = ("report", "--jsonl", str(export), "--group-by", "feature")
    rows = {r["feature"]: r for r in json.loads(run(*args, "--format", "json").stdout)["rows"]}
    assert (rows["support"]["usd"], rows["support"]["unpriced_calls"]) == (None, 1)
    assert (Decimal(rows["mixed"]["usd"]), rows["mixed"]["unpriced_calls"]) == (Decimal("0.5"), 2)
    csv_lines = run(*args, "--format", "csv").stdout.splitlines()
    support = next(line for line in csv_lines if line.startswith("support,"))
    assert support.split(",")[1] == ""
    table = run(*args).stdout.splitlines()
    support_row = next(line for line in table if "support" in line)
    assert "unpriced" in support_row
    assert "$" not in support_row
