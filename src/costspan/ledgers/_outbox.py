"""The durable outbox: commits and releases a shared ledger has not acknowledged yet, on disk.

When the shared store (Redis, a SQLite file) cannot take a commit, :class:`FailSafeLedger`
writes it here *before the call returns*, so a process killed during an outage (SIGKILL, a
rolling restart, an OOM kill) loses nothing: the next process that opens the same ledger finds
the entries and replays them. Replays are idempotent by reservation id, so an entry sent twice
(by two processes, or once before a crash and once after) is charged once.

The outbox is one SQLite file (``COSTSPAN_OUTBOX``; by default ``outbox.db`` in
``$XDG_STATE_HOME/costspan/``), shared by every process of the host and every ledger (each
entry names its ledger). A process *claims* an entry before sending it, in a transaction, so
that several processes replaying at once each send different entries; a claim older than
:data:`CLAIM_S` is taken over (its process died mid-replay). An entry the store keeps
rejecting for another reason than unavailability (a corrupted key) is retried
:data:`MAX_ATTEMPTS` times, then kept as *dead* for ``costspan doctor`` to report, never
dropped silently.

What survives what: a process crash, yes (the file is written in WAL mode, synchronous=NORMAL);
a container restart only if the state directory is on a volume; a lost disk, nothing.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from costspan.ledgers._protocol import ScopeLimit
from costspan.ledgers._sqlite import connect

_logger = logging.getLogger(__name__)

CLAIM_S: Final = 30.0
"""A claim older than this belongs to a process that died mid-replay; another may take it."""
MAX_ATTEMPTS: Final = 20
"""Rejections (other than unavailability) before an entry is set aside as dead."""

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ledger TEXT NOT NULL,
    rid TEXT NOT NULL,
    usd_micros INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    scopes TEXT NOT NULL,
    release INTEGER NOT NULL,
    created REAL NOT NULL,
    claimed_by TEXT,
    claimed_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_by_ledger ON outbox (ledger, id);
"""


def default_path() -> Path:
    """``$XDG_STATE_HOME/costspan/outbox.db`` (``~/.local/state`` when the variable is unset)."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "costspan" / "outbox.db"


@dataclass(frozen=True, slots=True)
class Entry:
    """A commit or release the store has not acknowledged yet."""

    rid: str
    usd_micros: int
    tokens: int
    scopes: tuple[ScopeLimit, ...]
    release: bool


def _scopes_json(scopes: tuple[ScopeLimit, ...]) -> str:
    return json.dumps(
        [[s.key, s.cap_micros, s.cap_tokens, s.expires_at, s.sticky] for s in scopes],
        separators=(",", ":"),
    )


def _scopes_of(text: str) -> tuple[ScopeLimit, ...]:
    return tuple(
        ScopeLimit(str(k), cu, ct, exp, bool(sticky)) for k, cu, ct, exp, sticky in json.loads(text)
    )


class Outbox:
    """One ledger's entries in the outbox file (see the module docstring).

    Args:
        path: the SQLite file (created with its folder on first write).
        ledger: the identity of the ledger the entries belong to (its URL, without password).
    """

    def __init__(self, path: Path, ledger: str) -> None:
        self.path = path
        self.ledger = ledger
        self._me = f"{os.getpid()}:{id(self)}"
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Outbox({str(self.path)!r}, {self.ledger!r})"

    def _db(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            self._conn = connect(self.path, 5.0, _SCHEMA)
            self._pid = os.getpid()
            self._me = f"{self._pid}:{id(self)}"
        return self._conn

    def put(self, entry: Entry) -> None:
        """Write an entry durably (raises ``sqlite3.Error``/``OSError`` if the disk cannot)."""
        with self._lock:
            self._db().execute(
                "INSERT INTO outbox (ledger, rid, usd_micros, tokens, scopes, release, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    self.ledger,
                    entry.rid,
                    entry.usd_micros,
                    entry.tokens,
                    _scopes_json(entry.scopes),
                    int(entry.release),
                    time.time(),
                ),
            )

    def claim(self) -> tuple[int, Entry] | None:
        """The oldest live entry nobody else is replaying, claimed for this process."""
        now = time.time()
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    "SELECT id, rid, usd_micros, tokens, scopes, release FROM outbox"
                    " WHERE ledger = ? AND attempts < ?"
                    " AND (claimed_by IS NULL OR claimed_by = ? OR claimed_at < ?)"
                    " ORDER BY id LIMIT 1",
                    (self.ledger, MAX_ATTEMPTS, self._me, now - CLAIM_S),
                ).fetchone()
                if row is not None:
                    db.execute(
                        "UPDATE outbox SET claimed_by = ?, claimed_at = ? WHERE id = ?",
                        (self._me, now, row[0]),
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        if row is None:
            return None
        ident, rid, usd_micros, tokens, scopes, release = row
        return int(ident), Entry(
            str(rid), int(usd_micros), int(tokens), _scopes_of(scopes), bool(release)
        )

    def done(self, ident: int) -> None:
        """The store acknowledged the entry."""
        with self._lock:
            self._db().execute("DELETE FROM outbox WHERE id = ?", (ident,))

    def unclaim(self, ident: int) -> None:
        """The store went away again: leave the entry for the next replay."""
        with self._lock:
            self._db().execute(
                "UPDATE outbox SET claimed_by = NULL, claimed_at = NULL WHERE id = ?", (ident,)
            )

    def failed(self, ident: int, error: str) -> None:
        """The store rejected the entry (not unavailable): count it; dead past MAX_ATTEMPTS."""
        with self._lock:
            self._db().execute(
                "UPDATE outbox SET attempts = attempts + 1, error = ?, claimed_by = NULL,"
                " claimed_at = NULL WHERE id = ?",
                (error[:500], ident),
            )

    def counts(self) -> tuple[int, int, int]:
        """(live entries, dead entries, µ$ of live commits) of this ledger."""
        with self._lock:
            row = (
                self._db()
                .execute(
                    "SELECT coalesce(sum(attempts < ?), 0), coalesce(sum(attempts >= ?), 0),"
                    " coalesce(sum(CASE WHEN attempts < ? AND release = 0 THEN usd_micros END), 0)"
                    " FROM outbox WHERE ledger = ?",
                    (MAX_ATTEMPTS, MAX_ATTEMPTS, MAX_ATTEMPTS, self.ledger),
                )
                .fetchone()
            )
        return int(row[0]), int(row[1]), int(row[2])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def summary(path: Path) -> list[tuple[str, int, int, int]]:
    """(ledger, live entries, dead entries, µ$ of live commits) per ledger in an outbox file,
    read-only (for ``costspan doctor``); empty when the file does not exist."""
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2.0)
    try:
        rows = conn.execute(
            "SELECT ledger, sum(attempts < ?), sum(attempts >= ?),"
            " coalesce(sum(CASE WHEN attempts < ? AND release = 0 THEN usd_micros END), 0)"
            " FROM outbox GROUP BY ledger ORDER BY ledger",
            (MAX_ATTEMPTS, MAX_ATTEMPTS, MAX_ATTEMPTS),
        ).fetchall()
    except sqlite3.OperationalError:
        return []  # no outbox table: nothing was ever queued
    finally:
        conn.close()
    return [(str(r[0]), int(r[1]), int(r[2]), int(r[3])) for r in rows]
