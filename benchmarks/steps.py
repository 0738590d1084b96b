"""Where a call's added time goes, measured in place: wall-clock time per costspan step.

``profile.py`` samples, and sampling inflates small functions; this tool times costspan's named
steps directly, under the conditions of the overhead benchmark (the same in-process transport,
calls made one by one between the openai client's own work). Each step is wrapped in a timer
for the run (about 0.3 µs per step added), and the median and mean of its duration per call
are printed, with how many times it ran per call. Steps nest: an indented row is part of the
row above it.

    .venv/bin/python benchmarks/steps.py               # plain, stream and budget, 3,000 calls
    .venv/bin/python benchmarks/steps.py budget -n 5000

Code run in place costs two to three times what the same code costs in a tight loop (the
caches are cold after the openai client's work): compare the rows with each other, and the
total with the overhead benchmark's, not with micro-benchmarks.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import overhead
from opentelemetry.sdk import trace as sdk_trace

from costspan import _admit, _invocation, _reservation, _streams, _wrappers
from costspan.ledgers import _memory

# (label, owner, attribute): the steps, in the order a call runs them; a label's indentation is
# its nesting. Module-level functions are timed where their callers look them up.
STEPS: tuple[tuple[str, object, str], ...] = (
    ("prepare (Call.__init__)", _wrappers.Call, "__init__"),
    ("  span start (SDK start_span, processors)", sdk_trace.Tracer, "start_span"),
    ("admission (Call.admit)", _wrappers.Call, "admit"),
    ("  admit()", _wrappers, "admit"),
    ("    estimate (project)", _admit, "project"),
    ("    ledger reserve", _memory.MemoryLedger, "reserve"),
    ("    hold renewal (hold_while_running)", _reservation.Admission, "hold_while_running"),
    ("response (Call.handle)", _wrappers.Call, "handle"),
    ("stream chunks (StreamState.feed, per chunk)", _streams.StreamState, "feed"),
    ("  account (usage, price, settle, record)", _invocation.Invocation, "_account"),
    ("    price", _invocation.Invocation, "_price"),
    ("    settle", _invocation.Invocation, "_settle"),
    ("      ledger commit", _memory.MemoryLedger, "commit"),
    ("      calibration", _invocation.Invocation, "_calibrate"),
    ("    spend record", _invocation.Invocation, "_record"),
    ("  span attributes (_write)", _invocation.Invocation, "_write"),
    ("  call metrics (_record_metrics)", _invocation.Invocation, "_record_metrics"),
    ("  span end (SDK end, processors)", sdk_trace.Span, "end"),
)

MODES: dict[str, tuple[Callable[[overhead.Providers], Any], str]] = {
    "plain": (overhead.costspan_variant, "plain"),
    "stream": (overhead.costspan_variant, "stream"),
    "budget": (overhead.costspan_budget_variant, "plain"),
}


@contextmanager
def _timing(owner: object, name: str, samples: list[int]) -> Iterator[None]:
    original = getattr(owner, name)
    clock = time.perf_counter_ns

    @functools.wraps(original)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = clock()
        try:
            return original(*args, **kwargs)
        finally:
            samples.append(clock() - start)

    setattr(owner, name, timed)
    try:
        yield
    finally:
        setattr(owner, name, original)


def measure(mode: str, calls: int) -> dict[str, list[int]]:
    """Nanoseconds per step and call for ``calls`` calls of ``mode`` (after a warm-up)."""
    variant, kind = MODES[mode]
    call = overhead.MODES[kind]
    client = overhead.make_client()
    samples: dict[str, list[int]] = {label: [] for label, _, _ in STEPS}
    with variant(overhead.Providers()), ExitStack() as stack:
        for label, owner, name in STEPS:
            stack.enter_context(_timing(owner, name, samples[label]))
        for _ in range(300):  # warm: tokenizers, prices, pydantic models
            call(client)
        for kept in samples.values():
            kept.clear()
        for _ in range(calls):
            call(client)
    return samples


def table(mode: str, samples: dict[str, list[int]], calls: int) -> str:
    lines = [
        f"{mode}: {calls} calls",
        f"  {'step':<46}{'median µs':>11}{'mean µs':>10}{'per call':>9}",
    ]
    for label, kept in samples.items():
        if not kept:
            continue
        median = statistics.median(kept) / 1000
        mean = statistics.fmean(kept) / 1000
        lines.append(f"  {label:<46}{median:>11.1f}{mean:>10.1f}{len(kept) / calls:>9.1f}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description="Where a call's added time goes, in place.")
    parser.add_argument("mode", nargs="?", default="all", choices=[*MODES, "all"])
    parser.add_argument("-n", "--calls", type=int, default=3000)
    args = parser.parse_args()
    for mode in MODES if args.mode == "all" else [args.mode]:
        print(table(mode, measure(mode, args.calls), args.calls))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
