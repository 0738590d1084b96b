"""What pricing one call costs: genai-prices' calc_price against costspan's cached rates.

Both price the same stream of usages (token counts vary call by call, so nothing is a repeated
result) for a mix of models, interleaved in rounds. costspan's first call per model fills its
rate cache (a few calc_price probes); the table reports the median after that, as the target
("at most 5 µs median per call after the first call for a model") asks.
"""

from __future__ import annotations

import random
import statistics
import time

from genai_prices import Usage, calc_price

from costspan._pricing import PROVIDER_IDS, Pricer
from costspan._usage import TokenUsage

MODELS = [
    ("openai", "gpt-4o-mini"),
    ("openai", "gpt-5"),
    ("anthropic", "claude-sonnet-4-5"),
    ("gcp.gemini", "gemini-2.5-pro"),
    ("groq", "llama-3.3-70b-versatile"),
]


def measure(rounds: int, calls: int, seed: int = 7) -> dict[str, float]:
    rng = random.Random(seed)
    pricer = Pricer()
    now = time.time_ns()
    first_call: list[float] = []
    for provider, model in MODELS:  # first calls: fill the cache, timed separately
        start = time.perf_counter_ns()
        pricer.price(TokenUsage(100, 10), models=(model,), provider=provider, when_ns=now)
        first_call.append((time.perf_counter_ns() - start) / 1000)
    samples: dict[str, list[float]] = {"calc_price": [], "costspan cached": []}
    for _ in range(rounds):
        for provider, model in MODELS:
            usages = [
                (rng.randint(50, 20_000), rng.randint(1, 2_000), rng.randint(0, 50))
                for _ in range(calls)
            ]
            for inp, out, cached in usages:
                start = time.perf_counter_ns()
                calc_price(
                    Usage(input_tokens=inp, cache_read_tokens=cached, output_tokens=out),
                    model,
                    provider_id=PROVIDER_IDS[provider],
                )
                samples["calc_price"].append((time.perf_counter_ns() - start) / 1000)
            for inp, out, cached in usages:
                start = time.perf_counter_ns()
                pricer.price(
                    TokenUsage(inp, out, cached), models=(model,), provider=provider, when_ns=now
                )
                samples["costspan cached"].append((time.perf_counter_ns() - start) / 1000)
    result = {name: statistics.median(values) for name, values in samples.items()}
    result["costspan first call"] = statistics.median(first_call)
    return result


def table(medians: dict[str, float]) -> str:
    base = medians["calc_price"]
    lines = [f"{'pricing one call':<24}{'median µs':>11}{'x calc_price':>14}"]
    for name in ("calc_price", "costspan first call", "costspan cached"):
        lines.append(f"{name:<24}{medians[name]:>11.1f}{medians[name] / base:>14.3f}")
    cached = medians["costspan cached"]
    verdict = "meets" if cached <= 5 else "MISSES"
    lines.append(f"\ncached pricing takes {cached:.1f} µs per call: {verdict} the 5 µs target")
    return "\n".join(lines)
