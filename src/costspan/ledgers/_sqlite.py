"""The SQLite ledger: several processes on one host share caps through one database file.

Every operation is one ``BEGIN IMMEDIATE`` transaction: it takes the database's write lock
before reading, so checking all caps and writing all counters is atomic across processes (a
deferred transaction that reads and then writes can fail with SQLITE_BUSY on the upgrade, which
``busy_timeout`` does not cure). WAL lets readers run beside the one writer; ``synchronous=NORMAL``
survives a crashed process (a power cut may lose the last transactions). WAL needs every process
on the same host: never put the file on a network filesystem.

Leases and windows use this host's wall clock. Expired holds are swept in the scopes a
reservation touches; finished records, old windows and idle scopes are purged about once a
minute per process.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Generator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from costspan.ledgers._protocol import (
    CommitCode,
    LedgerUnavailable,
    Reservation,
    ScopeLimit,
    ScopeState,
    check_amounts,
    fits,
    refusal,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS scopes (
    key TEXT PRIMARY KEY,
    spent_micros INTEGER NOT NULL DEFAULT 0,
    held_micros INTEGER NOT NULL DEFAULT 0,
    spent_tokens INTEGER NOT NULL DEFAULT 0,
    held_tokens INTEGER NOT NULL DEFAULT 0,
    calls INTEGER NOT NULL DEFAULT 0,
    cap_micros INTEGER,
    cap_tokens INTEGER,
    expires_at REAL,
    touched REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS holds (
    key TEXT NOT NULL,
    rid TEXT NOT NULL,
    micros INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (key, rid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS holds_by_expiry ON holds (key, expires);
CREATE TABLE IF NOT EXISTS reservations (
    rid TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    keys TEXT NOT NULL,
    expires REAL NOT NULL
) WITHOUT ROWID;
"""

_STATE_COLUMNS = (
    "spent_micros, held_micros, spent_tokens, held_tokens, calls, cap_micros, cap_tokens"
)
_KEY_SEPARATOR = "\x1f"  # scope keys are sanitised and never contain control characters


_MAX_IDLE = 8  # connections kept open per ledger; more concurrent operations open and close
_prepared_lock = threading.Lock()
_prepared: set[tuple[Path, int, str]] = set()  # (file, process, schema) already set up


