"""What only the SQLite engine does: durability across restarts, purging, bounded connections."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import pytest

from costspan.ledgers import CommitCode, LedgerUnavailable, ScopeLimit, SQLiteLedger


def test_counters_and_records_survive_a_restart(tmp_path: Path) -> None:
    """A new ledger object on the same file (a restarted process) sees the spend and
    recognises a replayed commit as a duplicate."""
    scope = ScopeLimit("limit:user.id=a:d20261122", cap_micros=1000)
    first = SQLiteLedger(tmp_path / "l.db")
    first.reserve("r", [scope], 600, 0, 60)
    first.commit("r", 400, 3, [scope])
    first.close()
    second = SQLiteLedger(tmp_path / "l.db")
    assert second.snapshot(scope.key).spent_micros == 400
    assert second.commit("r", 400, 3, [scope]) is CommitCode.DUPLICATE
    assert not second.reserve("x", [scope], 700, 0, 60).granted
    second.close()


def test_ended_windows_and_old_records_are_purged(tmp_path: Path) -> None:
    """Scopes whose window ended and settled records past their time are deleted."""
    now = [1_000_000.0]
    ledger = SQLiteLedger(tmp_path / "l.db", record_ttl_s=100, clock=lambda: now[0])
    ended = ScopeLimit("limit:*:h1", cap_micros=100, expires_at=now[0] + 50)
    ledger.reserve("r", [ended, ScopeLimit("budget:b")], 5, 0, 10)
    ledger.commit("r", 5, 0, [ended])
    now[0] += 500
    ledger.reserve("later", [ScopeLimit("other")], 0, 0, 10)
    conn = sqlite3.connect(tmp_path / "l.db")
    scopes = {row[0] for row in conn.execute("SELECT key FROM scopes")}
    records = {row[0] for row in conn.execute("SELECT rid FROM reservations")}
    conn.close()
    assert scopes == {"budget:b", "other"}
    assert records == {"later"}
    ledger.close()


def test_a_thread_per_operation_does_not_leak_connections(tmp_path: Path) -> None:
    """Servers that start a thread per request reuse a few pooled connections."""
    ledger = SQLiteLedger(tmp_path / "l.db")
    ledger.commit("warm", 1, 0, [ScopeLimit("s")])
    before = len(os.listdir("/proc/self/fd"))

    def one(i: int) -> None:
        ledger.commit(f"c{i}", 1, 0, [ScopeLimit("s")])

    for i in range(100):
        thread = threading.Thread(target=one, args=(i,))
        thread.start()
        thread.join()
    assert ledger.snapshot("s").spent_micros == 101
    assert len(os.listdir("/proc/self/fd")) - before < 10  # one connection reused, not 100
    ledger.close()


def test_a_missing_folder_is_created_and_an_unwritable_one_is_unavailable(tmp_path: Path) -> None:
    """The file's folder is made on first use; a path that cannot be a folder fails as an
    unreachable ledger (the fail mode decides), not as a crash."""
    ledger = SQLiteLedger(tmp_path / "new" / "deeper" / "l.db")
    assert ledger.reserve("r", [ScopeLimit("s", cap_micros=10)], 5, 0, 60).granted
    ledger.close()
    (tmp_path / "file").write_text("not a folder")
    broken = SQLiteLedger(tmp_path / "file" / "l.db")
    with pytest.raises(LedgerUnavailable, match="cannot create"):
        broken.reserve("r", [ScopeLimit("s")], 5, 0, 60)
