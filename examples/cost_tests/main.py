"""Run the example test suite (test_support_bot.py) with pytest, as a CI job would."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", str(here / "test_support_bot.py")]))
