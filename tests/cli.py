"""Run the ``costspan`` command as a user would: a subprocess with a clean environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

COSTSPAN = Path(sys.executable).with_name("costspan")
LAUNCHER = Path(sys.executable).with_name("opentelemetry-instrument")
HIDE = Path(__file__).with_name("hide")  # a sitecustomize that hides installed packages


def clean_env(env: dict[str, str] | None = None, columns: int | None = 160) -> dict[str, str]:
    """The test process's environment without COSTSPAN_* and OTEL_* settings, the official
    OpenAI instrumentation disabled (the test extra installs it), ``COLUMNS`` as given (None:
    unset), then ``env`` on top."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COSTSPAN_", "OTEL_")) and k != "COLUMNS"
    }
    base["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] = "openai"
    if columns is not None:
        base["COLUMNS"] = str(columns)  # rich fits its output to the terminal's width
    return {**base, **(env or {})}


def run(
    *args: str,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    columns: int | None = 160,
    hide: str | None = None,
    cwd: Path | None = None,
    prefix: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """``costspan ARGS`` with its output captured (so stdout is a pipe, as in ``| less``);
    ``hide``: packages the child must not find (e.g. ``"openai"``); ``prefix``: a command
    that runs it (``setpriv ...``)."""
    full = clean_env(env, columns)
    if hide:
        full["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HIDE), full.get("PYTHONPATH")]))
        full["COSTSPAN_TEST_HIDE"] = hide
    return subprocess.run(
        [*prefix, str(COSTSPAN), *args],
        env=full,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
    )
