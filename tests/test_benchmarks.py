"""The benchmark code runs (numbers from a quick run mean nothing, so none are asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def test_quick_benchmark_prints_its_table() -> None:
    """`benchmarks/run.py --quick` prints a row per variant and a verdict per mode."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/run.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for row in ("bare client", "sdk span (hand-written)", "official genai-openai", "costspan"):
        assert row in result.stdout
    assert "plain: costspan adds" in result.stdout
    assert "stream: costspan adds" in result.stdout
    assert "costspan cached" in result.stdout
    assert "the 5 µs target" in result.stdout
    assert "costspan + budget adds" in result.stdout
    assert "the 0.6x target" in result.stdout
    assert "sdk span + costspan's attrs" in result.stdout
    assert "the span with costspan's attributes alone adds" in result.stdout
    assert "stream, like for like" in result.stdout
    assert "one function per call over costspan's parts adds" in result.stdout
    assert "one function per call over the least machinery adds" in result.stdout
    assert "budget cost per call at 200k tokens of history" in result.stdout
    for row in ("0.5k", "50k", "200k"):
        assert row in result.stdout
    assert "import costspan:" in result.stdout
    assert "first budgeted call after start-up" in result.stdout
    assert "per-request budgets (one call each)" in result.stdout
    assert "the 20 µs target" in result.stdout
    for row in ("memory, 1 thread(s)", "sqlite, 8 thread(s)", "redis, 1 thread(s)"):
        assert row in result.stdout
    assert "redis-benchmark INCR -c 1" in result.stdout
    assert "round trips per cycle" in result.stdout
    assert "the 3,000/s target" in result.stdout
    assert "the 5 ms target" in result.stdout
    for row in ("one slot  ", "spread, no leases", "spread + leases", "one slot, wait=1"):
        assert row in result.stdout
    assert "projected fleet budgeted calls/s" in result.stdout


_PROCESSORS_BY_VARIANT = """
import json, sys
sys.path.insert(0, sys.argv[1])
import overhead
from costspan import CostSpanProcessor

providers = overhead.providers_by_variant()
client = overhead.make_client()
for name, variant in overhead.VARIANTS.items():
    with variant(providers[name]):
        overhead.plain(client)
found = {}
for name in overhead.VARIANTS:
    processors = providers[name].tracer._active_span_processor._span_processors
    found[name] = any(isinstance(p, CostSpanProcessor) for p in processors)
print(json.dumps(found))
"""


