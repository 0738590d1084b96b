"""The wheel built from a checkout, as README's "Install" section tells people to build it: it
carries the licence, the command, the entry points the launcher reads and the extras the
messages name (``costspan[demo]``, ``costspan[redis]``, ``costspan[prometheus]``)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import costspan

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_from_a_checkout(tmp_path: Path) -> None:
    """`pip wheel --no-deps` of the checkout, offline: the MIT LICENSE, the metadata's licence
    and extras, the console script and entry points, the typed marker and the Lua scripts."""
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index", "--no-build-isolation",
         "--disable-pip-version-check", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = tmp_path.glob("costspan-*.whl")
    info = f"costspan-{costspan.__version__}.dist-info"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (licence,) = [n for n in names if n.startswith(info) and n.endswith("/LICENSE")]
        text = archive.read(licence).decode()
        metadata = archive.read(f"{info}/METADATA").decode()
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    assert text.startswith("MIT License\n\nCopyright (c) 2026 costspan developers\n")
    assert "License-Expression: MIT" in metadata.splitlines()
    for extra in ("demo", "redis", "prometheus"):
        assert f"Provides-Extra: {extra}" in metadata.splitlines()
    assert "Requires-Dist: openai<4,>=1.66; extra == 'demo'" in metadata.splitlines()
    assert "costspan = costspan._cli:main" in entry_points
    assert "costspan_openai = costspan._instrumentor:OpenAIInstrumentor" in entry_points
    assert "costspan = costspan._auto:CostspanConfigurator" in entry_points
    assert {"costspan/py.typed", "costspan/ledgers/lua/reserve.lua"} <= names
