"""Quota leases (spread layout): a process admits calls on the hot global scope against its own
slice of the cap, and every failure case in the design holds against a real Redis.

- Calls on a leased scope cost no round trip: the counter sees a lease script now and then.
- Near the cap slices shrink (a quarter of what is left), and idle ones are given back.
- A SIGKILLed process's slice comes back when its lease ends; what it had spent unflushed is
  missing from the global counter (the documented bound), not from the others.
- A process cut off from Redis stops using its slice before the server can give it away.
- A flush whose reply is lost is retried with the same sequence number: charged once.
- A forked child never spends its parent's slice.
- A call whose own lease ends is swept from the slice; its late commit is charged once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from costspan.ledgers import CommitCode, LedgerUnavailable, RedisLedger, ScopeLimit
from costspan.ledgers._redis_cluster import RedisClusterLedger
from costspan.ledgers._spread import SpreadLedger
from tests.ledgers.slow_proxy import SlowProxy
from tests.processes import wait_until
from tests.redis_cluster import LocalCluster
from tests.redis_server import RedisServer

GLOBAL = ScopeLimit("limit:*:d20261122", cap_micros=100_000, sticky=False)
ROOT = Path(__file__).resolve().parents[2]


class CountingCluster(RedisClusterLedger):
    """The cluster engine, counting the scripts it runs by name."""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.runs: Counter[str] = Counter()

    def run_script(self, name: str, keys: Sequence[str], args: Sequence[str]) -> Any:
        self.runs[name] += 1
        return super().run_script(name, keys, args)

    async def arun_script(self, name: str, keys: Sequence[str], args: Sequence[str]) -> Any:
        self.runs[name] += 1
        return await super().arun_script(name, keys, args)


@pytest.fixture(name="cluster")
def _cluster(redis_cluster: LocalCluster) -> LocalCluster:
    redis_cluster.flush()
    return redis_cluster


@pytest.fixture(name="server")
def _server(redis_server: RedisServer) -> RedisServer:
    return redis_server.flushed()


def _holds(ledger: SpreadLedger) -> dict[bytes, int]:
    """The USD holds in the global counter, by field (``r:<reservation or lease id>``)."""
    fields: dict[bytes, bytes] = ledger.engine.client.hgetall(ledger.keys("", GLOBAL.key)[1])
    return {k: int(v.split()[0]) for k, v in fields.items() if k.startswith(b"r:")}


def _slice_of(ledger: SpreadLedger) -> int:
    """This ledger's (this process's) slice of the global cap, as the server holds it."""
    rid = ledger.leases._slices[GLOBAL.key].rid
    return _holds(ledger).get(f"r:{rid}".encode(), 0)


def test_calls_on_a_leased_scope_skip_the_round_trip(cluster: LocalCluster) -> None:
    """300 calls under a user cap and the leased global cap: 300 reserves and 300 settles on
    the user's shard, and a handful of lease scripts on the global's."""
    engine = CountingCluster(cluster.url)
    ledger = SpreadLedger(engine, leased=("limit:*:",), flush_s=60)
    glob = ScopeLimit("limit:*:d20261122", cap_micros=10**12, sticky=False)
    user = ScopeLimit("limit:user.id=a:d20261122", cap_micros=10**12, sticky=False)
    for i in range(300):
        assert ledger.reserve(f"c{i}", [user, glob], 1_000 + i, 10, 60).granted
        assert ledger.commit(f"c{i}", 900, 9, [user, glob]) is CommitCode.COMMITTED
    assert (engine.runs["reserve"], engine.runs["settle"]) == (300, 300)
    assert 1 <= engine.runs["lease"] <= 10
    ledger.flush_leases()
    state = ledger.snapshot(glob.key)
    assert (state.spent_micros, state.calls, state.held_micros) == (270_000, 300, 0)
    ledger.close()


async def test_async_calls_on_a_leased_scope_skip_the_round_trip(cluster: LocalCluster) -> None:
    """The asyncio twins admit against the slice on the event loop, without a round trip."""
    engine = CountingCluster(cluster.url)
    ledger = SpreadLedger(engine, leased=("limit:*:",), flush_s=60)
    glob = ScopeLimit("limit:*:d20261122", cap_micros=10**12, sticky=False)
    for i in range(100):
        assert (await ledger.areserve(f"a{i}", [glob], 1_000, 10, 60)).granted
        assert await ledger.acommit(f"a{i}", 500, 5, [glob]) is CommitCode.COMMITTED
    assert engine.runs["lease"] <= 5
    assert engine.runs["reserve"] == engine.runs["settle"] == 0
    ledger.close()


def test_near_the_cap_slices_shrink_and_idle_ones_come_back(cluster: LocalCluster) -> None:
    """Two processes (two ledgers) share a cap of 100,000: each slice is what the call needs
    plus a quarter of the room the others leave, the holds never sum past the cap, and a
    slice given back is room for the other."""
    a = SpreadLedger(RedisClusterLedger(cluster.url), leased=("limit:*:",), flush_s=60)
    b = SpreadLedger(RedisClusterLedger(cluster.url), leased=("limit:*:",), flush_s=60)
    assert a.reserve("a1", [GLOBAL], 1_000, 0, 60).granted
    assert _slice_of(a) == 1_000 + (100_000 - 1_000) // 4
    assert b.reserve("b1", [GLOBAL], 1_000, 0, 60).granted
    left = 100_000 - _slice_of(a)
    assert _slice_of(b) == 1_000 + (left - 1_000) // 4
    assert sum(_holds(a).values()) == _slice_of(a) + _slice_of(b) <= 100_000
    # B's call of 75,000 (76,000 with its call in flight) does not fit the room A leaves...
    assert not b.reserve("b2", [GLOBAL], 75_000, 0, 60).granted
    # ...until A, idle, gives its slice back (its keeper does so within ~2 flushes).
    assert a.release("a1", [GLOBAL]) is CommitCode.COMMITTED
    a.flush_leases()
    assert _slice_of(a) == 0
    assert b.reserve("b3", [GLOBAL], 75_000, 0, 60).granted
    assert sum(_holds(b).values()) <= 100_000
    a.close()
    b.close()


CHILD = """
import sys, time
from costspan.ledgers import ScopeLimit
from costspan.ledgers._redis_cluster import RedisClusterLedger
from costspan.ledgers._spread import SpreadLedger
ledger = SpreadLedger(RedisClusterLedger(sys.argv[1]), leased=("limit:*:",), lease_s=1.0,
                      flush_s=60)
