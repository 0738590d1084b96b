"""A Redis Cluster primary fails over in the middle of a concurrent run: no commit is lost,
nothing is charged twice, no cap is passed.

A real local cluster of 3 primaries and 3 replicas. Eight threads reserve and commit through
one fail-safe ledger (``closed``: a reserve the cluster cannot answer is refused; a commit it
cannot take waits in the outbox and is replayed, idempotently, once it answers) while the
primary that serves the ledger's keys is failed over:

- ``CLUSTER FAILOVER`` on its replica (the coordinated, manual failover: the primary stops
  taking writes until the replica has them all, then they swap), in both layouts;
- SIGKILL of the primary (the replica takes over after ``cluster-node-timeout``; the dead node
  then comes back as its replica). Replication is asynchronous, so a primary killed this way
  can take acknowledged writes with it; with ``wait=1`` every write is acknowledged only once a
  replica has it, and nothing is lost.

After the run the outbox is empty and every counter is the exact sum of the committed costs.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from costspan.ledgers import FailSafeLedger, LedgerUnavailable
from costspan.ledgers._redis_cluster import RedisClusterLedger
from costspan.ledgers._spread import SpreadLedger, scope_keys
from tests.ledgers import workload
from tests.processes import wait_until
from tests.redis_cluster import LocalCluster

THREADS = 8


@pytest.fixture(name="replicated", scope="module")
def _replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """3 primaries with one replica each, for this module's failovers."""
    with LocalCluster(tmp_path_factory.mktemp("replicated"), replicas=1) as cluster:
        yield cluster


def _open(cluster: LocalCluster, layout: str, wait: int = 0) -> FailSafeLedger:
    # A timeout long enough for a loaded 2-core machine; failures still end in the fail mode.
    engine = RedisClusterLedger(cluster.url, timeout_s=1.0, retries=2, wait_replicas=wait)
    if layout == "spread":
        spread = SpreadLedger(engine, leased=("global",))
        return FailSafeLedger(spread, "closed", probe_interval_s=0.05)
    return FailSafeLedger(engine, "closed", probe_interval_s=0.05)


def _run_through(ledger: FailSafeLedger, event: Callable[[], object]) -> workload.Tally:
    """Eight threads reserve/commit until ``event`` (run meanwhile) is over and 100 more
    calls are committed; reserves the ledger cannot answer are refused (closed)."""
    tallies: list[workload.Tally] = []
    lock = threading.Lock()
    stop = threading.Event()
    committed = [0]

    def work(n: int) -> None:
        rng = random.Random(n)
        tally = workload.Tally([], {})
        i = 0
        while not stop.is_set():
            user = rng.randrange(workload.USERS)
            scopes = workload.scopes_for(user)
            hold = rng.randint(2_000, 10_000)
            rid = f"fo{n}-{i}"
            i += 1
            try:
                result = ledger.reserve(rid, scopes, hold, 100, 60)
            except LedgerUnavailable:
                tally.refused_by["unavailable"] = tally.refused_by.get("unavailable", 0) + 1
                continue
            if not result.granted:
                kind = str(result.failed_scope).split(":")[0]
                tally.refused_by[kind] = tally.refused_by.get(kind, 0) + 1
                continue
            time.sleep(rng.random() * 0.002)
            actual = hold * rng.randint(20, 100) // 100
            ledger.commit(rid, actual, 50, scopes)  # COMMITTED, or QUEUED for the outbox
            tally.charges.append(workload.Charge(rid, actual, 50, tuple(s.key for s in scopes)))
            with lock:
                committed[0] += 1
        with lock:
            tallies.append(tally)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: committed[0] >= 100, "calls before the failover", 60)
        event()
        after = committed[0]
        wait_until(lambda: committed[0] >= after + 100, "calls after the failover", 60)
    finally:
        stop.set()
        for t in threads:
            t.join()
    return workload.merge(tallies)


def _settled(ledger: FailSafeLedger) -> None:
    """The ledger is back, its outbox replayed, its leases flushed."""
    wait_until(lambda: ledger.available and ledger.flush(), "the outbox to be replayed", 60)
    assert ledger.queued == 0
    if isinstance(ledger.engine, SpreadLedger):
        ledger.engine.flush_leases()


def _key_of(layout: str) -> str:
    """A key on the shard to fail over: the ledger's slot, or (spread) the leased global's."""
    if layout == "spread":
        return scope_keys("costspan", "", "global")[1]
    return "costspan:{ledger}:c:global"


@pytest.mark.parametrize("layout", ["slot", "spread"])
def test_manual_failover_mid_run(replicated: LocalCluster, layout: str) -> None:
    """CLUSTER FAILOVER of the primary serving the ledger (or, spread, the global scope)
    while eight threads run: exact counters, no cap passed."""
    replicated.flush()
    ledger = _open(replicated, layout)
    key = _key_of(layout)
    before = replicated.primary_of(key)
    with workload.Monitor(ledger) as monitor:
        tally = _run_through(ledger, lambda: replicated.failover(before))
    assert replicated.primary_of(key) != before
    _settled(ledger)
    assert monitor.violations == []
    workload.check(ledger.engine, tally)
    ledger.close()


@pytest.mark.parametrize("layout", ["slot", "spread"])
def test_a_killed_primary_loses_no_acknowledged_write_with_wait(
    replicated: LocalCluster, layout: str
) -> None:
    """SIGKILL of the primary serving the ledger mid-run, with ``wait=1``: its replica takes
    over, the outbox replays what failed meanwhile, and every counter is exact."""
    replicated.flush()
    ledger = _open(replicated, layout, wait=1)
    key = _key_of(layout)
    victim = replicated.primary_of(key)

    def kill() -> None:
        replicated.kill(victim)
        wait_until(lambda: replicated.primary_of(key) != victim, "a replica to take over", 30)
        # The new primary has no replica left, so no write can be acknowledged (wait=1)
        # until the dead node comes back, as a replica of it.
        replicated.restart(victim)

    with workload.Monitor(ledger) as monitor:
        tally = _run_through(ledger, kill)
    _settled(ledger)
    assert monitor.violations == []
    workload.check(ledger.engine, tally)
    assert ledger.outages >= 1  # the kill was felt: calls were refused, commits queued
    assert replicated.roles()[victim] == "slave"
    ledger.close()
