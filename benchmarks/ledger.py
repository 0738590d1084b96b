"""What a budget check costs: in-memory reserve + commit cycles, next to a bare locked dict.

The baseline is the least a thread-safe counter can cost in Python: a lock around a dict
increment. The cycle is what every call under a budget pays: reserve its estimate in each scope
(all or nothing), then commit the actual cost.
"""

from __future__ import annotations

import statistics
import threading
import time

from costspan.ledgers import MemoryLedger, ScopeLimit


def measure(rounds: int, cycles: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {"locked dict +=": [], "1 scope": [], "3 scopes": []}
    lock = threading.Lock()
    counter: dict[str, int] = {"spent": 0}
    for r in range(rounds):
        ledger = MemoryLedger()
        one = [ScopeLimit("budget:a", cap_micros=10**15)]
        three = [*one, ScopeLimit("user:u", cap_micros=10**15), ScopeLimit("global", 10**15)]
        for i in range(cycles):
            start = time.perf_counter_ns()
            with lock:
                counter["spent"] += 5
            samples["locked dict +="].append((time.perf_counter_ns() - start) / 1000)
            for name, scopes in (("1 scope", one), ("3 scopes", three)):
                rid = f"{name}-{r}-{i}"
                start = time.perf_counter_ns()
                ledger.reserve(rid, scopes, 5_000, 700, 900)
                ledger.commit(rid, 3_000, 500)
                samples[name].append((time.perf_counter_ns() - start) / 1000)
    return {name: statistics.median(values) for name, values in samples.items()}


def table(medians: dict[str, float]) -> str:
    base = medians["locked dict +="]
    lines = [f"{'in-memory ledger':<24}{'median µs':>11}{'x locked dict':>15}"]
    for name, value in medians.items():
        lines.append(f"{name:<24}{value:>11.2f}{value / base:>15.1f}")
    worst = max(medians["1 scope"], medians["3 scopes"])
    verdict = "meets" if worst <= 20 else "MISSES"
    lines.append(f"\nreserve + commit takes at most {worst:.1f} µs: {verdict} the 20 µs target")
    return "\n".join(lines)
