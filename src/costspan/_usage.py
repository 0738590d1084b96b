"""Token usage as the provider reported it, read from any OpenAI response shape.

One small value type, :class:`TokenUsage`, with the subset semantics of the GenAI conventions:
``input_tokens`` includes cache reads and cache writes, ``output_tokens`` includes reasoning.
The readers accept typed openai objects and plain dicts alike (duck-typed through :func:`field`),
because OpenAI-compatible servers add, drop and rename detail fields freely.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, cast

from costspan._coerce import count
from costspan._money import reported_usd

_MISSING: Any = object()


def field(obj: object, name: str) -> Any:
    """Read ``name`` from a pydantic model, any object, or a mapping; ``None`` when absent."""
    # Runs for every field of every request and response: exact-type checks first, because an
    # isinstance() against the Mapping ABC costs several times more.
    if obj is None:
        return None
    if type(obj) is dict:
        return cast("dict[str, Any]", obj).get(name)
    value = getattr(obj, name, _MISSING)
    if value is not _MISSING:
        return value
    if isinstance(obj, Mapping):
        return cast("Mapping[str, Any]", obj).get(name)
    return None


def items(value: object) -> list[Any]:
    """The elements of a list-like value (not a string, bytes or mapping); else nothing."""
    if type(value) is list or type(value) is tuple:
        return list(cast("list[Any]", value))
    if isinstance(value, Iterable) and not isinstance(value, str | bytes | Mapping):
        return list(cast("Iterable[Any]", value))
    return []


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Token counts of one call. ``None`` means "not reported", never zero."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    reported_cost: Decimal | None = None
    """USD the provider or gateway billed for the call itself (e.g. OpenRouter's ``usage.cost``)."""
    estimated: bool = False
    """True when the counts were estimated offline because the provider reported none."""

    @property
    def is_empty(self) -> bool:
        return self.input_tokens is None and self.output_tokens is None


def from_openai(usage: object) -> TokenUsage | None:
    """Read a ``usage`` object of Chat Completions, Responses, Completions or Embeddings.

    Chat/Completions/Embeddings name the totals ``prompt_tokens``/``completion_tokens``; the
    Responses API names them ``input_tokens``/``output_tokens`` with ``*_tokens_details``.
    """
    if usage is None:
        return None
    input_tokens = count(field(usage, "prompt_tokens"))
    if input_tokens is None:
        input_tokens = count(field(usage, "input_tokens"))
    output_tokens = count(field(usage, "completion_tokens"))
    if output_tokens is None:
        output_tokens = count(field(usage, "output_tokens"))
    in_details = field(usage, "prompt_tokens_details") or field(usage, "input_tokens_details")
    out_details = field(usage, "completion_tokens_details") or field(usage, "output_tokens_details")
    result = TokenUsage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=count(field(in_details, "cached_tokens")),
        cache_write_tokens=count(field(in_details, "cache_write_tokens")),
        reasoning_tokens=count(field(out_details, "reasoning_tokens")),
        reported_cost=reported_usd(field(usage, "cost")),
    )
    return None if result.is_empty else result
