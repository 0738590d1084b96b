"""A budget or limit that nothing enforces is never silent."""

from __future__ import annotations

import os
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


def test_warnings_reach_the_terminal_once_under_the_launcher() -> None:
    """Under opentelemetry-instrument with a logs exporter, the SDK's handler takes the root
    logger and Python stops printing warnings: costspan's own (here a ledger outage) still
    reach stderr, once."""
    from pathlib import Path

    from tests.processes import free_port

    launcher = Path(sys.executable).with_name("opentelemetry-instrument")
    app = (
        "import openai, costspan\n"
        "from costspan.testing import OpenAICompatibleServer\n"
        "with OpenAICompatibleServer() as s, costspan.tags({'user.id': 'u'}):\n"
        "    c = openai.OpenAI(base_url=s.base_url, api_key='k')\n"
        "    for _ in range(3):\n"
        "        c.chat.completions.create(model='gpt-4o-mini', max_completion_tokens=20,\n"
        "            messages=[{'role': 'user', 'content': 'hi'}])\n"
    )
    env = {
        **os.environ,
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "console",
        "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": "true",
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "openai",
        "COSTSPAN_LEDGER": f"redis://127.0.0.1:{free_port()}/0",
        "COSTSPAN_LIMITS": "user.id $1/day",
        "COSTSPAN_OUTBOX": "off",
    }
    run = subprocess.run(
        [str(launcher), sys.executable, "-c", app],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert run.stderr.count("the budget ledger is unreachable") == 1


def test_an_unpriced_warning_points_at_the_users_line() -> None:
    """UnpricedModelWarning names the line that called openai, not a costspan module."""
    app = (
        "import warnings, openai, costspan\n"
        "from costspan.testing import OpenAICompatibleServer\n"
        "costspan.instrument()\n"
        "with OpenAICompatibleServer() as s:\n"
        "    c = openai.OpenAI(base_url=s.base_url, api_key='k')\n"
        "    stream = c.chat.completions.create(model='acme-9', stream=True,\n"
        "        messages=[{'role': 'user', 'content': 'hi'}])\n"
        "    for chunk in stream:  # line 8: the stream ends (and is priced) here\n"
        "        pass\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", app], capture_output=True, text=True, timeout=60, check=True
    )
    assert "<string>:8: UnpricedModelWarning" in run.stderr
    assert "costspan/_" not in run.stderr
