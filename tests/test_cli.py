"""The costspan command line, run as a user would run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

COSTSPAN = Path(sys.executable).with_name("costspan")


def test_demo_prints_spans_with_usage_and_an_error() -> None:
    """`costspan demo` runs the app and prints one line per call, usage included."""
    result = subprocess.run(
        [str(COSTSPAN), "demo"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    rows = [line for line in lines if line.startswith(("chat ", "embeddings "))]
    assert [row.split()[1] for row in rows] == [
        "gpt-4o-mini",
        "o4-mini",
        "gpt-5",
        "text-embedding-3-small",
        "o3",
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4o",
    ]
    assert "in 13  out 21" in rows[0]
    assert "$0.00001455" in rows[0]  # 13 x $0.15 + 21 x $0.60 per million tokens
    assert "stream" in rows[1]
    assert "(reasoning 64)" in rows[1]
    assert "ERROR BadRequestError" in rows[4]
    assert "gen_ai.usage.input_tokens" in result.stdout
    assert "gen_ai.usage.cost.amount" in result.stdout
    total = next(line for line in lines if line.strip().startswith("total"))
    assert total.split()[1] == "6"  # the rejected and the refused call were not billed
    assert "[budget: refuse by 'block $0.002', nothing sent]" in rows[5]
    assert "[budget: downgrade from gpt-4o]" in rows[6]
    assert "[budget: clamp to" in rows[7]
    assert "refused before it was sent" in result.stdout


def test_unknown_command_is_one_clear_error() -> None:
    """A mistyped command exits non-zero with argparse's message naming the choices."""
    result = subprocess.run(
        [str(COSTSPAN), "demoo"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "invalid choice: 'demoo'" in result.stderr
