"""Spend records: one per settled call, kept in a bounded buffer and, when asked, in SQLite.

Every call that was sent (and so may have been billed) yields a :class:`SpendRecord` when it is
settled: when, which operation, provider and models, the tags its baggage carried, its tokens,
its USD cost (or that it was unpriced), whether the usage was estimated, its budget decision,
and its trace and span ids. Refused calls were never sent and yield none.

In memory the records of this process live in a ring buffer of ``max_records``
(``COSTSPAN_MAX_RECORDS``, default 10,000); :func:`costspan.dropped_records` counts what fell
out of it. With a
store (``COSTSPAN_RECORDS=/path/spend.db``, or the SQLite ledger's own file) records are also
written to SQLite by a background thread, in batches, so that reports cover every process and
survive restarts. The Redis ledger keeps counters, not records: with it, records stay in each
process (and in the spans and metrics it exports).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Generator, Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from costspan._pricing import Cost
from costspan._usage import TokenUsage

if TYPE_CHECKING:
    import sqlite3  # imported by the store's writer, when a store is configured

_logger = logging.getLogger(__name__)

DEFAULT_MAX_RECORDS: Final = 10_000


@dataclass(frozen=True, slots=True)
class SpendRecord:
    """What one settled call spent."""

    time_ns: int
    operation: str
    provider: str
    request_model: str | None
    response_model: str | None
    tags: Mapping[str, str] = field(default_factory=dict[str, str])
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    usd: Decimal | None = None
    """None when the model has no price (never counted as $0)."""
    estimated: bool = False
    decision: str | None = None
    trace_id: str = ""
    span_id: str = ""

    @property
    def unpriced(self) -> bool:
        return self.usd is None

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.time_ns / 1e9, UTC)

    @property
    def model(self) -> str:
        """The model that answered, else the one asked for."""
        return self.response_model or self.request_model or "(unknown)"

    def field(self, name: str) -> str | None:
        """A grouping or filtering key: a record field (model, provider, operation,
        request_model, response_model, decision) or a tag."""
        if name == "model":
            return self.model
        if name in _FIELDS:
            value = getattr(self, name)
            return None if value is None else str(value)
        return self.tags.get(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": self.time.isoformat(),
            "operation": self.operation,
            "provider": self.provider,
            "request_model": self.request_model,
            "response_model": self.response_model,
            "tags": dict(self.tags),
            "input_tokens": self.input_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "output_tokens": self.output_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "usd": None if self.usd is None else f"{self.usd:f}",
            "estimated": self.estimated,
            "decision": self.decision,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SpendRecord:
        """A record from :meth:`to_dict` (a JSON-lines export); ``ValueError`` if malformed."""
        try:
            when = datetime.fromisoformat(str(data["time"]))
            usd = data.get("usd")
            return cls(
                time_ns=int(when.timestamp() * 1e9),
                operation=str(data["operation"]),
                provider=str(data["provider"]),
                request_model=_opt(data.get("request_model")),
                response_model=_opt(data.get("response_model")),
                tags={str(k): str(v) for k, v in dict(data.get("tags") or {}).items()},
                input_tokens=int(data.get("input_tokens") or 0),
                cached_input_tokens=int(data.get("cached_input_tokens") or 0),
                output_tokens=int(data.get("output_tokens") or 0),
                reasoning_tokens=int(data.get("reasoning_tokens") or 0),
                usd=None if usd is None else Decimal(str(usd)),
                estimated=bool(data.get("estimated")),
                decision=_opt(data.get("decision")),
                trace_id=str(data.get("trace_id") or ""),
                span_id=str(data.get("span_id") or ""),
            )
        except (KeyError, TypeError, ArithmeticError, ValueError) as exc:
            raise ValueError(f"not a costspan spend record: {exc}") from exc


_FIELDS: Final = frozenset(
    {"operation", "provider", "request_model", "response_model", "decision", "trace_id"}
)


def _opt(value: object) -> str | None:
    return None if value is None else str(value)


# -- the in-memory buffer -------------------------------------------------------------------------
class Buffer:
    """The process's most recent records (a ring), and how many fell out of it."""

    def __init__(self, size: int) -> None:
        self._records: deque[SpendRecord] = deque(maxlen=size)
        self._lock = threading.Lock()
        self.dropped = 0

    @property
    def size(self) -> int:
        return self._records.maxlen or 0

    def add(self, record: SpendRecord) -> None:
        with self._lock:
            if len(self._records) == self.size:
                self.dropped += 1
            self._records.append(record)

    def records(self) -> list[SpendRecord]:
        with self._lock:
            return list(self._records)


