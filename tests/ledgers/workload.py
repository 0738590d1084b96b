"""A hierarchical reserve/commit workload shared by the concurrency tests (threads, processes).

Each call holds in three scopes at once: its user's daily cap (8 users, $0.6 to $2.7, plus a
token cap), its tenant's (2 tenants) and a global one. Holds are 2,000-10,000 µ$; actual costs are
20-100 % of the hold. Caps are far below demand, so every level refuses calls.
"""

from __future__ import annotations

import random
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from costspan.ledgers import Ledger, RedisLedger, ScopeLimit, SQLiteLedger
from costspan.ledgers._redis_cluster import RedisClusterLedger
from costspan.ledgers._spread import SpreadLedger

USERS = 8
USER_CAPS = [600_000 + 300_000 * i for i in range(USERS)]
USER_TOKEN_CAP = 1_000_000
TENANT_CAPS = [3_500_000, 7_000_000]
GLOBAL_CAP = 9_500_000


def scopes_for(user: int) -> list[ScopeLimit]:
    tenant = user * len(TENANT_CAPS) // USERS
    return [
        ScopeLimit(f"user:{user}", cap_micros=USER_CAPS[user], cap_tokens=USER_TOKEN_CAP),
        ScopeLimit(f"tenant:{tenant}", cap_micros=TENANT_CAPS[tenant]),
        ScopeLimit("global", cap_micros=GLOBAL_CAP),
    ]


def all_scopes() -> list[ScopeLimit]:
    seen: dict[str, ScopeLimit] = {}
    for user in range(USERS):
        for scope in scopes_for(user):
            seen[scope.key] = scope
    return list(seen.values())


@dataclass(frozen=True)
class Charge:
    rid: str
    usd: int
    tokens: int
    scopes: tuple[str, ...]


@dataclass
class Tally:
    charges: list[Charge]
    refused_by: dict[str, int]


def shared_target(kind: str, request: Any, tmp_path: Path) -> str:
    """Where several processes meet: a SQLite file, or the (flushed) session Redis or Redis
    Cluster."""
    if kind == "sqlite":
        return str(tmp_path / "ledger.db")
    if kind in ("redis-cluster", "redis-spread"):
        cluster = request.getfixturevalue("redis_cluster")
        cluster.flush()
        return str(cluster.url)
    return str(request.getfixturevalue("redis_server").flushed().url)


def open_ledger(kind: str, target: str) -> Ledger:
    """``redis-spread`` is the spread layout with the ``global`` scope on quota leases."""
    if kind == "sqlite":
        return SQLiteLedger(target)
    # Timeouts of 5 s: the tests measure correctness, not outages.
    if kind == "redis":
        return RedisLedger(target, timeout_s=5.0)
    if kind == "redis-cluster":
        return RedisClusterLedger(target, timeout_s=5.0)
    if kind == "redis-spread":
        return SpreadLedger(RedisClusterLedger(target, timeout_s=5.0), leased=("global",))
    raise ValueError(kind)


def run_worker(ledger: Ledger, name: str, cycles: int, seed: int) -> Tally:
    """``cycles`` reserve -> (short call) -> commit cycles; returns what was charged."""
    rng = random.Random(seed)
    tally = Tally([], {})
    for i in range(cycles):
        user = rng.randrange(USERS)
        scopes = scopes_for(user)
        hold, hold_tokens = rng.randint(2_000, 10_000), rng.randint(500, 4_000)
        rid = f"{name}-{i}"
        result = ledger.reserve(rid, scopes, hold, hold_tokens, 60)
        if not result.granted:
            kind = str(result.failed_scope).split(":")[0]
            tally.refused_by[kind] = tally.refused_by.get(kind, 0) + 1
            continue
        time.sleep(rng.random() * 0.002)  # the LLM call: others reserve meanwhile
        actual = hold * rng.randint(20, 100) // 100
        actual_tokens = hold_tokens * rng.randint(20, 100) // 100
        ledger.commit(rid, actual, actual_tokens, scopes)
        tally.charges.append(Charge(rid, actual, actual_tokens, tuple(s.key for s in scopes)))
    return tally


def run_threads(ledger: Ledger, prefix: str, threads: int, cycles: int) -> Tally:
    tallies: list[Tally] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        tally = run_worker(
            ledger, f"{prefix}t{n}", cycles, seed=zlib.crc32(f"{prefix}{n}".encode())
        )
        with lock:
            tallies.append(tally)

    pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return merge(tallies)


def merge(tallies: list[Tally]) -> Tally:
    out = Tally([], {})
    for tally in tallies:
        out.charges += tally.charges
        for k, v in tally.refused_by.items():
            out.refused_by[k] = out.refused_by.get(k, 0) + v
    return out


def process_main(kind: str, target: str, prefix: str, threads: int, cycles: int) -> Tally:
    """The body of one worker process (run through multiprocessing)."""
    ledger = open_ledger(kind, target)
    try:
        return run_threads(ledger, prefix, threads, cycles)
    finally:
        ledger.close()


class Monitor:
    """Reads every scope while the workload runs: spent + held must never pass a cap."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.violations: list[str] = []
        self.reads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for scope in all_scopes():
                state = self.ledger.snapshot(scope.key)
                self.reads += 1
                if state.spent_micros + state.held_micros > (scope.cap_micros or 0):
                    self.violations.append(f"{scope.key}: {state}")
            time.sleep(0.005)

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def check(ledger: Ledger, tally: Tally) -> None:
    """Spend within every cap, nothing left held, each counter the exact sum of its charges."""
    if isinstance(ledger, SpreadLedger):
        ledger.flush_leases()  # quota leases write their spend and give their slices back
    for scope in all_scopes():
        state = ledger.snapshot(scope.key)
        charged = [c for c in tally.charges if scope.key in c.scopes]
        assert state.held_micros == 0, scope.key
        assert state.held_tokens == 0, scope.key
        assert state.spent_micros == sum(c.usd for c in charged), scope.key
        assert state.spent_tokens == sum(c.tokens for c in charged), scope.key
        assert state.calls == len(charged), scope.key
        assert state.spent_micros <= (scope.cap_micros or 0), scope.key
        if scope.cap_tokens is not None:
            assert state.spent_tokens <= scope.cap_tokens, scope.key
    assert len({c.rid for c in tally.charges}) == len(tally.charges)