glob = ScopeLimit("limit:*:d20261122", cap_micros=100_000, sticky=False)
user = ScopeLimit("limit:user.id=crashy:d20261122", cap_micros=100_000, sticky=False)
assert ledger.reserve("dead-1", [user, glob], 10_000, 0, 60).granted
assert ledger.commit("dead-1", 6_000, 0, [user, glob]) == 1
print("spent", flush=True)
time.sleep(60)
"""


def test_a_killed_process_slice_comes_back_with_its_lease(cluster: LocalCluster) -> None:
    """A process takes a slice, spends inside it, and is SIGKILLed: its slice holds room until
    its lease (1 s) ends, then the room comes back. Its unflushed spend is missing from the
    global counter (the documented bound: at most its slice), while the user's has it."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, cluster.url], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    ledger = SpreadLedger(RedisClusterLedger(cluster.url), leased=("limit:*:",), flush_s=60)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "spent"
        killed_at = time.monotonic()
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
        slice_size = 10_000 + (100_000 - 10_000) // 4
        assert not ledger.reserve("big-1", [GLOBAL], 100_000 - slice_size + 1, 0, 60).granted
        wait_until(lambda: ledger.snapshot(GLOBAL.key).held_micros == 0, "the lease to end", 10)
        assert time.monotonic() - killed_at > 0.5
        assert ledger.reserve("big-2", [GLOBAL], 100_000, 0, 60).granted
        assert ledger.snapshot(GLOBAL.key).spent_micros == 0  # the dead process's 6,000
        assert ledger.snapshot("limit:user.id=crashy:d20261122").spent_micros == 6_000
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()
        ledger.close()


def test_a_cut_off_process_stops_using_its_slice_before_the_server_frees_it(
    server: RedisServer,
) -> None:
    """The process loses Redis with a slice in hand (lease 1 s): it keeps admitting locally
    for at most 0.8 s of the lease, then calls need Redis (LedgerUnavailable: the fail mode),
    while the server still holds the slice; the server frees it only after the full lease."""
    with SlowProxy(server.port, 0.0) as proxy:
        ledger = SpreadLedger(
            RedisLedger(proxy.url, timeout_s=0.2, retries=0),
            leased=("limit:*:",),
            lease_s=1.0,
            flush_s=60,
        )
        assert ledger.reserve("p0", [GLOBAL], 1_000, 0, 60).granted
        granted_at = time.monotonic()
    # The proxy is gone: Redis is unreachable from this ledger.
    admitted_locally = 0
    while True:
        try:
            result = ledger.reserve(f"p{admitted_locally + 1}", [GLOBAL], 10, 0, 60)
        except LedgerUnavailable:
            break
        assert result.granted
        admitted_locally += 1
        time.sleep(0.02)
    stopped_after = time.monotonic() - granted_at
    assert admitted_locally > 0
    assert stopped_after < 0.8 + 0.3  # VALID_FRACTION of the lease, give or take a flush
    direct = SpreadLedger(RedisLedger(server.url), leased=())
    assert direct.snapshot(GLOBAL.key).held_micros > 0  # the server still holds it
    wait_until(lambda: direct.snapshot(GLOBAL.key).held_micros == 0, "the lease to end", 5)
    assert time.monotonic() - granted_at >= 1.0
    direct.close()
    ledger.leases.closed = True  # its slices are gone with the proxy: nothing to give back
    ledger.engine.close()


