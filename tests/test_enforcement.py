"""A budget or limit that nothing enforces is never silent."""

from __future__ import annotations

import subprocess
import sys


def test_a_budget_with_nothing_to_enforce_it_says_so() -> None:
    """Entering a budget in a process where nothing enforces budgets (no instrument(), no
    launcher, no CostSpanProcessor) warns once, with what to do; instrumented, it is silent."""
    script = (
        "import costspan\n"
        "with costspan.budget(usd='0.001'):\n    pass\n"
        "with costspan.budget(usd='0.001'):\n    pass\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert run.stderr.count("nothing in this process enforces budgets") == 1
    assert "costspan.instrument()" in run.stderr
    quiet = subprocess.run(
        [sys.executable, "-c", "import costspan\ncostspan.instrument()\n" + script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "enforces" not in quiet.stderr


def test_limits_with_nothing_to_enforce_them_say_so() -> None:
    """configure(limits=...) in a process that never instruments warns (a moment later, so
    that configure() followed by instrument() stays quiet)."""
    script = "import time, costspan\ncostspan.configure(limits='user.id $1/day')\ntime.sleep(3)\n"
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert "limits are configured, but nothing in this process enforces budgets" in run.stderr
    quiet = subprocess.run(
        [sys.executable, "-c", script.replace("time.sleep", "costspan.instrument(); time.sleep")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "enforces" not in quiet.stderr
