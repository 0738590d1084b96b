"""Where did the money go: spend records grouped into rows, filtered, asserted on, exported.

:func:`report` reads this process's records, or - when a durable store is configured - every
process's records from it, and groups them by tags (baggage keys such as ``feature`` or
``user.id``) or record fields (``model``, ``provider``, ``operation``...). Rows are sorted by
spend. Money is ``Decimal``; unpriced calls are counted apart, never as $0: a group none of whose
calls has a price has no amount (``usd`` is ``None``, ``null`` in JSON, empty in CSV), and a
group that mixes both has the priced calls' sum next to its count of unpriced calls.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, overload

from costspan._records import SpendRecord
from costspan._runtime import runtime

NONE: Final = "(none)"
"""The group value of records that lack a grouping key."""
_DURATION: Final = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

Where = Mapping[str, str] | Callable[[SpendRecord], bool] | None


@dataclass(frozen=True, slots=True)
class ReportRow:
    """One group's spend. ``usd`` is the sum of its priced calls, or ``None`` when none of its
    calls has a price (unknown is not $0); ``unpriced_calls`` says how many calls it leaves out."""

    tags: Mapping[str, str]
    usd: Decimal | None
    calls: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    reasoning_tokens: int
    unpriced_calls: int
    estimated_calls: int

    def to_dict(self) -> dict[str, Any]:
        return {
            **{f"tag:{k}" if k in _ROW_FIELDS else k: v for k, v in self.tags.items()},
            # positional: 0.00000008, never 8E-8; no priced call: null, never "0"
            "usd": None if self.usd is None else f"{self.usd:f}",
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "output_tokens": self.output_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "unpriced_calls": self.unpriced_calls,
            "estimated_calls": self.estimated_calls,
        }


_ROW_FIELDS: Final = frozenset(
    {"usd", "calls", "input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens",
     "unpriced_calls", "estimated_calls"}
)  # fmt: skip


class Report(Sequence[ReportRow]):
    """Rows sorted by spend (highest first), and the records they were made from."""

    def __init__(self, group_by: Sequence[str], records: Sequence[SpendRecord]) -> None:
        self.group_by = tuple(group_by)
        self.records = tuple(records)
        self.rows = _group(self.group_by, self.records)

    @overload
    def __getitem__(self, index: int) -> ReportRow: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[ReportRow]: ...
    def __getitem__(self, index: int | slice) -> ReportRow | Sequence[ReportRow]:
        return self.rows[index]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[ReportRow]:
        return iter(self.rows)

    def __repr__(self) -> str:
        return f"Report(group_by={list(self.group_by)}, rows={len(self.rows)}, usd={self.usd})"

    @property
    def usd(self) -> Decimal:
        """Total priced spend of the report (``unpriced_calls`` counts the calls it leaves out)."""
        return sum((row.usd for row in self.rows if row.usd is not None), Decimal(0))

    @property
    def calls(self) -> int:
        return sum(row.calls for row in self.rows)

    @property
    def unpriced_calls(self) -> int:
        """Calls whose model has no price: not in ``usd``."""
        return sum(row.unpriced_calls for row in self.rows)

    def assert_under(self, usd: object, **tags: str) -> None:
        """Fail (``AssertionError``) if the records matching ``tags`` spent ``usd`` or more, or
        include unpriced calls; the message names the biggest spenders.

        Tag names with dots go through ``**{"user.id": "u-1"}``.
        """
        from costspan._money import usd_amount

        limit = usd_amount(usd, "usd")
        matching = [r for r in self.records if all(r.field(k) == v for k, v in tags.items())]
        spent = sum((r.usd for r in matching if r.usd is not None), Decimal(0))
        unpriced = sum(1 for r in matching if r.usd is None)
        if spent < limit and not unpriced:
            return
        scope = ", ".join(f"{k}={v}" for k, v in tags.items()) or "all calls"
        keys = self.group_by or ("model",)
        top = _group(keys, matching)[:5]
        spenders = "; ".join(
            f"{_label(row.tags)}: {'unpriced' if row.usd is None else f'${row.usd}'}"
            f" in {row.calls} call(s)"
            + (f", {row.unpriced_calls} unpriced" if row.unpriced_calls else "")
            for row in top
        )
        problem = f"spent ${spent}, not under ${limit}" if spent >= limit else (
            f"{unpriced} call(s) have no price, so the cap cannot be checked"
        )  # fmt: skip
        raise AssertionError(
            f"{scope}: {problem} ({len(matching)} call(s)); by {', '.join(keys)}: {spenders}"
        )

    # -- export --------------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(
            {
                "group_by": list(self.group_by),
                # Every call unpriced: the total is unknown, not $0.
                "usd": None
                if self.calls and self.unpriced_calls == self.calls
                else f"{self.usd:f}",
                "calls": self.calls,
                "unpriced_calls": self.unpriced_calls,
                "rows": [row.to_dict() for row in self.rows],
            },
            indent=2,
        )

    def to_jsonl(self) -> str:
        """The report's records, one JSON object per line (what ``costspan report --jsonl``
        reads back)."""
        return "".join(json.dumps(r.to_dict()) + "\n" for r in self.records)

    def to_csv(self) -> str:
        out = io.StringIO()
        import csv

        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([*self.group_by, *sorted(_ROW_FIELDS, key=_FIELD_ORDER.index)])
        for row in self.rows:
            data = row.to_dict()
            writer.writerow(
                [row.tags[k] for k in self.group_by]
                + [data[f] for f in sorted(_ROW_FIELDS, key=_FIELD_ORDER.index)]
            )
        return out.getvalue()


_FIELD_ORDER: Final = [
    "usd", "calls", "input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens",
    "unpriced_calls", "estimated_calls",
]  # fmt: skip


def _label(tags: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in tags.items()) or "all"


def _group(group_by: Sequence[str], records: Iterable[SpendRecord]) -> list[ReportRow]:
    sums: dict[tuple[str, ...], list[Any]] = {}
    for r in records:
        key = tuple(r.field(k) or NONE for k in group_by)
        acc = sums.setdefault(key, [Decimal(0), 0, 0, 0, 0, 0, 0, 0])
        if r.usd is not None:
            acc[0] += r.usd
        else:
            acc[6] += 1
        acc[1] += 1
        acc[2] += r.input_tokens
        acc[3] += r.cached_input_tokens
        acc[4] += r.output_tokens
        acc[5] += r.reasoning_tokens
        acc[7] += int(r.estimated)
    rows = [
        ReportRow(
            dict(zip(group_by, key, strict=True)),
            acc[0] if acc[6] < acc[1] else None,  # no priced call: no amount
            *acc[1:],
        )
        for key, acc in sums.items()
    ]
    rows.sort(key=lambda row: (-(row.usd or 0), -row.calls, tuple(row.tags.values())))
    return rows


def parse_since(value: object, now: datetime | None = None) -> datetime | None:
    """``since`` as a UTC datetime: a datetime, a timedelta back from now, a duration such as
    ``90m``, ``24h`` or ``7d``, or an ISO 8601 time. ``ValueError`` otherwise."""
    now = now or datetime.now(UTC)
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, timedelta):
        return now - value
    if isinstance(value, str):
        match = _DURATION.match(value.strip())
        if match:
            return now - timedelta(seconds=int(match[1]) * _UNITS[match[2]])
        try:
            return parse_since(datetime.fromisoformat(value.strip()), now)
        except ValueError:
            pass
    raise ValueError(
        f"since={value!r}: give a datetime, a timedelta, a duration like 90m, 24h or 7d, "
        "or an ISO 8601 time"
    )


def select(
    records: Iterable[SpendRecord], since: object = None, where: Where = None
) -> list[SpendRecord]:
    start = parse_since(since)
    start_ns = None if start is None else int(start.timestamp() * 1e9)
    chosen = [r for r in records if start_ns is None or r.time_ns >= start_ns]
    if where is None:
        return chosen
    if callable(where):
        return [r for r in chosen if where(r)]
    return [r for r in chosen if all(r.field(k) == v for k, v in where.items())]


def report(
    group_by: Sequence[str] | str = (),
    since: object = None,
    where: Where = None,
    records: Iterable[SpendRecord] | None = None,
) -> Report:
    """Spend grouped by ``group_by`` (tags such as ``feature``, ``user.id``, or ``model``,
    ``provider``, ``operation``), sorted by USD.

    Args:
        group_by: keys to group by (a comma-separated string also works); none: one row.
        since: only records from then on (datetime, timedelta, ``"24h"``, ISO 8601).
        where: only records whose fields equal these values, or for which a callable is true.
        records: report on these records instead of the process's (or the store's).
    """
    keys = (
        [k.strip() for k in group_by.split(",") if k.strip()]
        if isinstance(group_by, str)
        else list(group_by)
    )
    if records is None:
        records = runtime().recorder.records()
    return Report(keys, select(records, since, where))
