"""Shared ledgers: reserve+commit cycles per second on memory, SQLite and Redis, beside
redis-benchmark's plain INCR against the same server in the same run.

A cycle holds a call's estimate in three scopes (user, tenant, global) and commits its actual
cost: what every budgeted LLM call costs the ledger. Also measured: Redis round trips per cycle
(the server's own command count), the ledger's share of a budgeted call's latency through the
local OpenAI-compatible server, and what a dead Redis adds per call behind the circuit breaker.
"""

from __future__ import annotations

import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import openai
import redis
from opentelemetry.sdk.trace import TracerProvider

import costspan
from costspan._runtime import set_ledger
from costspan.ledgers import (
    FailSafeLedger,
    Ledger,
    MemoryLedger,
    RedisLedger,
    ScopeLimit,
    SQLiteLedger,
)
from costspan.testing import OpenAICompatibleServer

SCOPES = [
    ScopeLimit("user:u1", cap_micros=10**15),
    ScopeLimit("tenant:t1", cap_micros=10**15),
    ScopeLimit("global", cap_micros=10**15),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Redis:
    def __init__(self, directory: str) -> None:
        self.port = _free_port()
        binary = shutil.which("redis-server") or "redis-server"
        self.process = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", directory,
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        self.url = f"redis://127.0.0.1:{self.port}/0"
        for _ in range(500):
            try:
                redis.Redis(port=self.port).ping()
                return
            except redis.ConnectionError:
                time.sleep(0.01)
        raise RuntimeError("redis-server did not start")

    def script_calls(self) -> int:
        stats = redis.Redis(port=self.port).info("commandstats")
        return sum(
            int(v["calls"]) for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval")
        )

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def _cycles_per_s(ledger: Ledger, threads: int, cycles: int, tag: str) -> float:
    def work(n: int) -> None:
        for i in range(cycles):
            rid = f"{tag}-{n}-{i}"
            ledger.reserve(rid, SCOPES, 5_000, 700, 900)
            ledger.commit(rid, 3_000, 500, SCOPES)

    pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    start = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return threads * cycles / (time.perf_counter() - start)


def _incr_rate(port: int, clients: int, requests: int) -> float | None:
    """redis-benchmark's INCR requests per second (None when redis-benchmark is missing)."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return None
    out = subprocess.run(
        [binary, "-h", "127.0.0.1", "-p", str(port), "-t", "incr", "-n", str(requests),
         "-c", str(clients), "-P", "1", "--csv"],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout  # fmt: skip
    for line in out.splitlines():
        if line.startswith('"INCR"'):
            return float(line.split(",")[1].strip('"'))
    return None


def _py_incr_rate(url: str, requests: int) -> float:
    """Plain INCRs per second from one Python thread (redis-py): one round trip each."""
    client = redis.Redis.from_url(url)
    client.incr("bench:incr")
    start = time.perf_counter()
    for _ in range(requests):
        client.incr("bench:incr")
    rate = requests / (time.perf_counter() - start)
    client.close()
    return rate


def _call_ms(engines: dict[str, Ledger | None], calls: int, base_url: str) -> dict[str, float]:
    """Median ms of one budgeted chat call (instrumented) on each ledger (None: no budget),
    measured in interleaved rounds so that drift in the machine's speed hits every engine."""
    client = openai.OpenAI(base_url=base_url, api_key="k", max_retries=0)
    messages: Any = [{"role": "user", "content": "Hello"}]
    times: dict[str, list[float]] = {name: [] for name in engines}
    rounds = max(calls // 20, 1)
    for r in range(rounds + 1):
        for name, ledger in engines.items():
            set_ledger(ledger)
            for _ in range(20):
                start = time.perf_counter()
                if ledger is None:
                    client.chat.completions.create(model="gpt-4o-mini", messages=messages)
                else:
                    with costspan.budget(usd=1000):
                        client.chat.completions.create(model="gpt-4o-mini", messages=messages)
                if r:  # round 0 warms up: prices, the tokenizer, connections
                    times[name].append((time.perf_counter() - start) * 1000)
    client.close()
    set_ledger(None)
    return {name: statistics.median(values) for name, values in times.items()}


def measure(cycles: int, calls: int) -> dict[str, object]:
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as scratch:
        server = _Redis(scratch)
        try:
            engines: dict[str, Ledger] = {
                "memory": MemoryLedger(),
                "sqlite": SQLiteLedger(Path(scratch) / "ledger.db"),
                "redis": RedisLedger(server.url, timeout_s=5.0),
            }
            rates: dict[tuple[str, int], float] = {}
            for name, ledger in engines.items():
                _cycles_per_s(ledger, 1, 20, f"warm-{name}")
                for threads in (1, 8):
                    per_thread = cycles if threads == 1 else max(cycles // threads, 10)
                    rates[(name, threads)] = _cycles_per_s(
                        ledger, threads, per_thread, f"{name}-{threads}"
                    )
            before = server.script_calls()
            _cycles_per_s(engines["redis"], 1, 100, "count")
            results["round_trips"] = (server.script_calls() - before) / 100
            results["rates"] = rates
            results["py_incr"] = _py_incr_rate(server.url, max(cycles * 2, 200))
            results["incr_c1"] = _incr_rate(server.port, 1, max(cycles * 5, 1000))
            results["incr_c50"] = _incr_rate(server.port, 50, max(cycles * 25, 5000))

            tracer_provider = TracerProvider()
            costspan.instrument(tracer_provider=tracer_provider)
            with OpenAICompatibleServer() as llm:
                engines_by_name: dict[str, Ledger | None] = {
                    "no budget": None,
                    "memory": MemoryLedger(),
                    "sqlite": engines["sqlite"],
                    "redis": engines["redis"],
                }
                results["call_ms"] = _call_ms(engines_by_name, calls, llm.base_url)
            costspan.uninstrument()
            tracer_provider.shutdown()
            for ledger in engines.values():
                ledger.close()
        finally:
            server.stop()

    # A dead Redis behind the circuit breaker: nothing listens on the port.
    dead = FailSafeLedger(RedisLedger(f"redis://127.0.0.1:{_free_port()}/0"), "local")
    start = time.perf_counter()
    n = max(cycles, 100)
    for i in range(n):
        dead.reserve(f"d{i}", SCOPES, 5_000, 700, 900)
        dead.commit(f"d{i}", 3_000, 500, SCOPES)
    results["dead_ms_per_call"] = (time.perf_counter() - start) * 1000 / n
    dead._outbox.clear()  # nothing will replay it
    dead.engine.close()
    return results


def table(results: dict[str, object]) -> str:
    rates: dict[tuple[str, int], float] = results["rates"]  # type: ignore[assignment]
    incr_c1 = results["incr_c1"]
    lines = [f"{'reserve+commit, 3 scopes':<28}{'cycles/s':>10}{'x INCR -c 1':>13}"]
    for (name, threads), rate in rates.items():
        ratio = f"{rate / incr_c1:>13.3f}" if isinstance(incr_c1, float) else f"{'n/a':>13}"
        lines.append(f"{f'{name}, {threads} thread(s)':<28}{rate:>10.0f}{ratio}")
    py_incr = float(results["py_incr"])  # type: ignore[arg-type]
    py_ratio = f"{py_incr / incr_c1:>13.3f}" if isinstance(incr_c1, float) else ""
    lines.append(f"{'redis-py INCR, 1 thread':<28}{py_incr:>10.0f}{py_ratio}")
    for label, key in (
        ("redis-benchmark INCR -c 1", "incr_c1"),
        ("redis-benchmark INCR -c 50", "incr_c50"),
    ):
        value = results[key]
        shown = f"{value:>10.0f}" if isinstance(value, float) else f"{'n/a':>10}"
        lines.append(f"{label:<28}{shown}{'1.000' if key == 'incr_c1' and value else '':>13}")
    calls: dict[str, float] = results["call_ms"]  # type: ignore[assignment]
    lines.append("")
    lines.append(f"{'budgeted chat call':<28}{'median ms':>10}{'ledger share':>14}")
    bare = calls["no budget"]
    for name, ms in calls.items():
        share = "" if name == "no budget" else f"{(ms - bare) / ms:>14.0%}"
        lines.append(f"{name:<28}{ms:>10.3f}{share}")
    one = rates[("redis", 1)]
    trips = float(results["round_trips"])  # type: ignore[arg-type]
    lines.append("")
    lines.append(
        f"Redis: {trips:.1f} round trips per cycle (target 2: one reserve, one commit); "
        f"{one:.0f} cycles/s from one thread: {'meets' if one >= 3000 else 'MISSES'} the "
        f"3,000/s target; {one / (py_incr / 2):.0%} of the two-round-trip bound here "
        f"(redis-py INCR rate / 2 = {py_incr / 2:.0f}/s)"
    )
    dead = float(results["dead_ms_per_call"])  # type: ignore[arg-type]
    lines.append(
        f"dead Redis (circuit breaker, fail mode local): {dead:.3f} ms per call: "
        f"{'meets' if dead <= 5 else 'MISSES'} the 5 ms target"
    )
    return "\n".join(lines)
