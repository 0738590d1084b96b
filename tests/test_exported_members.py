"""The public surface is exactly what __all__ says."""

import costspan
import costspan.testing


def test_all_is_sorted_and_complete() -> None:
    """Every public name in the package is listed in a sorted __all__, and each exists."""
    for module in (costspan, costspan.testing):
        public = {name for name in dir(module) if not name.startswith("_")}
        public -= {"testing"}  # the subpackage attribute appears once imported
        exported = set(module.__all__) - {"__version__"}
        assert public == exported, module.__name__
        assert list(module.__all__) == sorted(module.__all__)
