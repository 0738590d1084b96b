"""Budgets cross service boundaries: a budget and tags in W3C baggage over a real HTTP hop, and
a configured limit held in Redis by two services under opentelemetry-instrument."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent


def run_example(path: str, ledger_url: str | None = None) -> dict[str, Any]:
    """Run an example as a user would and return the JSON it prints after ``summary: ``."""
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_BASE_URL"}
    if ledger_url is not None:
        env["COSTSPAN_LEDGER"] = ledger_url
    result = subprocess.run(
        [sys.executable, str(ROOT / path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("summary: "))
    return json.loads(line.removeprefix("summary: "))


@pytest.mark.parametrize("ledger", ["memory", "redis"])
def test_service_b_enforces_service_a_budget_and_tags(
    ledger: str, request: pytest.FixtureRequest
) -> None:
    """B's calls are reserved against A's budget (refused past it) and carry A's tags, with
    each process's own ledger or with both on one Redis."""
    url = None
    if ledger == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        url = server.flushed().url
    summary = run_example("examples/two_services/main.py", url)
    # $0.005 affords two $0.00204 answers; the third reservation no longer fits.
    assert summary["answered"] == 2
    assert summary["refused"] == 4
    spent = sum(s.get("gen_ai.usage.cost.amount", 0) for s in summary["b_spans"])
    assert spent <= 0.005
    # Downstream, the budget keeps its name (carried in baggage) next to its id.
    label = f"checkout-request #{summary['budget_id'][:8]}"
    assert all(b == [label] for b in summary["b_budgets"])
    for span in summary["b_spans"]:
        assert span["user.id"] == "u-42"
        assert span["feature"] == "checkout"
    decisions = [s["costspan.budget.decision"] for s in summary["b_spans"]]
    assert decisions == ["allow", "allow", "refuse", "refuse", "refuse", "refuse"]


def test_two_instrumented_services_share_one_daily_cap_in_redis(
    redis_server: RedisServer,
) -> None:
    """Under opentelemetry-instrument with COSTSPAN_LEDGER=redis and COSTSPAN_LIMITS, two
    services answering the same user at once cannot overspend the user's daily cap together."""
    summary = run_example("examples/shared_limits/main.py", redis_server.flushed().url)
    cap, spent = Decimal(summary["cap_usd"]), Decimal(summary["ledger_spent_usd"])
    answered = sum(summary["answered"].values())
    assert spent <= cap
    # Every answer was charged in the shared counter; five calls' worth fit, and no more.
    assert summary["ledger_calls"] == answered == 5
    assert all(n > 0 for n in summary["refused"].values())  # both services were held back
    # Refused calls were never sent: the LLM saw the five answers plus u-7's two.
    assert summary["llm_requests"] == answered + 2
    assert summary["other_user_answered"] == [True, True]
