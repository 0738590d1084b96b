"""The pytest plugin, used by a sample test suite run in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SUITE = """
import openai
import pytest

import costspan

QUESTION = [{"role": "user", "content": "Which city hosts the Louvre?"}]
LONG = {"x-costspan-test-output-tokens": "400"}


def ask(server, feature, n=1, **extra):
    client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    with costspan.tags(feature=feature):
        for _ in range(n):
            client.chat.completions.create(model="gpt-4o", messages=QUESTION, **extra)


def test_search_is_cheap(costspan_spend, costspan_server):
    ask(costspan_server, "search", 2)
    assert costspan_spend.calls == 2
    costspan_spend.assert_under(usd="0.01", feature="search")


def test_each_test_sees_only_its_own_calls(costspan_spend, costspan_server):
    assert costspan_spend.calls == 0
    ask(costspan_server, "other")
    assert costspan_spend.calls == 1
    assert costspan_spend.report(group_by="feature")[0].tags == {"feature": "other"}


def test_essays_are_too_expensive(costspan_spend, costspan_server):
    ask(costspan_server, "essays", 3, extra_headers=LONG)
    costspan_spend.assert_under(usd="0.005", feature="essays")


@pytest.mark.costspan_budget(usd="0.001")
def test_marker_budget_is_enforced(costspan_server):
    ask(costspan_server, "agent", 2, extra_headers=LONG)
"""


def test_a_suite_asserts_its_costs(tmp_path: Path) -> None:
    """Two tests pass within their cost; two fail with the spend and the spenders named."""
    (tmp_path / "test_costs.py").write_text(SUITE)
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nfilterwarnings = error\nasyncio_default_fixture_loop_scope = function\n"
    )
    env = {**os.environ, "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "openai"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "2 failed, 2 passed" in out
    assert "FAILED test_costs.py::test_essays_are_too_expensive" in out
    assert "FAILED test_costs.py::test_marker_budget_is_enforced" in out
    assert "feature=essays: spent $0.0" in out
    assert "not under $0.005 (3 call(s)); by model: model=gpt-4o-2024-08-06: $" in out
    assert "all calls: spent $0.0" in out  # the marker's cap covers every call of the test
    assert "model=gpt-4o-2024-08-06" in out
