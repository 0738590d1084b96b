"""Every code block in the READMEs and docs/ runs, unless marked as not run with a reason."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [
    ROOT / "README.md",
    ROOT / "collector-config" / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
]
_BLOCK = re.compile(
    r"(<!-- not-run: (?P<why>[^>]+) -->\n)?```(?P<lang>\w*)\n(?P<code>.*?)```", re.S
)


def _blocks() -> list[tuple[str, str, str]]:
    found: list[tuple[str, str, str]] = []
    for doc in DOCS:
        for i, match in enumerate(_BLOCK.finditer(doc.read_text())):
            lang, code = match["lang"], match["code"]
            if match["why"] or lang == "text":
                continue  # output samples and explicitly excused blocks
            found.append((f"{doc.relative_to(ROOT)}#{i}", lang, code))
    return found


def test_every_block_has_a_language() -> None:
    """A block without a language would be silently skipped; every block names one."""
    for doc in DOCS:
        for match in _BLOCK.finditer(doc.read_text()):
            assert match["lang"], f"{doc.name}: a code block has no language"


@pytest.mark.parametrize(("where", "lang", "code"), _blocks(), ids=[b[0] for b in _blocks()])
def test_block_runs(where: str, lang: str, code: str) -> None:
    """Python blocks run in a fresh interpreter; shell blocks run from the repository root."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("OPENAI_BASE_URL", None)
    # The official instrumentation is installed for comparisons; keep it out of doc runs.
    env["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] = "openai"
    if lang == "python":
        command = [sys.executable, "-c", code]
    elif lang in ("sh", "bash"):
        command = ["bash", "-euo", "pipefail", "-c", code]
    else:
        pytest.fail(f"{where}: no runner for language {lang!r}")
    result = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"{where} failed:\n{result.stdout}\n{result.stderr}"
