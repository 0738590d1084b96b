"""A shared ledger that goes away: fail modes, the circuit breaker, and the outbox.

Redis is really stopped and restarted (with AOF, so it keeps its data) in the middle of a run.
In every mode no commit is lost or counted twice: after the restart each counter equals the sum
of what was actually spent.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from costspan.ledgers import (
    CommitCode,
    FailSafeLedger,
    LedgerUnavailable,
    RedisLedger,
    Reservation,
    ScopeLimit,
)
from costspan.ledgers._failsafe import FailMode
from tests.ledgers.slow_proxy import SlowProxy
from tests.processes import free_port
from tests.redis_server import RedisServer

USER = ScopeLimit("user:u1", cap_micros=100_000)
GLOBAL = ScopeLimit("global", cap_micros=10_000_000)
SCOPES = [USER, GLOBAL]


def _wait_until_back(ledger: FailSafeLedger) -> None:
    deadline = time.monotonic() + 15
    while not (ledger.available and ledger.queued == 0):
        assert time.monotonic() < deadline, "the ledger never came back"
        time.sleep(0.02)


@pytest.mark.parametrize("mode", ["closed", "open", "local"])
def test_redis_restarted_mid_run(mode: FailMode, tmp_path: Path) -> None:
    """Each fail mode while Redis is down, then an exact ledger once it is back."""
    with RedisServer(tmp_path, aof=True) as server:
        ledger = FailSafeLedger(RedisLedger(server.url), mode, probe_interval_s=0.05)
        spent = 0
        # Up: 5 calls of 10,000 µ$ each (hold 12,000).
        for i in range(5):
            assert ledger.reserve(f"up{i}", SCOPES, 12_000, 10, 60).granted
            assert ledger.commit(f"up{i}", 10_000, 10, SCOPES) is CommitCode.COMMITTED
            spent += 10_000
        # A call in flight when Redis dies.
        assert ledger.reserve("inflight", SCOPES, 12_000, 10, 60).granted
        server.stop()

        assert ledger.commit("inflight", 9_000, 10, SCOPES) is CommitCode.QUEUED
        spent += 9_000
        assert not ledger.available
        granted_down = 0
        for i in range(8):
            if mode == "closed":
                with pytest.raises(LedgerUnavailable):
                    ledger.reserve(f"down{i}", SCOPES, 12_000, 10, 60)
                continue
            result = ledger.reserve(f"down{i}", SCOPES, 12_000, 10, 60)
            assert result.degraded == mode
            if not result.granted:
                continue
            granted_down += 1
            assert ledger.commit(f"down{i}", 10_000, 10, SCOPES) is CommitCode.QUEUED
            spent += 10_000
        if mode == "open":
            assert granted_down == 8  # unmetered: the cap is not enforced
        elif mode == "local":
            # This process enforces the user's cap alone, starting from what Redis last said
            # (50,000 spent + the in-flight 12,000 held, counted as spent to be safe): 38,000
            # left, so three more calls of 10,000 (12,000 held each) fit, and the cap holds.
            assert granted_down == 3
            assert spent <= 100_000  # the user's cap
        assert ledger.queued == 1 + granted_down

        server.start()
        _wait_until_back(ledger)
        state = ledger.snapshot("user:u1")
        assert (state.spent_micros, state.held_micros) == (spent, 0)
        assert state.calls == 6 + granted_down
        assert ledger.snapshot("global").spent_micros == spent
        # Replaying everything again (a second outbox of the same calls) changes nothing.
        for i in range(5):
            assert ledger.commit(f"up{i}", 10_000, 10, SCOPES) is CommitCode.DUPLICATE
        assert ledger.commit("inflight", 9_000, 10, SCOPES) is CommitCode.DUPLICATE
        assert ledger.snapshot("user:u1").spent_micros == spent
        # Shared again: new calls are checked by Redis, not the fallback.
        assert ledger.reserve("after", SCOPES, 1, 0, 60).degraded is None
        ledger.close()


def test_a_dead_ledger_is_not_asked_again_until_it_answers() -> None:
    """After the first failure the circuit is open: calls are decided without touching the
    store (no timeouts on the call path) while a background probe waits for it."""
    calls: list[str] = []

    class Counting(RedisLedger):
        def reserve(
            self,
            rid: str,
            scopes: Sequence[ScopeLimit],
            usd_micros: int,
            tokens: int,
            lease_s: float,
        ) -> Reservation:
            calls.append("reserve")
            return super().reserve(rid, scopes, usd_micros, tokens, lease_s)

    ledger = FailSafeLedger(Counting(f"redis://127.0.0.1:{free_port()}/0"), "open")
    for i in range(50):
        assert ledger.reserve(f"r{i}", SCOPES, 1_000, 0, 60).degraded == "open"
    assert calls == ["reserve"]
    assert ledger.outages == 1
    ledger.engine.close()


def test_unwritten_commits_are_reported_at_exit_not_dropped_silently() -> None:
    """A process that exits while its ledger is still down says what it could not write."""
    code = f"""
