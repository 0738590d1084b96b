"""Every example in examples/ runs to completion against the bundled local server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Each example has one entry point (app.py or main.py); other files are its helpers.
EXAMPLES = sorted(p for p in (ROOT / "examples").rglob("*.py") if p.name in ("app.py", "main.py"))


def test_there_are_examples() -> None:
    """The parametrised test below must not pass vacuously."""
    assert EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=[str(p.relative_to(ROOT)) for p in EXAMPLES])
def test_example_runs(path: Path) -> None:
    """The example exits 0 and prints what it got back."""
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_BASE_URL"}
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