# -- the SQLite store ------------------------------------------------------------------------------
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS spend (
    time_ns INTEGER NOT NULL,
    operation TEXT NOT NULL,
    provider TEXT NOT NULL,
    request_model TEXT,
    response_model TEXT,
    tags TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    cached_input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    usd TEXT,
    estimated INTEGER NOT NULL,
    decision TEXT,
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS spend_by_time ON spend (time_ns);
"""
_COLUMNS: Final = (
    "time_ns, operation, provider, request_model, response_model, tags, input_tokens, "
    "cached_input_tokens, output_tokens, reasoning_tokens, usd, estimated, decision, trace_id, "
    "span_id"
)


def _row(r: SpendRecord) -> tuple[object, ...]:
    return (
        r.time_ns,
        r.operation,
        r.provider,
        r.request_model,
        r.response_model,
        json.dumps(dict(r.tags), sort_keys=True),
        r.input_tokens,
        r.cached_input_tokens,
        r.output_tokens,
        r.reasoning_tokens,
        None if r.usd is None else f"{r.usd:f}",
        int(r.estimated),
        r.decision,
        r.trace_id,
        r.span_id,
    )


def _record(row: tuple[Any, ...]) -> SpendRecord:
    return SpendRecord(
        time_ns=int(row[0]),
        operation=row[1],
        provider=row[2],
        request_model=row[3],
        response_model=row[4],
        tags=json.loads(row[5]),
        input_tokens=int(row[6]),
        cached_input_tokens=int(row[7]),
        output_tokens=int(row[8]),
        reasoning_tokens=int(row[9]),
        usd=None if row[10] is None else Decimal(row[10]),
        estimated=bool(row[11]),
        decision=row[12],
        trace_id=row[13],
        span_id=row[14],
    )


def _connect(path: Path) -> sqlite3.Connection:
    from costspan.ledgers._sqlite import connect  # (asyncio, sqlite3: when a store is used)

    return connect(path, 5.0, _SCHEMA)


class Store:
    """Spend records in one SQLite file, written in batches by a background thread."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._queue: queue.Queue[SpendRecord | None] = queue.Queue()
        self._writer: threading.Thread | None = None
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0

    def add(self, record: SpendRecord) -> None:
        with self._lock:
            self._pending += 1
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(
                    target=self._write, name="costspan-spend-store", daemon=True
                )
                self._writer.start()
        self._queue.put(record)

    def _write(self) -> None:
        import sqlite3

        conn: sqlite3.Connection | None = None
        while True:
            batch = [self._queue.get()]
            while len(batch) < 500:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            records = [r for r in batch if r is not None]
            try:
                if conn is None:
                    conn = _connect(self.path)
                conn.executemany(
                    f"INSERT INTO spend ({_COLUMNS}) VALUES ({', '.join('?' * 15)})",
                    [_row(r) for r in records],
                )
            except sqlite3.Error:
                # The records stay in the buffer, on the spans and in the metrics.
                _logger.exception(
                    "costspan could not write %d spend record(s) to %s", len(records), self.path
                )
            with self._lock:
                self._pending -= len(records)
                self._idle.notify_all()

    def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until every record handed to the store is written (or the timeout passes)."""
        with self._lock:
            self._idle.wait_for(lambda: self._pending == 0, timeout=timeout_s)

    def read(self, since_ns: int | None = None) -> list[SpendRecord]:
        import sqlite3

        self.flush()
        if not self.path.exists():
            return []
        try:
            conn = _connect(self.path)
            try:
                rows = conn.execute(
                    f"SELECT {_COLUMNS} FROM spend WHERE time_ns >= ? ORDER BY time_ns",
                    (since_ns or 0,),
                ).fetchall()
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            # A file that is not ours (or not SQLite at all): one line naming it, no traceback
            # from deep inside sqlite3.
            raise ValueError(f"cannot read spend records from {self.path}: {exc}") from None
        return [_record(row) for row in rows]


# -- the process's records -------------------------------------------------------------------------
class Recorder:
    """Where one process keeps its records: the buffer, the store (if any), and the open
    captures. Built by the runtime for the settings in force (:mod:`costspan._runtime`); a new
    size or store keeps the records and captures of the one it replaces."""

    __slots__ = ("_captures", "_lock", "_stores", "buffer", "store")

    def __init__(
        self,
        size: int = DEFAULT_MAX_RECORDS,
        store_path: str | None = None,
        previous: Recorder | None = None,
    ) -> None:
        if previous is not None and previous.buffer.size == size:
            self.buffer = previous.buffer
        else:
            self.buffer = Buffer(size)
            if previous is not None:
                for record in previous.buffer.records()[-size:]:
                    self.buffer.add(record)
                self.buffer.dropped = previous.buffer.dropped
        # Stores are keyed by the configured text (no filesystem call per record) and shared
        # by every recorder of the process, so one file has one writer thread.
        self._stores: dict[str, Store] = {} if previous is None else previous._stores
        self._captures: list[list[SpendRecord]] = [] if previous is None else previous._captures
        self._lock = threading.Lock() if previous is None else previous._lock
        self.store: Store | None = None
        if store_path is not None:
            with self._lock:
                found = self._stores.get(store_path)
                if found is None:
                    found = self._stores[store_path] = Store(Path(store_path).resolve())
            self.store = found

    def add(self, record: SpendRecord) -> None:
        """Keep one settled call's record (captures, buffer, store)."""
        if self._captures:
            with self._lock:
                for collected in self._captures:
                    collected.append(record)
        self.buffer.add(record)
        if self.store is not None:
            self.store.add(record)

    def records(self) -> list[SpendRecord]:
        """The records a report reads: the store's (every process), else this buffer's."""
        return self.store.read() if self.store is not None else self.buffer.records()

    @contextmanager
    def capture(self) -> Generator[list[SpendRecord]]:
        """Collect the records kept while the block runs (the pytest plugin's per-test spend)."""
        collected: list[SpendRecord] = []
        with self._lock:
            self._captures.append(collected)
        try:
            yield collected
        finally:
            with self._lock:
                self._captures.remove(collected)

    def flush(self) -> None:
        """Wait until every store has written what it was given."""
        with self._lock:
            stores = list(self._stores.values())
        for s in stores:
            s.flush()


def spend_record(
    *,
    time_ns: int,
    operation: str,
    provider: str,
    request_model: str | None,
    response_model: str | None,
    tags: Mapping[str, str],
    usage: TokenUsage,
    cost: Cost | None,
    trace_id: int,
    span_id: int,
    decision: str | None = None,
) -> SpendRecord:
    """The record of one priced (or unpriceable) call, from its usage and cost."""
    return SpendRecord(
        time_ns=time_ns,
        operation=operation,
        provider=provider,
        request_model=request_model,
        response_model=response_model,
        tags=tags,
        input_tokens=usage.input_tokens or 0,
        cached_input_tokens=usage.cache_read_tokens or 0,
        output_tokens=usage.output_tokens or 0,
        reasoning_tokens=usage.reasoning_tokens or 0,
        usd=None if cost is None else cost.total,
        estimated=usage.estimated,
        decision=decision,
        trace_id=f"{trace_id:032x}" if trace_id else "",
        span_id=f"{span_id:016x}" if span_id else "",
    )


def read_jsonl(lines: Iterable[str], where: str = "input") -> list[SpendRecord]:
    """Records from a JSON-lines export (one ``SpendRecord.to_dict()`` per line)."""
    records: list[SpendRecord] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(SpendRecord.from_dict(json.loads(line)))
        except (json.JSONDecodeError, ValueError) as exc:
            raise ValueError(f"{where}, line {number}: {exc}") from None
    return records
