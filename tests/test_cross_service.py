"""A budget and tags cross a real HTTP hop between two processes in W3C baggage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_service_b_enforces_service_a_budget_and_tags() -> None:
    """B's calls are reserved against A's budget (refused past it) and carry A's tags."""
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_BASE_URL"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples/two_services/main.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("summary: "))
    summary = json.loads(line.removeprefix("summary: "))
    # $0.005 affords two $0.00204 answers; the third reservation no longer fits.
    assert summary["answered"] == 2
    assert summary["refused"] == 4
    spent = sum(s.get("gen_ai.usage.cost.amount", 0) for s in summary["b_spans"])
    assert spent <= 0.005
    assert all(b == [summary["budget_id"]] for b in summary["b_budgets"])
    for span in summary["b_spans"]:
        assert span["user.id"] == "u-42"
        assert span["feature"] == "checkout"
    decisions = [s["costspan.budget.decision"] for s in summary["b_spans"]]
    assert decisions == ["allow", "allow", "refuse", "refuse", "refuse", "refuse"]
