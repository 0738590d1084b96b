"""Reading request bodies: JSON values of the expected shape, or an empty one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast


def obj(value: object) -> Mapping[str, Any]:
    """A JSON object from a request body, or an empty one for anything else."""
    return cast("Mapping[str, Any]", value) if isinstance(value, dict) else {}


def objs(value: object) -> list[Mapping[str, Any]]:
    """The JSON objects in a JSON array (other elements dropped)."""
    return (
        [obj(v) for v in cast("list[object]", value) if isinstance(v, dict)]  # pyright: ignore[reportUnknownArgumentType]
        if isinstance(value, list)
        else []
    )


def items(value: object) -> list[object]:
    """The elements of a JSON array, or nothing."""
    return list(cast("list[object]", value)) if isinstance(value, list) else []


def text_of(content: object) -> str:
    """The text of a message's content: a string, or the text parts of a list."""
    if isinstance(content, str):
        return content
    return " ".join(str(part.get("text", "")) for part in objs(content))
