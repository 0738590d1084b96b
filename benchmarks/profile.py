"""Where costspan's own time goes in one call: a pyinstrument profile, summed by function.

Runs one kind of call many times (plain, streamed, or plain under an active in-memory budget) on
the benchmark's in-process transport, samples it with pyinstrument, and keeps only costspan's own
time: everything under costspan's wrapper and stream proxy except the wrapped openai call
itself (request building, the transport, response parsing). That time is then summed two ways:

- by *step*: the inclusive time of costspan's named steps (preparing the call, the span start,
  admission, accounting, the span's attributes, metrics...);
- by *function*: self time per function (costspan's, the SDK's, the standard library's).

    .venv/bin/python benchmarks/profile.py              # all three, 3,000 calls each
    .venv/bin/python benchmarks/profile.py budget -n 5000

pyinstrument samples every 100 µs; a sample's time goes to the function on top of the stack, so
small shares (< 2 %) are noise.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import openai
import overhead
from pyinstrument import Profiler
from pyinstrument.frame import Frame

# (file fragment, function) of the frames whose subtree is costspan's own time.
_ROOTS = (
    ("costspan/_wrappers.py", "traced_method"),
    ("costspan/_streams.py", "__next__"),
)
# Steps reported by inclusive time: (label, file fragment, function).
STEPS: tuple[tuple[str, str, str], ...] = (
    ("prepare (Call.__init__, with span start)", "costspan/_wrappers.py", "__init__"),
    ("  span start (Invocation.__init__)", "costspan/_invocation.py", "__init__"),
    ("admission (_admit.admit)", "costspan/_admit.py", "admit"),
    ("  estimate (_estimate.project)", "costspan/_estimate.py", "project"),
    ("    count input (_input.chat)", "costspan/_input.py", "chat"),
    ("  ledger reserve", "ledgers/_memory.py", "reserve"),
    ("response outcome", "costspan/_operations.py", "response_outcome"),
    ("stream chunks (StreamState.feed)", "costspan/_streams.py", "feed"),
    ("end: account (usage, price, settle, record)", "costspan/_invocation.py", "_account"),
    ("  price", "costspan/_invocation.py", "_price"),
    ("  cost metrics", "costspan/_invocation.py", "_cost_metrics"),
    ("  settle", "costspan/_invocation.py", "_settle"),
    ("  spend record", "costspan/_invocation.py", "_record"),
    ("end: span attributes (_write)", "costspan/_invocation.py", "_write"),
    ("end: call metrics (_record_metrics)", "costspan/_invocation.py", "_record_metrics"),
    ("end: span.end()", "opentelemetry/sdk/trace/__init__.py", "end"),
)


@dataclass
class Profile:
    calls: int
    own_s: float = 0.0
    by_step: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    by_function: dict[str, float] = field(default_factory=lambda: defaultdict(float))


def _is(frame: Frame, fragment: str, function: str) -> bool:
    return frame.function == function and fragment in (frame.file_path or "")


def _is_wrapped_call(parent: Frame, child: Frame) -> bool:
    """The openai call (or stream read) costspan wraps: not costspan's time."""
    path = child.file_path or ""
    return (
        any(_is(parent, f, fn) for f, fn in _ROOTS)
        and "/openai/" in path
        and child.function in ("create", "parse", "__next__", "wrapper")
    )


def _short(frame: Frame) -> str:
    path = frame.file_path or "?"
    for marker in ("site-packages/", "src/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{frame.function} ({path.lstrip('/')}:{frame.line_no})"


def _own_time(frame: Frame, result: Profile, steps_open: frozenset[str]) -> float:
    """Sum the frame's subtree (minus the wrapped call) into ``result``; returns its time."""
    if frame.is_synthetic:  # pyinstrument's "[self]" leaves: counted in their parent
        return 0.0
    own = frame.time
    spent = frame.total_self_time
    if spent:
        result.by_function[_short(frame)] += spent
    labels = [label for label, f, fn in STEPS if _is(frame, f, fn) and label not in steps_open]
    opened = steps_open | set(labels) if labels else steps_open
    for child in frame.children:
        if child.is_synthetic:
            continue
        if _is_wrapped_call(frame, child):
            own -= child.time
        else:
            own -= child.time - _own_time(child, result, opened)
    for label in labels:
        result.by_step[label] += own
    return own


def _walk(frame: Frame, result: Profile) -> None:
    if any(_is(frame, f, fn) for f, fn in _ROOTS):
        result.own_s += _own_time(frame, result, frozenset())
        return
    for child in frame.children:
        _walk(child, result)


MODES: dict[str, tuple[Callable[[overhead.Providers], AbstractContextManager[object]], str]] = {
    "plain": (overhead.costspan_variant, "plain"),
    "stream": (overhead.costspan_variant, "stream"),
    "budget": (overhead.costspan_budget_variant, "plain"),
}


def profile(mode: str, calls: int) -> Profile:
    variant, kind = MODES[mode]
    call: Callable[[openai.OpenAI], None] = overhead.MODES[kind]
    client = overhead.make_client()
    providers = overhead.Providers()
    with variant(providers):
        for _ in range(200):  # warm: tokenizers, prices, pydantic models
            call(client)
        profiler = Profiler(interval=0.0001)
        profiler.start()
        for _ in range(calls):
            call(client)
        session = profiler.stop()
    result = Profile(calls)
    root = session.root_frame()
    if root is not None:
        _walk(root, result)
    return result


def table(mode: str, result: Profile, top: int = 15) -> str:
    own = result.own_s or 1e-9
    per_call = result.own_s / result.calls * 1e6
    lines = [f"{mode}: costspan's own time {per_call:.0f} µs per call (sampled)"]
    lines.append(f"  {'step (inclusive)':<46}{'µs/call':>9}{'share':>8}")
    for label, _, _ in STEPS:
        spent = result.by_step.get(label, 0.0)
        if spent:
            lines.append(
                f"  {label:<46}{spent / result.calls * 1e6:>9.1f}{spent / own * 100:>7.0f}%"
            )
    lines.append(f"  {'function (self time)':<72}{'share':>8}")
    ranked = sorted(result.by_function.items(), key=lambda kv: kv[1], reverse=True)
    for name, spent in ranked[:top]:
        lines.append(f"  {name[:72]:<72}{spent / own * 100:>7.1f}%")
    return "\n".join(lines)


def _modes(arg: str) -> Iterator[str]:
    yield from (MODES if arg == "all" else [arg])


def main() -> int:
    parser = argparse.ArgumentParser(description="Where costspan's own time goes in one call.")
    parser.add_argument("mode", nargs="?", default="all", choices=[*MODES, "all"])
    parser.add_argument("-n", "--calls", type=int, default=3000)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    for mode in _modes(args.mode):
        print(table(mode, profile(mode, args.calls), args.top))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