def _json_from(script: str) -> Any:
    """What ``script`` prints last, as JSON, run in a fresh interpreter with the benchmarks
    importable (instrumentation and providers are process-wide: no test shares them)."""
    result = subprocess.run(
        [sys.executable, "-c", script, str(ROOT / "benchmarks")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_baseline_variants_run_without_costspans_span_processor() -> None:
    """``instrument()`` leaves a CostSpanProcessor on its tracer provider after
    ``uninstrument()``: the bare, hand-written and official variants must run on providers it
    was never put on, or costspan's processor would price the official instrumentation's spans
    and its own work would be counted in the baseline it is compared with."""
    found = _json_from(_PROCESSORS_BY_VARIANT)
    assert found == {
        "bare client": False,
        "sdk span (hand-written)": False,
        "sdk span + costspan's attrs": False,
        "official genai-openai": False,
        "official, no chunk metric": False,
        "costspan": True,
        "costspan + budget": True,
    }


def test_steps_tool_times_every_step_of_a_budgeted_call_once() -> None:
    """`benchmarks/steps.py budget` finds every step it names (a renamed method would leave its
    row out) and each ran once per call."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/steps.py"), "budget", "-n", "20"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = {
        line.strip().rsplit(None, 3)[0]: line.split()[-1]
        for line in result.stdout.splitlines()[2:]
        if line.strip()
    }
    for step in ("admit()", "ledger reserve", "ledger commit", "price", "span attributes (_write)"):
        assert rows.get(step) == "1.0", result.stdout
    assert "stream chunks (StreamState.feed, per chunk)" not in rows  # a plain call


_LEAN_SPANS = """
import json, sys
sys.path.insert(0, sys.argv[1])
import lean, overhead

start, added = overhead.costspan_attributes()
found = {"costspan": {**start, **added}}
for name in lean.VARIANTS:
    if name in overhead.VARIANTS:
        continue
    snapshots = overhead._Snapshots()
    providers = overhead.Providers()
    providers.tracer.add_span_processor(snapshots)
    with lean.VARIANTS[name](providers):
        overhead.plain(overhead.make_client())
    found[name] = snapshots.end
print(json.dumps(found, default=list))
"""

# The usage and cost of a call: the same numbers on a lean path's span as on costspan's.
_USAGE_AND_COST = (
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.reasoning.output_tokens",
    "gen_ai.usage.cost.amount",
    "gen_ai.usage.cost.currency",
    "gen_ai.usage.cost.source",
)
# What the span contract requires of a budgeted call's span (DESIGN.md, "Telemetry").
_REQUIRED = (
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    *_USAGE_AND_COST,
    "costspan.price.source",
    "costspan.budget.decision",
    "costspan.budget.remaining_usd",
    "gen_ai.request.max_tokens",
    "costspan.budget.output_cap_set",
)


def test_the_lean_paths_write_what_costspan_writes_for_the_same_call() -> None:
    """The lean paths of ``benchmarks/lean.py`` bound what a specialised path could reach only
    if they do the contract's work: each writes the span attributes the contract requires, with
    the usage and cost costspan itself writes for the same call, and the first writes every
    attribute costspan writes."""
    found = _json_from(_LEAN_SPANS)
    ours = found.pop("costspan")
    for name, attributes in found.items():
        for key in _REQUIRED:
            assert key in attributes, (name, key)
        for key in _USAGE_AND_COST:
            assert attributes[key] == ours[key], (name, key, attributes[key], ours[key])
        if name.startswith("lean path"):  # in a costspan budget of the same size
            remaining = "costspan.budget.remaining_usd"
            assert attributes[remaining] == ours[remaining], (name, attributes[remaining])
    assert set(found["lean path, costspan's attrs"]) == set(ours)


_GUARDED_LEDGER = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import lean

budget = lean._Counter()
budget.cap = 1_000
lean._COUNTER.set(budget)
ledger = lean.GuardedLedger()
ledger.lease_s = 0.3
found = {}

first = ledger.hold(100, 10)
found["renewed while held"] = len(ledger.renewer)
time.sleep(0.7)  # two leases: only the renewer keeps the hold
probe = ledger.hold(1, 1)  # sweeps the holds whose lease ran out
found["held after two leases"] = budget.held
ledger.settle(probe, 1, 1)
ledger.settle(first, 60, 8)
ledger.settle(first, 60, 8)  # a repeated commit
found["spent after two commits"] = budget.spent
found["renewed after the commit"] = len(ledger.renewer)

crashed = ledger.hold(200, 10)
ledger.renewer.forget(crashed.rid)  # its caller is gone: nothing renews the hold
time.sleep(0.4)
ledger.hold(50, 10)
found["held after the lease ran out"] = budget.held
try:
    ledger.hold(2_000, 10)
    found["over the cap"] = "granted"
except RuntimeError:
    found["over the cap"] = "refused"
print(json.dumps(found))
"""


def test_the_guarded_least_machinery_keeps_the_ledgers_guarantees() -> None:
    """The guarded lean path bounds what keeping the contract's guarantees costs only if its
    ledger keeps them: a live hold renewed past its lease, a repeated commit counted once, a
    hold nobody renews expiring, a call over the cap refused."""
    found = _json_from(_GUARDED_LEDGER)
    assert found == {
        "renewed while held": 1,
        "held after two leases": 101,
        "spent after two commits": 61,
        "renewed after the commit": 0,
        "held after the lease ran out": 50,
        "over the cap": "refused",
    }


_PROFILE_STEPS_RUN = """
import json, sys
sys.path.insert(0, sys.argv[1])
import overhead, profile

seen = set()

def hook(frame, event, arg):
    if event == "call":
        seen.add((frame.f_code.co_filename, frame.f_code.co_name))

client = overhead.make_client()
for mode in ("budget", "stream"):
    variant, kind = profile.MODES[mode]
    with variant(overhead.Providers()):
        overhead.MODES[kind](client)  # warm
        sys.setprofile(hook)
        overhead.MODES[kind](client)
        sys.setprofile(None)
print(json.dumps({
    label: any(name == function and fragment in path for path, name in seen)
    for label, fragment, function in profile.STEPS
}))
"""


def test_every_step_of_the_profile_names_a_function_a_call_runs() -> None:
    """`benchmarks/profile.py` sums sampled time under the functions its steps name: a step whose
    function no call runs any more (renamed, inlined) would print 0 µs as if it cost nothing."""
    found = _json_from(_PROFILE_STEPS_RUN)
    assert found, "no steps"
    assert [label for label, ran in found.items() if not ran] == []