def connect(path: Path, busy_timeout_s: float, schema: str) -> sqlite3.Connection:
    """A connection in autocommit mode (callers issue BEGIN themselves) to a WAL database with
    ``schema`` created, making the folder if needed. Shared by the ledger and the spend store,
    which may use one file.

    Changing the journal mode does not wait on the busy handler: a new file opened by many
    threads or processes at once answers "database is locked" to all but one, so the set-up is
    retried until the busy timeout (once per file, schema and process)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise sqlite3.OperationalError(f"cannot create {path.parent}: {exc}") from exc
    conn = sqlite3.connect(
        path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        conn.execute("PRAGMA synchronous = NORMAL")
        key = (path, os.getpid(), schema)
        with _prepared_lock:
            if key in _prepared:
                return conn
            deadline = time.monotonic() + busy_timeout_s
            while True:
                try:
                    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
                    if str(mode).lower() != "wal":
                        conn.execute("PRAGMA journal_mode = WAL")
                    conn.executescript(schema)  # CREATE ... IF NOT EXISTS: idempotent
                    break
                except sqlite3.OperationalError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)
            _prepared.add(key)
        return conn
    except BaseException:
        conn.close()
        raise


def _state(key: str, row: Sequence[Any] | None) -> ScopeState:
    if row is None:
        return ScopeState(key)
    return ScopeState(key, *row)


class SQLiteLedger:
    """A ledger in one SQLite database file, shared by the processes of one host.

    Args:
        path: the database file (created with its tables if missing).
        busy_timeout_s: how long an operation waits for another process's write lock before
            the ledger counts as unavailable.
        record_ttl_s: how long a finished reservation is remembered (idempotency window).
        idle_ttl_s: how long a scope without a window is kept after its last use.
        clock: seconds since the epoch; injectable for tests.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout_s: float = 2.0,
        record_ttl_s: float = 7200.0,
        idle_ttl_s: float = 86400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self._busy_timeout = busy_timeout_s
        self._record_ttl = record_ttl_s
        self._idle_ttl = idle_ttl_s
        self._clock = clock
        self._next_purge = 0.0
        # Idle connections, taken by one operation at a time: a pool rather than one per
        # thread, so that servers which start a thread per request do not leak connections.
        self._idle: list[sqlite3.Connection] = []
        self._idle_lock = threading.Lock()
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"SQLiteLedger({str(self.path)!r})"

    # -- connections -------------------------------------------------------------------------
    def _take(self) -> sqlite3.Connection:
        """An idle connection, or a new one. A connection serves one operation at a time (any
        thread), and never crosses a fork: a child process starts with none."""
        with self._idle_lock:
            if self._pid != os.getpid():
                self._idle, self._pid = [], os.getpid()  # the parent's belong to the parent
            if self._idle:
                return self._idle.pop()
        return connect(self.path, self._busy_timeout, _SCHEMA)

    def _give_back(self, conn: sqlite3.Connection) -> None:
        with self._idle_lock:
            if len(self._idle) < _MAX_IDLE and self._pid == os.getpid():
                self._idle.append(conn)
                return
        conn.close()

    @contextmanager
    def _transaction(self) -> Generator[sqlite3.Connection]:
        try:
            conn = self._take()
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"SQLite ledger {self.path}: {exc}") from exc
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise LedgerUnavailable(f"SQLite ledger {self.path}: {exc}") from exc
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise LedgerUnavailable(f"SQLite ledger {self.path}: {exc}") from exc
        finally:
            self._give_back(conn)

    def close(self) -> None:
        """Close the idle connections (one in use closes when it is given back)."""
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # -- protocol ----------------------------------------------------------------------------
    def reserve(
        self,
        rid: str,
        scopes: Sequence[ScopeLimit],
        usd_micros: int,
        tokens: int,
        lease_s: float,
    ) -> Reservation:
        check_amounts(usd_micros, tokens)
        with self._transaction() as conn:
            now = self._clock()
            self._maybe_purge(conn, now)
            if self._record_state(conn, rid) is not None:
                current = tuple(self._read(conn, limit.key) for limit in scopes)
                return Reservation(granted=True, duplicate=True, states=current)
            states: list[ScopeState] = []
            for limit in scopes:
                self._touch(conn, limit, now)
                self._sweep(conn, limit.key, now)
                states.append(self._read(conn, limit.key))
            for state in states:
                if not fits(state, usd_micros, tokens):
                    return refusal(state, states)
            expiry = now + lease_s
            for limit in scopes:
                conn.execute(
                    "UPDATE scopes SET held_micros = held_micros + ?, held_tokens = held_tokens + ?"
                    " WHERE key = ?",
                    (usd_micros, tokens, limit.key),
                )
                conn.execute(
                    "INSERT INTO holds (key, rid, micros, tokens, expires) VALUES (?, ?, ?, ?, ?)",
                    (limit.key, rid, usd_micros, tokens, expiry),
                )
            conn.execute(
                "INSERT INTO reservations (rid, state, keys, expires) VALUES (?, 'held', ?, ?)",
                (
                    rid,
                    _KEY_SEPARATOR.join(limit.key for limit in scopes),
                    expiry + self._record_ttl,
                ),
            )
            return Reservation(
                granted=True, states=tuple(self._read(conn, limit.key) for limit in scopes)
            )

    def extend(self, rid: str, scopes: Sequence[ScopeLimit], lease_s: float) -> bool:
        with self._transaction() as conn:
            now = self._clock()
            expiry = now + lease_s
            renewed = conn.execute(
                "UPDATE holds SET expires = ? WHERE rid = ? AND expires > ?", (expiry, rid, now)
            ).rowcount
            if renewed:
                conn.execute(
                    "UPDATE reservations SET expires = max(expires, ?) WHERE rid = ?",
                    (expiry + self._record_ttl, rid),
                )
            return renewed > 0

    def commit(
        self,
        rid: str,
        usd_micros: int,
        tokens: int,
        scopes: Sequence[ScopeLimit] = (),
    ) -> CommitCode:
        check_amounts(usd_micros, tokens)
        return self._settle(rid, usd_micros, tokens, scopes, "committed")

    def release(self, rid: str, scopes: Sequence[ScopeLimit] = ()) -> CommitCode:
        return self._settle(rid, 0, 0, (), "released")

    def snapshot(self, scope: str) -> ScopeState:
        with self._transaction() as conn:
            self._sweep(conn, scope, self._clock())
            return self._read(conn, scope)

    async def areserve(
        self,
        rid: str,
        scopes: Sequence[ScopeLimit],
        usd_micros: int,
        tokens: int,
        lease_s: float,
    ) -> Reservation:
        # sqlite3 blocks (on disk and on other processes' locks): keep it off the event loop.
        return await asyncio.to_thread(self.reserve, rid, scopes, usd_micros, tokens, lease_s)

    async def acommit(
        self, rid: str, usd_micros: int, tokens: int, scopes: Sequence[ScopeLimit] = ()
    ) -> CommitCode:
        return await asyncio.to_thread(self.commit, rid, usd_micros, tokens, scopes)

    async def arelease(self, rid: str, scopes: Sequence[ScopeLimit] = ()) -> CommitCode:
        return await asyncio.to_thread(self.release, rid, scopes)

    def ping(self) -> None:
        """Raise LedgerUnavailable unless the database can be written."""
        with self._transaction():
            pass

    # -- internals (inside a transaction) ----------------------------------------------------
    def _settle(
        self,
        rid: str,
        usd_micros: int,
        tokens: int,
        scopes: Sequence[ScopeLimit],
        state: str,
    ) -> CommitCode:
        with self._transaction() as conn:
            now = self._clock()
            row = conn.execute("SELECT state, keys FROM reservations WHERE rid = ?", (rid,))
            record = row.fetchone()
            if record is not None and record[0] != "held":
                return CommitCode.DUPLICATE
            if record is None:
                keys = [limit.key for limit in scopes]
                for limit in scopes:
                    self._touch(conn, limit, now)
                code = CommitCode.POST_HOC
            else:
                keys = str(record[1]).split(_KEY_SEPARATOR) if record[1] else []
                code = CommitCode.COMMITTED
            for key in keys:
                hold = conn.execute(
                    "DELETE FROM holds WHERE key = ? AND rid = ? RETURNING micros, tokens",
                    (key, rid),
                ).fetchone()
                if hold is not None:
                    conn.execute(
                        "UPDATE scopes SET held_micros = held_micros - ?,"
                        " held_tokens = held_tokens - ? WHERE key = ?",
                        (hold[0], hold[1], key),
                    )
                elif record is not None:
                    code = CommitCode.LATE  # the lease ran out and the hold was swept
                if state == "committed":
                    conn.execute(
                        "UPDATE scopes SET spent_micros = spent_micros + ?,"
                        " spent_tokens = spent_tokens + ?, calls = calls + 1, touched = ?"
                        " WHERE key = ?",
                        (usd_micros, tokens, now, key),
                    )
            conn.execute(
                "INSERT OR REPLACE INTO reservations (rid, state, keys, expires)"
                " VALUES (?, ?, ?, ?)",
                (rid, state, _KEY_SEPARATOR.join(keys), now + self._record_ttl),
            )
            return code

    @staticmethod
    def _record_state(conn: sqlite3.Connection, rid: str) -> str | None:
        row = conn.execute("SELECT state FROM reservations WHERE rid = ?", (rid,)).fetchone()
        return None if row is None else str(row[0])

    @staticmethod
    def _read(conn: sqlite3.Connection, key: str) -> ScopeState:
        row = conn.execute(f"SELECT {_STATE_COLUMNS} FROM scopes WHERE key = ?", (key,))
        return _state(key, row.fetchone())

    @staticmethod
    def _touch(conn: sqlite3.Connection, limit: ScopeLimit, now: float) -> None:
        """Create the scope if new, record its window's end, and apply the limit's caps."""
        conn.execute(
            "INSERT INTO scopes (key, touched, expires_at) VALUES (?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET touched = excluded.touched,"
            " expires_at = coalesce(excluded.expires_at, scopes.expires_at)",
            (limit.key, now, limit.expires_at),
        )
        if not limit.sticky:
            conn.execute(
                "UPDATE scopes SET cap_micros = ?, cap_tokens = ? WHERE key = ?",
                (limit.cap_micros, limit.cap_tokens, limit.key),
            )
            return
        # A sticky cap only ever tightens (min ignores NULL only through coalesce).
        conn.execute(
            "UPDATE scopes SET"
            " cap_micros = CASE WHEN ? IS NULL THEN cap_micros"
            "   ELSE min(coalesce(cap_micros, ?), ?) END,"
            " cap_tokens = CASE WHEN ? IS NULL THEN cap_tokens"
            "   ELSE min(coalesce(cap_tokens, ?), ?) END"
            " WHERE key = ?",
            (
                limit.cap_micros,
                limit.cap_micros,
                limit.cap_micros,
                limit.cap_tokens,
                limit.cap_tokens,
                limit.cap_tokens,
                limit.key,
            ),
        )

    @staticmethod
    def _sweep(conn: sqlite3.Connection, key: str, now: float) -> None:
        expired = conn.execute(
            "DELETE FROM holds WHERE key = ? AND expires <= ? RETURNING micros, tokens",
            (key, now),
        ).fetchall()
        if expired:
            conn.execute(
                "UPDATE scopes SET held_micros = held_micros - ?, held_tokens = held_tokens - ?"
                " WHERE key = ?",
                (sum(r[0] for r in expired), sum(r[1] for r in expired), key),
            )

    def _maybe_purge(self, conn: sqlite3.Connection, now: float) -> None:
        if now < self._next_purge:
            return
        self._next_purge = now + 60.0
        conn.execute("DELETE FROM reservations WHERE expires < ?", (now,))
        conn.execute(
            "DELETE FROM scopes WHERE held_micros = 0 AND held_tokens = 0"
            " AND NOT EXISTS (SELECT 1 FROM holds WHERE holds.key = scopes.key)"
            " AND (expires_at < ? OR (expires_at IS NULL AND touched < ?))",
            (now, now - self._idle_ttl),
        )
