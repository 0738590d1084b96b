"""The spread layout on a real Redis Cluster: a slot per scope, so a call's scopes live on
several shards, and each is reserved and settled on its own, idempotently.

A refused call undoes the holds it had taken; a retried reserve is checked afresh; a settle cut
short half way is completed by its replay without charging a scope twice. With the global scope
on quota leases, threads and asyncio tasks never overspend a cap, and the counters equal the
sum of the actual costs. (The engine, budget and process suites run this layout too.)
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from costspan.ledgers import CommitCode, LedgerUnavailable, ScopeLimit
from costspan.ledgers._redis_cluster import RedisClusterLedger
from costspan.ledgers._spread import SpreadLedger
from tests.ledgers import workload
from tests.redis_cluster import LocalCluster


@pytest.fixture(name="cluster")
def _cluster(redis_cluster: LocalCluster) -> LocalCluster:
    redis_cluster.flush()
    return redis_cluster


@pytest.fixture(name="spread")
def _spread(cluster: LocalCluster) -> Iterator[SpreadLedger]:
    """The spread layout with no leases: every scope on its own slot, every call to Redis."""
    ledger = SpreadLedger(RedisClusterLedger(cluster.url, timeout_s=5.0), leased=())
    yield ledger
    ledger.close()


@pytest.fixture(name="leased")
def _leased(cluster: LocalCluster) -> Iterator[SpreadLedger]:
    """The spread layout with the workload's ``global`` scope on quota leases."""
    ledger = SpreadLedger(RedisClusterLedger(cluster.url, timeout_s=5.0), leased=("global",))
    yield ledger
    ledger.close()


def test_scopes_spread_over_the_shards(cluster: LocalCluster, spread: SpreadLedger) -> None:
    """The workload's 11 scopes live on every primary of the cluster, not on one."""
    shards = {cluster.primary_of(spread.keys("", s.key)[1]) for s in workload.all_scopes()}
    assert shards == set(cluster.primaries_ports())


def test_a_refusal_undoes_the_holds_already_taken(spread: SpreadLedger) -> None:
    """The user scope holds, the tenant refuses: the user's hold is undone and no record of
    the reservation stays, so the same id retried later is checked afresh (not a duplicate)."""
    user = ScopeLimit("user:u", cap_micros=10_000)
    tight = ScopeLimit("tenant:t", cap_micros=100, sticky=False)
    refused = spread.reserve("r1", [user, tight], 5_000, 10, 60)
    assert not refused.granted
    assert refused.failed_scope == "tenant:t"
    assert [s.key for s in refused.states] == ["user:u", "tenant:t"]
    assert spread.snapshot("user:u").held_micros == 0
    roomy = ScopeLimit("tenant:t", cap_micros=100_000, sticky=False)
    again = spread.reserve("r1", [user, roomy], 5_000, 10, 60)
    assert again.granted
    assert not again.duplicate
    assert spread.snapshot("user:u").held_micros == 5_000
    assert spread.reserve("r1", [user, roomy], 5_000, 10, 60).duplicate


def test_a_settle_cut_short_is_completed_once_by_its_replay(spread: SpreadLedger) -> None:
    """A commit that reached one scope and not the other (its shard failed in between) is
    replayed whole: the first scope answers duplicate, the second is charged, once each."""
    a, b = ScopeLimit("user:a", cap_micros=10_000), ScopeLimit("tenant:b", cap_micros=10_000)
    assert spread.reserve("c1", [a, b], 4_000, 0, 60).granted
    keys = spread.keys("c1", "user:a")
    args = spread.engine.settle_args("c1", 3_000, 7, [a], "C")
    assert int(spread.engine.run_script("settle", keys, args)) == CommitCode.COMMITTED
    assert spread.commit("c1", 3_000, 7, [a, b]) is CommitCode.COMMITTED
    assert spread.commit("c1", 3_000, 7, [a, b]) is CommitCode.DUPLICATE
    for key in ("user:a", "tenant:b"):
        state = spread.snapshot(key)
        assert (state.spent_micros, state.held_micros, state.calls) == (3_000, 0, 1)


def test_an_unreachable_shard_fails_the_call_and_undoes_the_rest(cluster: LocalCluster) -> None:
    """A reserve whose second scope cannot be reached raises LedgerUnavailable (the fail mode
    decides) after undoing the hold of the first."""
    healthy = SpreadLedger(RedisClusterLedger(cluster.url), leased=())
    dead = ScopeLimit("user:x", cap_micros=10_000)

    class HalfDead(RedisClusterLedger):
        """One scope's shard down (simulated: the session cluster must stay whole; the
        failover tests kill real nodes)."""

        def run_script(self, name: str, keys: Sequence[str], args: Sequence[str]) -> Any:
            if name == "reserve" and "user:x" in keys[1]:
                raise LedgerUnavailable("the shard of user:x is down")
            return super().run_script(name, keys, args)

    ledger = SpreadLedger(HalfDead(cluster.url), leased=())
    first = ScopeLimit("tenant:ok", cap_micros=10_000)
    with pytest.raises(LedgerUnavailable, match="user:x is down"):
        ledger.reserve("u1", [first, dead], 5_000, 0, 60)
    assert healthy.snapshot("tenant:ok").held_micros == 0
    ledger.close()
    healthy.close()


def test_thirty_two_threads_with_a_leased_global_scope(leased: SpreadLedger) -> None:
    """32 threads x 200 cycles, the global cap on quota leases: no cap passed at any moment,
    every counter (global included, once the leases are flushed) the exact sum of the
    committed costs, and every level - global too - refuses calls."""
    with workload.Monitor(leased) as monitor:
        tally = workload.run_threads(leased, "leased", threads=32, cycles=200)
    assert monitor.violations == []
    workload.check(leased, tally)
    assert set(tally.refused_by) == {"user", "tenant", "global"}


async def test_two_hundred_tasks_with_a_leased_global_scope(leased: SpreadLedger) -> None:
    """200 concurrent asyncio tasks, two users under a global cap that binds: the global
    refuses, never passes its cap, and every counter is the exact sum of the actual costs."""
    rng = random.Random(7)
    glob = ScopeLimit("global", cap_micros=3_000_000, cap_tokens=150_000)
    users = [ScopeLimit(f"user:{n}", cap_micros=50_000_000) for n in range(2)]
    charges: list[tuple[str, int, int]] = []
    refused: set[str | None] = set()

    async def call(i: int) -> None:
        scopes = [users[i % 2], glob]
        hold = rng.randint(40_000, 100_000)
        result = await leased.areserve(f"task{i}", scopes, hold, 1_000, 60)
        if not result.granted:
            refused.add(result.failed_scope)
            return
        await asyncio.sleep(rng.random() * 0.01)
        actual = hold * rng.randint(20, 100) // 100
        assert await leased.acommit(f"task{i}", actual, 700, scopes) is CommitCode.COMMITTED
        charges.append((users[i % 2].key, actual, 700))

    await asyncio.gather(*(call(i) for i in range(200)))
    assert refused == {"global"}
    leased.flush_leases()
    for scope in [*users, glob]:
        mine = [c for c in charges if scope is glob or c[0] == scope.key]
        state = leased.snapshot(scope.key)
        assert state.held_micros == state.held_tokens == 0
        assert state.spent_micros == sum(c[1] for c in mine)
        assert state.spent_tokens == sum(c[2] for c in mine)
        assert state.calls == len(mine)
    assert leased.snapshot("global").spent_micros <= 3_000_000
