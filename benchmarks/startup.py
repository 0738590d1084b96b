"""Start-up and footprint: import time, the first budgeted call, memory over many calls.

Each figure comes from fresh interpreters (this file run as a script with a mode), so nothing
the other benchmarks loaded or allocated counts:

- ``import``: how long ``import costspan`` takes on top of importing opentelemetry-sdk (its
  tracer and meter providers, which every instrumented process loads anyway); the median of
  several interpreters. Bytecode is cached in a private directory first (an installed package
  has its bytecode compiled; this checkout may not), and also measured without it.
- ``first``: ``instrument()``, then the first and the second budgeted call. The application's
  own first call (uninstrumented, loading openai's models) is made before, as any application
  does it; costspan's warm-up (tokenizer, price tables) runs in the background meanwhile, and
  the first call after it finished must cost at most 20 ms more than the second. A first call
  made at once, while the warm-up still runs, waits for what it needs and is shown too.
- ``memory``: resident memory (RSS) after warming up (enough calls to fill the bounded record
  buffer, the ledger's settled window and the calibration), then its growth over 50,000 more
  calls under one budget, and over 6,000 calls each under its own per-request budget
  (``with costspan.budget(...)`` around one call).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
FIRST_CALL_TARGET_MS = 20.0
IMPORT_TARGET_MS = 100.0
PER_BUDGET_TARGET_MB = 1.5


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def _run(mode: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), mode, *args],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
        env=env,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{mode} failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# -- what each fresh interpreter does ------------------------------------------------------------
def _child_import() -> dict[str, Any]:
    start = time.perf_counter()
    import opentelemetry.sdk.metrics
    import opentelemetry.sdk.trace  # noqa: F401

    sdk = time.perf_counter()
    import costspan  # noqa: F401

    done = time.perf_counter()
    heavy = ("costspan._cli", "redis", "tiktoken", "rich", "genai_prices", "wrapt", "asyncio")
    return {
        "sdk_ms": (sdk - start) * 1000,
        "costspan_ms": (done - sdk) * 1000,
        "loaded": [name for name in heavy if name in sys.modules],
    }


def _child_first(wait: str) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    import overhead

    import costspan
    from costspan import _runtime

    client = overhead.make_client()
    providers = overhead.Providers()
    overhead.plain(client)  # the app's own first call
    start = time.perf_counter()
    costspan.instrument(tracer_provider=providers.tracer, meter_provider=providers.meter)
    instrument_ms = (time.perf_counter() - start) * 1000
    warm_ms = 0.0
    if wait == "warm":
        start = time.perf_counter()
        _runtime.warm_up().join(60)
        warm_ms = (time.perf_counter() - start) * 1000 + instrument_ms
    times: list[float] = []
    with costspan.budget(usd=1000):
        for _ in range(3):
            start = time.perf_counter()
            overhead.plain(client)
            times.append((time.perf_counter() - start) * 1000)
    return {"instrument_ms": instrument_ms, "warm_ms": warm_ms, "calls_ms": times}


def _child_memory(calls: str, budgets: str) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    import overhead

    import costspan
    from costspan._records import DEFAULT_MAX_RECORDS

    client = overhead.make_client()
    providers = overhead.Providers()
    costspan.instrument(tracer_provider=providers.tracer, meter_provider=providers.meter)
    n_calls, n_budgets = int(calls), int(budgets)
    # Warm up: fill every bounded window once, with both kinds of calls measured below (the
    # record buffer, the ledger's window of settled reservations, the calibration).
    with costspan.budget(usd=1_000_000):
        for _ in range(DEFAULT_MAX_RECORDS + 2_000):
            overhead.plain(client)
    for _ in range(SETTLED_KEPT + 1_000):
        with costspan.budget(usd=1):
            overhead.plain(client)
    warm = _rss_mb()
    for _ in range(n_budgets):
        with costspan.budget(usd=1):
            overhead.plain(client)
    after_budgets = _rss_mb()
    with costspan.budget(usd=1_000_000):
        for _ in range(n_calls):
            overhead.plain(client)
    after_calls = _rss_mb()
    return {
        "warm_mb": warm,
        "calls": n_calls,
        "calls_growth_mb": after_calls - after_budgets,
        "budgets": n_budgets,
        "budgets_growth_mb": after_budgets - warm,
    }


SETTLED_KEPT = 4096
"""The in-memory ledger's window of settled reservations (its ``settled_kept``)."""


