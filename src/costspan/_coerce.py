"""Reading loosely typed values: what OpenAI-compatible servers, span attributes and request
keyword arguments carry.

One set of rules for the whole package: ``bool`` is never a number (JSON ``true`` is not a token
count), an empty string is no string, and a count is never negative.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

# `NotGiven`/`Omit` sentinels of the openai SDK are falsy objects that are not None.
_OMITTED_NAMES: Final = frozenset({"NotGiven", "Omit"})


def given(kwargs: Mapping[str, Any], name: str) -> Any:
    """A keyword argument's value, with the SDK's "not given" sentinels read as ``None``."""
    value = kwargs.get(name)
    if value is None or type(value).__name__ in _OMITTED_NAMES:
        return None
    return value


def text(value: object) -> str | None:
    """A non-empty string, else None."""
    return value if isinstance(value, str) and value else None


def whole(value: object) -> int | None:
    """An integer (negative allowed, e.g. a seed), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def count(value: object) -> int | None:
    """A count: an integer >= 0, else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def number(value: object) -> float | None:
    """A real number as float (for span attributes such as a temperature), else None."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
