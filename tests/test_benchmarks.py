"""The benchmark code runs (numbers from a quick run mean nothing, so none are asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