# -- the parent ----------------------------------------------------------------------------------
def measure(
    imports: int = 7, firsts: int = 3, calls: int = 50_000, budgets: int = 6_000
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as cache:
        cached = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        cached["PYTHONPYCACHEPREFIX"] = cache
        _run("import", env=cached)  # compiles and caches the bytecode
        with_bytecode = [_run("import", env=cached) for _ in range(imports)]
    uncached = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    uncached.pop("PYTHONPYCACHEPREFIX", None)
    no_bytecode = [_run("import", env=uncached) for _ in range(max(3, imports // 2))]
    warm = [_run("first", "warm") for _ in range(firsts)]
    cold = [_run("first", "now") for _ in range(firsts)]
    memory = _run("memory", str(calls), str(budgets))
    return {
        "import": with_bytecode,
        "import_no_bytecode": no_bytecode,
        "first_warm": warm,
        "first_now": cold,
        "memory": memory,
    }


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def table(result: dict[str, Any]) -> str:
    lines: list[str] = []
    imports = result["import"]
    on_top = _median(imports, "costspan_ms")
    raw = _median(result["import_no_bytecode"], "costspan_ms")
    loaded = sorted({name for run in imports for name in run["loaded"]})
    verdict = "meets" if on_top <= IMPORT_TARGET_MS else "MISSES"
    sdk = _median(imports, "sdk_ms")
    lines.append(
        f"import costspan: {on_top:.1f} ms on top of opentelemetry-sdk ({sdk:.1f} ms), median of "
        f"{len(imports)} interpreters: {verdict} the {IMPORT_TARGET_MS:g} ms target"
    )
    lines.append(
        f"  without cached bytecode (compiling costspan's modules): {raw:.1f} ms; heavy modules "
        f"loaded: {', '.join(loaded) or 'none'}"
    )
    warm = result["first_warm"]
    first = statistics.median(run["calls_ms"][0] for run in warm)
    second = statistics.median(run["calls_ms"][1] for run in warm)
    extra = statistics.median(run["calls_ms"][0] - run["calls_ms"][1] for run in warm)
    verdict = "meets" if extra <= FIRST_CALL_TARGET_MS else "MISSES"
    lines.append(
        f"first budgeted call after start-up: {first:.1f} ms, second {second:.1f} ms: the first "
        f"costs {extra:.1f} ms more: {verdict} the {FIRST_CALL_TARGET_MS:g} ms target"
    )
    lines.append(
        f"  instrument() returned in {_median(warm, 'instrument_ms'):.1f} ms; the background "
        f"warm-up was done {_median(warm, 'warm_ms'):.0f} ms after it was called"
    )
    cold = result["first_now"]
    lines.append(
        "  a first call made at once, while the warm-up runs: "
        f"{statistics.median(run['calls_ms'][0] for run in cold):.1f} ms (it waits for it)"
    )
    memory = result["memory"]
    per_budget = memory["budgets_growth_mb"]
    verdict = "meets" if per_budget <= PER_BUDGET_TARGET_MB else "MISSES"
    lines.append(
        f"memory: RSS {memory['warm_mb']:.1f} MB once warm; {memory['calls']:,} more budgeted "
        f"calls: {memory['calls_growth_mb']:+.1f} MB"
    )
    lines.append(
        f"  {memory['budgets']:,} per-request budgets (one call each): "
        f"{per_budget:+.2f} MB ({per_budget * 1e6 / max(memory['budgets'], 1):.0f} bytes each): "
        f"{verdict} the {PER_BUDGET_TARGET_MB:g} MB target"
    )
    return "\n".join(lines)


def main() -> int:
    mode, *args = sys.argv[1:]
    child = {"import": _child_import, "first": _child_first, "memory": _child_memory}[mode]
    print(json.dumps(child(*args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
