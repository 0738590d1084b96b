"""report(): grouping, filtering, since, sorting, assert_under, CSV and JSON, over records made
by real calls and over a realistic set of recorded calls."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import openai
import pytest

import costspan
from costspan import SpendRecord
from costspan._report import parse_since
from tests.conftest import USER

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def _rec(minutes_ago: int, usd: str | None, model: str = "gpt-4o-mini", **tags: str) -> SpendRecord:
    return SpendRecord(
        time_ns=int((NOW - timedelta(minutes=minutes_ago)).timestamp() * 1e9),
        operation="chat",
        provider="openai",
        request_model=model,
        response_model=f"{model}-2024-07-18",
        tags=tags,
        input_tokens=100,
        cached_input_tokens=20,
        output_tokens=50,
        reasoning_tokens=10 if model.startswith("o") else 0,
        usd=None if usd is None else Decimal(usd),
    )


RECORDS = [
    _rec(5, "0.010", feature="search", **{"user.id": "alice"}),
    _rec(10, "0.020", feature="search", **{"user.id": "bob"}),
    _rec(15, "0.005", feature="chat", **{"user.id": "alice"}),
    _rec(20, "0.300", "o3", feature="agent", **{"user.id": "carol"}),
    _rec(25, None, "house-model", feature="chat", **{"user.id": "bob"}),
    _rec(300, "1.000", feature="search", **{"user.id": "alice"}),
    _rec(30, "0.001"),  # no tags at all
]


def test_group_by_tags_sorted_by_spend() -> None:
    """Rows per feature, biggest spender first, with token sums and unpriced calls apart."""
    report = costspan.report(group_by=["feature"], records=RECORDS)
    assert [(r.tags["feature"], r.usd, r.calls) for r in report] == [
        ("search", Decimal("1.030"), 3),
        ("agent", Decimal("0.300"), 1),
        ("chat", Decimal("0.005"), 2),
        ("(none)", Decimal("0.001"), 1),
    ]
    chat = report[2]
    assert chat.unpriced_calls == 1
    assert (chat.input_tokens, chat.cached_input_tokens, chat.output_tokens) == (200, 40, 100)
    assert report[1].reasoning_tokens == 10
    assert report.usd == Decimal("1.336")


def test_group_by_several_keys_and_record_fields() -> None:
    """Tags and fields (model, provider) combine; a comma-separated string works too."""
    report = costspan.report(group_by="feature,user.id", records=RECORDS)
    assert (report[0].tags, report[0].usd) == (
        {"feature": "search", "user.id": "alice"},
        Decimal("1.010"),
    )
    by_model = costspan.report(group_by=["model"], records=RECORDS)
    assert [r.tags["model"] for r in by_model][:2] == ["gpt-4o-mini-2024-07-18", "o3-2024-07-18"]


def test_since_and_where_filter() -> None:
    """since keeps recent records (duration, timedelta, datetime); where matches fields."""
    recent = costspan.report(group_by=["feature"], since=NOW - timedelta(hours=1), records=RECORDS)
    assert sum(r.calls for r in recent) == 6
    alice = costspan.report(where={"user.id": "alice"}, records=RECORDS)
    assert (alice[0].usd, alice[0].calls) == (Decimal("1.015"), 3)
    costly = costspan.report(where=lambda r: (r.usd or 0) > Decimal("0.1"), records=RECORDS)
    assert costly.calls == 2
    assert parse_since("90m", NOW) == NOW - timedelta(minutes=90)
    assert parse_since("2026-11-22T10:00:00+00:00", NOW) == datetime(2026, 11, 22, 10, tzinfo=UTC)
    with pytest.raises(ValueError, match="a duration like 90m"):
        parse_since("yesterday", NOW)


def test_assert_under_passes_and_fails_naming_the_spenders() -> None:
    """Under the cap: nothing; over it: an AssertionError that says who spent what."""
    report = costspan.report(group_by=["user.id"], records=RECORDS)
    report.assert_under(usd="0.05", feature="chat", **{"user.id": "alice"})
    with pytest.raises(AssertionError) as failed:
        report.assert_under(usd="0.50", feature="search")
    message = str(failed.value)
    assert message.startswith("feature=search: spent $1.030, not under $0.50 (3 call(s))")
    assert "user.id=alice: $1.010 in 2 call(s)" in message
    assert "user.id=bob: $0.020 in 1 call(s)" in message
    with pytest.raises(AssertionError, match="1 call\\(s\\) have no price"):
        report.assert_under(usd=10, feature="chat")


def test_csv_and_json_exports() -> None:
    """CSV has the group keys then the sums; JSON keeps exact decimal strings."""
    report = costspan.report(group_by=["feature"], records=RECORDS)
    rows = list(csv.DictReader(io.StringIO(report.to_csv())))
    assert rows[0]["feature"] == "search"
    assert rows[0]["usd"] == "1.030"
    assert rows[2]["unpriced_calls"] == "1"
    data = json.loads(report.to_json())
    assert data["usd"] == "1.336"
    assert data["rows"][1] == {
        "feature": "agent",
        "usd": "0.300",
        "calls": 1,
        "input_tokens": 100,
        "cached_input_tokens": 20,
        "output_tokens": 50,
        "reasoning_tokens": 10,
        "unpriced_calls": 0,
        "estimated_calls": 0,
    }


def test_records_round_trip_through_json_lines() -> None:
    """to_dict() lines read back as the same records (the CLI's --jsonl input)."""
    from costspan._records import read_jsonl

    lines = [json.dumps(r.to_dict()) for r in RECORDS]
    assert read_jsonl(lines) == RECORDS
    with pytest.raises(ValueError, match="line 2: not a costspan spend record"):
        read_jsonl([lines[0], '{"time": "x"}'])


@pytest.mark.usefixtures("instrumented")
def test_report_over_real_calls(client: openai.OpenAI) -> None:
    """The process's own calls, grouped by the tags their baggage carried."""
    for feature, user, n in (("search", "u-1", 2), ("chat", "u-2", 1)):
        with costspan.tags({"feature": feature, "user.id": user}):
            for _ in range(n):
                client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    report = costspan.report(group_by=["feature", "user.id"])
    assert [(r.tags["feature"], r.calls) for r in report] == [("search", 2), ("chat", 1)]
    report.assert_under(usd="0.01", feature="search")


def test_a_group_without_a_priced_call_has_no_amount() -> None:
    """Unknown is not zero: a group whose calls are all unpriced has usd None (null in JSON,
    an empty CSV cell); a mixed group keeps its priced sum; the totals count the unpriced."""
    report = costspan.report(group_by=["model"], records=RECORDS)
    house = next(r for r in report if r.tags["model"] == "house-model-2024-07-18")
    assert (house.usd, house.calls, house.unpriced_calls) == (None, 1, 1)
    assert report[-1] is house  # sorted after every priced group
    assert (report.usd, report.calls, report.unpriced_calls) == (Decimal("1.336"), 7, 1)
    data = json.loads(report.to_json())
    assert data["unpriced_calls"] == 1
    assert [r["usd"] for r in data["rows"] if r["model"].startswith("house")] == [None]
    rows = list(csv.DictReader(io.StringIO(report.to_csv())))
    assert [r["usd"] for r in rows if r["model"].startswith("house")] == [""]
    mixed = costspan.report(group_by=["feature"], records=RECORDS)
    chat = next(r for r in mixed if r.tags["feature"] == "chat")
    assert (chat.usd, chat.unpriced_calls) == (Decimal("0.005"), 1)
    only_unpriced = costspan.report(records=[RECORDS[4]])
    assert json.loads(only_unpriced.to_json())["usd"] is None
    with pytest.raises(AssertionError, match="model=house-model-2024-07-18: unpriced in 1"):
        only_unpriced.assert_under(usd=1)
