"""The public surface is exactly what __all__ says."""

import types

import costspan
import costspan.ledgers
import costspan.testing


def test_all_is_sorted_and_complete() -> None:
    """Every public name in each public package is in a sorted __all__, and each exists."""
    for module in (costspan, costspan.testing, costspan.ledgers):
        public = {
            name
            for name in dir(module)
            if not name.startswith("_") and not isinstance(getattr(module, name), types.ModuleType)
        }
        exported = set(module.__all__) - {"__version__"}
        assert public == exported, module.__name__
        assert list(module.__all__) == sorted(module.__all__)
