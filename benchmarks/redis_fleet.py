"""What one budgeted call costs a Redis Cluster, and what that means for a fleet.

A budgeted call here passes three scopes - its user's daily cap (1,000 users), its tenant's
(20 tenants) and the global ``*`` cap - and reserves, then commits. On a local cluster of 3
primaries with a replica each, for each layout:

- **round trips per call**, counted by the client (scripts sent, per call);
- **server time per call**: ``INFO commandstats`` (the scripts' own microseconds) on every
  primary, summed, and on the busiest primary alone;
- **p50 latency** of a call from one thread (loopback), with and without ``wait=1`` (each
  write acknowledged by a replica before the call goes on).

The shard capacity is then projected on paper, and says so: a Redis shard is one core, and a
command costs it the script's own time plus a fixed cost for reading the request and writing
the reply, measured with ``redis-benchmark`` (50 clients, no pipelining) on a trivial
``EVALSHA``. Calls per second per shard = 1 s / (cost per call on the busiest shard). In the
one-slot layout every call's scripts run on the shard of ``{ledger}``, whatever the shard
count. In the spread layout user and tenant scripts spread evenly over the shards (many users
and tenants; one huge tenant would load its shard alone), and the global scope costs its shard
lease scripts: a few per second per process, here 1,000 processes flushing once a second.

Everything - cluster, replicas, benchmark client - shares this machine's cores, so absolute
numbers are low and noisy (tens of percent); the per-call costs and their ratios are what the
projection uses.

Run: ``scripts/dev.sh bench`` (with the other benchmarks), or on its own
``.venv/bin/python benchmarks/redis_fleet.py [--quick]``.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.redis_cluster import LocalCluster  # noqa: E402

from costspan.ledgers import Ledger, ScopeLimit  # noqa: E402
from costspan.ledgers._redis_cluster import RedisClusterLedger  # noqa: E402
from costspan.ledgers._spread import SpreadLedger  # noqa: E402

USERS = 1_000
TENANTS = 20
PROCESSES = 1_000
"""Processes in the projected fleet: each flushes its global lease once a second."""
SHARDS = (1, 3, 10)
EXPIRES = time.time() + 2 * 86400
DAY = time.strftime("d%Y%m%d", time.gmtime())


class Counting(RedisClusterLedger):
    """The cluster engine, counting the scripts it sends by name (the client's round trips)."""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.runs: Counter[str] = Counter()
        self._count_lock = threading.Lock()

    def run_script(self, name: str, keys: Sequence[str], args: Sequence[str]) -> Any:
        with self._count_lock:
            self.runs[name] += 1
        return super().run_script(name, keys, args)


def scopes(rng: random.Random) -> list[ScopeLimit]:
    user, tenant = rng.randrange(USERS), rng.randrange(TENANTS)
    cap = 10**15  # the caps never bind: every call takes the full write path
    return [
        ScopeLimit(f"limit:user.id=u{user}:{DAY}", cap_micros=cap, sticky=False,
                   expires_at=EXPIRES),
        ScopeLimit(f"limit:tenant.id=t{tenant}:{DAY}", cap_micros=cap, sticky=False,
                   expires_at=EXPIRES),
        ScopeLimit(f"limit:*:{DAY}", cap_micros=cap, sticky=False, expires_at=EXPIRES),
    ]  # fmt: skip


@dataclass
class Layout:
    name: str
    calls: int
    trips: float  # scripts sent per call
    server_us: float  # all primaries' script time per call
    shard_us: dict[int, float]  # per primary: script time per call
    shard_cmds: dict[int, float]  # per primary: scripts per call
    global_us: float  # the global scope's share (lease scripts), per call
    global_cmds: float
    lease_us: float  # one lease script's own time
    p50_ms: float


def _stats(cluster: LocalCluster) -> dict[int, tuple[int, int]]:
    """(script calls, script µs) per primary, since the last reset."""
    out: dict[int, tuple[int, int]] = {}
    for port in cluster.primaries_ports():
        with cluster.node(port) as node:
            stats: dict[str, Any] = node.info("commandstats")
        calls = usec = 0
        for name in ("cmdstat_evalsha", "cmdstat_eval"):
            calls += int(stats.get(name, {}).get("calls", 0))
            usec += int(stats.get(name, {}).get("usec", 0))
        out[port] = (calls, usec)
    return out


def _reset(cluster: LocalCluster) -> None:
    for port in cluster.primaries_ports():
        with cluster.node(port) as node:
            node.config_resetstat()


def _open(cluster: LocalCluster, layout: str, wait: int) -> tuple[Ledger, Counting]:
    engine = Counting(cluster.url, timeout_s=5.0, wait_replicas=wait)
    if layout.startswith("spread"):
        leased = ("limit:*:",) if layout == "spread + leases" else ()
        return SpreadLedger(engine, leased=leased), engine
    return engine, engine


def _run(ledger: Ledger, threads: int, cycles: int, tag: str) -> list[float]:
    """``cycles`` calls per thread; returns the latencies (s) of thread 0's calls."""
    latencies: list[float] = []

    def work(n: int) -> None:
        rng = random.Random(n)
        for i in range(cycles):
            call = scopes(rng)
            start = time.perf_counter()
            rid = f"{tag}-{n}-{i}"
            ledger.reserve(rid, call, 5_000, 700, 900)
            ledger.commit(rid, 3_000, 500, call)
            if n == 0:
                latencies.append(time.perf_counter() - start)

    pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return latencies


def measure_layout(cluster: LocalCluster, layout: str, cycles: int, wait: int = 0) -> Layout:
    cluster.flush()
    ledger, engine = _open(cluster, layout, wait)
    _run(ledger, 1, 20, "warm")  # connections, scripts, first slices
    if isinstance(ledger, SpreadLedger):
        ledger.flush_leases()
    engine.runs.clear()
    _reset(cluster)
    # Latency from one thread alone, then load from four (server cost per call is the same).
    latencies = _run(ledger, 1, max(cycles // 4, 20), "lat")
    threads = 4
    _run(ledger, threads, cycles, "load")
    calls = max(cycles // 4, 20) + threads * cycles
    stats = _stats(cluster)
    runs = dict(engine.runs)
    global_us = global_cmds = lease_us = 0.0
    if isinstance(ledger, SpreadLedger) and ledger.leases.prefixes:
        global_cmds = runs.get("lease", 0) / calls
        lease_us = _lease_script_us(cluster, ledger)
        global_us = global_cmds * lease_us
    ledger.close()
    return Layout(
        name=layout + (f", wait={wait}" if wait else ""),
        calls=calls,
        trips=sum(runs.values()) / calls,
        server_us=sum(u for _, u in stats.values()) / calls,
        shard_us={p: u / calls for p, (_, u) in stats.items()},
        shard_cmds={p: c / calls for p, (c, _) in stats.items()},
        global_us=global_us,
        global_cmds=global_cmds,
        lease_us=lease_us,
        p50_ms=statistics.median(latencies) * 1000,
    )


def _lease_script_us(cluster: LocalCluster, ledger: SpreadLedger) -> float:
    """One lease script's server time: calls on the global scope alone, each taking a slice and
    giving it back (two lease scripts, nothing else)."""
    rng = random.Random(0)
    glob = scopes(rng)[2:]
    _reset(cluster)
    for i in range(50):
        ledger.reserve(f"lease-{i}", glob, 5_000, 700, 900)
        ledger.commit(f"lease-{i}", 3_000, 500, glob)
        ledger.flush_leases()
    calls, usec = map(sum, zip(*_stats(cluster).values(), strict=True))
    return usec / max(calls, 1)


def command_overhead_us(cluster: LocalCluster, requests: int) -> float:
    """What a shard spends on a command beyond its script: 1 s / the rate of a trivial EVALSHA
    under 50 clients, less that script's own time."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        raise RuntimeError("redis-benchmark not found: scripts/dev.sh installs redis-tools")
    port = cluster.primaries_ports()[0]
    with cluster.node(port) as node:
        sha = str(node.script_load("return 1"))
        node.config_resetstat()
    out = subprocess.run(
        [binary, "-h", "127.0.0.1", "-p", str(port), "-n", str(requests), "-c", "50",
         "-P", "1", "--csv", "EVALSHA", sha, "0"],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout  # fmt: skip
    rate = float(out.strip().splitlines()[-1].split(",")[1].strip('"'))
    with cluster.node(port) as node:
        own = float(node.info("commandstats")["cmdstat_evalsha"]["usec_per_call"])
    return max(1e6 / rate - own, 0.0)


def projection(layout: Layout, overhead: float, shards: int) -> float:
    """Budgeted calls/s a fleet gets from ``shards`` one-core shards (see the module doc)."""
    cost = layout.server_us + overhead * sum(layout.shard_cmds.values())
    if layout.name.startswith("one slot"):
        return 1e6 / cost  # every call on the one shard of {ledger}, whatever the count
    global_cost = layout.global_us + overhead * layout.global_cmds
    spread = cost - global_cost
    # The global shard also serves every process's periodic flush, whatever the call rate.
    fixed = PROCESSES * (layout.lease_us + overhead) / 1e6  # share of the global shard's second
    # Busiest shard: an even share of user/tenant scripts, plus the global scope's scripts.
    return (1 - fixed) * 1e6 / (spread / shards + global_cost)


def measure(cycles: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch:
        cluster = LocalCluster(Path(scratch), replicas=1).start()
        try:
            layouts = [
                measure_layout(cluster, "one slot", cycles),
                measure_layout(cluster, "spread, no leases", cycles),
                measure_layout(cluster, "spread + leases", cycles),
                measure_layout(cluster, "one slot", cycles, wait=1),
                measure_layout(cluster, "spread + leases", cycles, wait=1),
            ]
            overhead = command_overhead_us(cluster, max(cycles * 20, 2_000))
        finally:
            cluster.stop()
    return {"layouts": layouts, "overhead": overhead}


def table(results: dict[str, Any]) -> str:
    layouts: list[Layout] = results["layouts"]
    overhead: float = results["overhead"]
    lines = [
        "per budgeted call (user + tenant + global * scopes; 3 primaries, 1 replica each)",
        f"{'layout':<26}{'trips':>7}{'server µs':>11}{'busiest shard µs':>18}{'p50 ms':>8}",
    ]
    for layout in layouts:
        busiest = max(layout.shard_us.values())
        lines.append(
            f"{layout.name:<26}{layout.trips:>7.2f}{layout.server_us:>11.1f}"
            f"{busiest:>18.1f}{layout.p50_ms:>8.3f}"
        )
    lines.append(
        f"a shard's cost per command beyond its script: {overhead:.1f} µs "
        "(redis-benchmark, EVALSHA 'return 1', 50 clients)"
    )
    lines.append("")
    lines.append(
        f"projected fleet budgeted calls/s (one core per shard; {PROCESSES:,} processes "
        "flushing leases 1/s; on paper)"
    )
    lines.append(f"{'layout':<26}" + "".join(f"{f'{n} shard(s)':>13}" for n in SHARDS))
    for layout in layouts:
        if "wait" in layout.name or "no leases" in layout.name:
            continue
        cells = "".join(f"{projection(layout, overhead, n):>13,.0f}" for n in SHARDS)
        lines.append(f"{layout.name:<26}{cells}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description="What one budgeted call costs a Redis Cluster.")
    parser.add_argument("--quick", action="store_true", help="few calls: checks the code runs")
    args = parser.parse_args()
    cycles = 50 if args.quick else 1_500
    print(table(measure(cycles)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
