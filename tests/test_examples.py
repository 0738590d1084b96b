"""Every example in examples/ runs to completion against the bundled local server."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from tests.otlp import otlp_receiver

ROOT = Path(__file__).resolve().parent.parent
# Each example has one entry point (app.py or main.py); other files are its helpers.
EXAMPLES = sorted(p for p in (ROOT / "examples").rglob("*.py") if p.name in ("app.py", "main.py"))


def test_there_are_examples() -> None:
    """The parametrised test below must not pass vacuously."""
    assert EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=[str(p.relative_to(ROOT)) for p in EXAMPLES])
def test_example_runs(path: Path) -> None:
    """The example exits 0 and prints what it got back (examples that export over OTLP send
    to a real receiver)."""
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_BASE_URL"}
    with otlp_receiver() as (endpoint, _):
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
        result = subprocess.run(
            [sys.executable, str(path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_every_example_folder_has_a_readme_and_an_entry_point() -> None:
    """Each example explains itself and has a file the suite runs."""
    folders = {p.parent for p in (ROOT / "examples").rglob("*.py")}
    for folder in folders:
        assert (folder / "README.md").is_file(), folder
        assert {p.parent for p in EXAMPLES} >= folders


def test_agent_loop_downgrades_then_stops_within_its_budget() -> None:
    """The agent uses gpt-4o while it fits, then gpt-4o-mini, then stops before overspending."""
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_BASE_URL"}
    env["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] = "openai"
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples/agent_loop/app.py")],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    lines = result.stdout.splitlines()
    models = [line.split()[2] for line in lines if line.startswith("step") and "spent" in line]
    first_mini = next(i for i, m in enumerate(models) if m.startswith("gpt-4o-mini"))
    assert first_mini > 0
    assert all(m.startswith("gpt-4o-2") for m in models[:first_mini])
    assert all(m.startswith("gpt-4o-mini") for m in models[first_mini:])
    assert "stopped before sending" in lines[-2]
    spent = lines[-1].split("$")[1].split()[0]
    assert Decimal(0) < Decimal(spent) <= Decimal("0.02")
    assert "passed 80% of its cap" in result.stderr