import logging
logging.basicConfig()
from costspan.ledgers import FailSafeLedger, RedisLedger, ScopeLimit
ledger = FailSafeLedger(RedisLedger("redis://127.0.0.1:{free_port()}/0"), "open")
scope = [ScopeLimit("user:u1", cap_micros=10)]
ledger.reserve("r", scope, 5, 0, 60)
print(ledger.commit("r", 1234, 0, scope).name)
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "QUEUED"
    assert "1 ledger commit(s) totalling $0.001234 could not be written" in result.stderr


def test_a_refused_call_whose_reserve_reply_was_lost_frees_its_hold(
    redis_server: RedisServer,
) -> None:
    """The reserve ran in Redis but its reply came too late: closed mode refuses the call, and
    a queued release frees the hold once Redis answers again (not 15 minutes later)."""
    redis_server.flushed()
    scope = ScopeLimit("user:lost-reply", cap_micros=100_000)
    direct = RedisLedger(redis_server.url)
    # Load the scripts, so the proxied EVALSHA runs at once (a NOSCRIPT reply would be late too).
    assert direct.reserve("load-scripts", [ScopeLimit("warm-up")], 0, 0, 60).granted
    direct.release("load-scripts", [ScopeLimit("warm-up")])
    with SlowProxy(redis_server.port, 0.2) as proxy:
        ledger = FailSafeLedger(
            RedisLedger(proxy.url, timeout_s=0.05, retries=0), "closed", probe_interval_s=0.05
        )
        with pytest.raises(LedgerUnavailable):
            ledger.reserve("lost", [scope], 40_000, 0, 900)
        # The script did run: its reservation record exists. (Its hold may already be gone:
        # the queued release is sent by the probe and, like the reserve, runs in Redis even
        # though its reply is late too; the record then reads R, released.)
        deadline = time.monotonic() + 5
        while direct.client.hget("costspan:{ledger}:r:lost", "st") not in (b"H", b"R"):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proxy.delay_s = 0.0
        _wait_until_back(ledger)
    assert direct.snapshot(scope.key).held_micros == 0
    assert direct.client.hget("costspan:{ledger}:r:lost", "st") == b"R"
    ledger.close()
    direct.close()


def test_a_store_that_refuses_settlements_is_logged_once_per_error_not_per_call(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis answers but rejects the settlement script (here: a key of the wrong type): each
    settlement is kept for the outbox, and the log gets one traceback per kind of error, not one
    per call."""
    redis_server.flushed()
    scope = ScopeLimit("user:wrongtype", cap_micros=1_000_000)
    ledger = FailSafeLedger(RedisLedger(redis_server.url), "closed")
    direct = RedisLedger(redis_server.url)
    for i in range(3):
        assert ledger.reserve(f"w{i}", [scope], 1_000, 0, 60).granted
        direct.client.delete(f"costspan:{{ledger}}:r:w{i}")
        direct.client.rpush(f"costspan:{{ledger}}:r:w{i}", "not a hash")  # WRONGTYPE
    with caplog.at_level(logging.DEBUG, logger="costspan"):
        for i in range(3):
            ledger.commit(f"w{i}", 900, 0, [scope])
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert "rejected a settlement" in errors[0].getMessage()
    assert ledger.queued == 3  # kept, not dropped
    ledger.close()
    direct.close()
