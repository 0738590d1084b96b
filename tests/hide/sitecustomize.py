"""Makes installed packages look missing to a child process, for tests of what users without
them see: put this folder on the child's PYTHONPATH and name the packages, comma-separated, in
COSTSPAN_TEST_HIDE. A ``None`` in ``sys.modules`` is Python's own way to block an import:
``import openai`` raises ModuleNotFoundError and ``importlib.util.find_spec`` answers None."""

import os
import sys

for _name in filter(None, os.environ.get("COSTSPAN_TEST_HIDE", "").split(",")):
    sys.modules[_name.strip()] = None  # type: ignore[assignment]