def test_a_flush_whose_reply_is_lost_charges_once(server: RedisServer) -> None:
    """Every lease script answers after the client's timeout (it ran; the reply is late), and
    the client retries: the slice is taken once, and the spend flushed later is charged once."""
    direct = SpreadLedger(RedisLedger(server.url), leased=())
    direct.snapshot(GLOBAL.key)  # loads the scripts: the slow calls below find them
    with SlowProxy(server.port, 0.08, slow=(b"EVAL",)) as proxy:
        slow = SpreadLedger(
            RedisLedger(proxy.url, timeout_s=0.03, retries=3), leased=("limit:*:",), flush_s=60
        )
        runs = _script_runs(server)
        with pytest.raises(LedgerUnavailable):
            slow.reserve("l1", [GLOBAL], 1_000, 0, 60)
        wait_until(lambda: _script_runs(server) - runs == 4, "the four attempts to run", 5)
        one_slice = 1_000 + (100_000 - 1_000) // 4
        assert direct.snapshot(GLOBAL.key).held_micros == one_slice  # ran 4 times, held once
        proxy.delay_s = 0.0
        assert slow.reserve("l1", [GLOBAL], 1_000, 0, 60).granted
        assert slow.commit("l1", 800, 0, [GLOBAL]) is CommitCode.COMMITTED
        slow.flush_leases()
        state = direct.snapshot(GLOBAL.key)
        assert (state.spent_micros, state.held_micros, state.calls) == (800, 0, 1)
        slow.close()
        direct.close()


def _script_runs(server: RedisServer) -> int:
    with server.client() as client:
        stats: dict[str, Any] = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def test_a_forked_child_takes_its_own_slice(cluster: LocalCluster) -> None:
    """After fork, the child holds nothing of its parent's slice: it takes a slice of its own
    (a second lease id in the counter) rather than spending the parent's twice."""
    ledger = SpreadLedger(RedisClusterLedger(cluster.url), leased=("limit:*:",), flush_s=60)
    assert ledger.reserve("parent", [GLOBAL], 1_000, 0, 60).granted
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one call, then report how it went
        try:
            ok = ledger.reserve("child", [GLOBAL], 1_000, 0, 60).granted
            os.write(write, b"granted" if ok else b"refused")
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as answer:
        assert answer.read() == "granted"
    os.waitpid(pid, 0)
    leases = [k for k in _holds(ledger) if k.startswith(b"r:lease:")]
    assert len(leases) == 2  # the parent's and the child's
    ledger.close()


def test_a_call_whose_lease_ends_is_swept_and_its_late_commit_counts_once(
    cluster: LocalCluster,
) -> None:
    """A call admitted against the slice with a 0.2 s lease never settles in time: the slice
    frees its hold (the keeper sweeps it), and its late commit is charged once."""
    ledger = SpreadLedger(RedisClusterLedger(cluster.url), leased=("limit:*:",), flush_s=0.1)
    assert ledger.reserve("slow-call", [GLOBAL], 5_000, 0, 0.2).granted
    wait_until(lambda: ledger.leases.unflushed_micros() == 0 and _inflight(ledger) == 0,
               "the keeper to sweep the hold", 5)  # fmt: skip
    assert ledger.commit("slow-call", 4_000, 0, [GLOBAL]) is CommitCode.LATE
    assert ledger.commit("slow-call", 4_000, 0, [GLOBAL]) is CommitCode.DUPLICATE
    ledger.flush_leases()
    assert ledger.snapshot(GLOBAL.key).spent_micros == 4_000
    ledger.close()


def _inflight(ledger: SpreadLedger) -> int:
    slices = ledger.leases._slices
    return sum(s.inflight_usd for s in slices.values())
