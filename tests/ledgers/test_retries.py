"""Aggressive client retries with a tiny timeout cannot inflate a counter.

Every reply comes back after the client's timeout, so the client retries a command that did
run. A plain INCRBY through the same client is applied once per attempt (the control shows the
setup really re-sends); the ledger's scripts are idempotent by reservation id and hold and
charge exactly once.
"""

from __future__ import annotations

import pytest
import redis
import redis.exceptions
from redis.backoff import NoBackoff
from redis.retry import Retry

from costspan.ledgers import CommitCode, LedgerUnavailable, RedisLedger, ScopeLimit
from tests.ledgers.slow_proxy import SlowProxy
from tests.redis_server import RedisServer

ATTEMPTS = 6  # one try and five retries
TIMEOUT_S = 0.03
DELAY_S = 0.08


@pytest.fixture(name="server")
def _server(redis_server: RedisServer) -> RedisServer:
    redis_server.flushed()
    return redis_server


def test_control_plain_incrby_is_applied_once_per_attempt(server: RedisServer) -> None:
    """The setup is real: a non-idempotent INCRBY retried after timeouts counts every attempt."""
    with SlowProxy(server.port, DELAY_S) as proxy:
        client = redis.Redis(
            port=proxy.port,
            socket_timeout=TIMEOUT_S,
            retry=Retry(NoBackoff(), ATTEMPTS - 1),
            retry_on_error=[redis.exceptions.TimeoutError],
        )
        with pytest.raises(redis.exceptions.TimeoutError):
            client.incrby("plain", 1000)
        client.close()
    with server.client() as direct:
        assert int(direct.get("plain") or 0) == 1000 * ATTEMPTS


def test_retried_reserve_and_commit_hold_and_charge_once(server: RedisServer) -> None:
    """The same timeouts and retries on the ledger's reserve and commit: one hold, one charge."""
    scope = ScopeLimit("user:retry", cap_micros=1_000_000)
    direct = RedisLedger(server.url)
    direct.commit("load-scripts", 0, 0, [ScopeLimit("warm-up")])  # EVALSHA finds them loaded
    direct.reserve("load-scripts", [ScopeLimit("warm-up")], 0, 0, 1)
    runs_before = _script_runs(direct)
    with SlowProxy(server.port, DELAY_S) as proxy:
        ledger = RedisLedger(proxy.url, timeout_s=TIMEOUT_S, retries=ATTEMPTS - 1)
        with pytest.raises(LedgerUnavailable):
            ledger.reserve("rid-1", [scope], 5_000, 100, 60)
        assert _script_runs(direct) - runs_before == ATTEMPTS  # it really ran six times
        assert direct.snapshot("user:retry").held_micros == 5_000
        with pytest.raises(LedgerUnavailable):
            ledger.commit("rid-1", 1_000, 10, [scope])
        state = direct.snapshot("user:retry")
        assert (state.spent_micros, state.held_micros, state.calls) == (1_000, 0, 1)
        # The caller's own replay (its outbox) is a duplicate too.
        proxy.delay_s = 0.0
        assert ledger.commit("rid-1", 1_000, 10, [scope]) is CommitCode.DUPLICATE
        ledger.close()
    assert direct.snapshot("user:retry").spent_micros == 1_000
    direct.close()


def _script_runs(ledger: RedisLedger) -> int:
    stats = ledger.client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))
