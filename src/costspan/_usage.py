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

from costspan import _attributes as A
from costspan._coerce import count
from costspan._money import reported_usd

_MISSING: Any = object()


_class_names: dict[type, frozenset[str]] = {}


def _class_attributes(cls: type) -> frozenset[str]:
    """The names a class defines itself (properties, methods), memoised per class."""
    names = _class_names.get(cls)
    if names is None:
        if len(_class_names) >= 4096:  # a bound against classes made on the fly
            _class_names.clear()
        names = _class_names[cls] = frozenset(dir(cls))
    return names


def field(obj: object, name: str) -> Any:
    """Read ``name`` from a pydantic model, any object, or a mapping; ``None`` when absent."""
    # Runs for every field of every request, response and stream chunk: exact-type checks
    # first, because an isinstance() against the Mapping ABC costs several times more; and a
    # pydantic model is read from its own dicts, because a missing attribute costs pydantic's
    # __getattr__ an AttributeError (~40 times a present one).
    if obj is None:
        return None
    if type(obj) is dict:
        # (No typing.cast here or below: at runtime it is one more function call per field.)
        return obj.get(name)  # pyright: ignore[reportUnknownMemberType,reportUnknownVariableType]
    fields = getattr(obj, "__dict__", None)
    if fields is not None:
        value = fields.get(name, _MISSING)
        if value is not _MISSING:
            return value
        extra = getattr(obj, "__pydantic_extra__", _MISSING)
        if (extra is None or type(extra) is dict) and name not in _class_attributes(type(obj)):
            # A pydantic model instance: its fields are in __dict__, its extra fields here.
            return extra.get(name) if extra else None  # pyright: ignore
    value = getattr(obj, name, _MISSING)
    if value is not _MISSING:
        return value
    if isinstance(obj, Mapping):
        return cast("Mapping[str, Any]", obj).get(name)
    return None


def items(value: object) -> list[Any]:
    """The elements of a list-like value (not a string, bytes or mapping); else nothing."""
    if type(value) is list or type(value) is tuple:
        return list(value)  # pyright: ignore[reportUnknownArgumentType]
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
    get = field
    raw_in = get(usage, "prompt_tokens")
    if raw_in is None:
        raw_in = get(usage, "input_tokens")
    raw_out = get(usage, "completion_tokens")
    if raw_out is None:
        raw_out = get(usage, "output_tokens")
    input_tokens = _count(raw_in)
    output_tokens = _count(raw_out)
    if input_tokens is None and output_tokens is None:
        return None
    if (input_tokens is None and raw_in is not None) or (
        output_tokens is None and raw_out is not None
    ):
        # A count that is there but no count (negative, a bool, a string): the usage cannot
        # be believed, and is read as missing (a budgeted call is then charged its hold).
        return None
    in_details = get(usage, "prompt_tokens_details") or get(usage, "input_tokens_details")
    out_details = get(usage, "completion_tokens_details") or get(usage, "output_tokens_details")
    cost = get(usage, "cost")
    return TokenUsage(
        input_tokens,
        output_tokens,
        None if in_details is None else _count(get(in_details, "cached_tokens")),
        None if in_details is None else _count(get(in_details, "cache_write_tokens")),
        None if out_details is None else _count(get(out_details, "reasoning_tokens")),
        None if cost is None else reported_usd(cost),
    )


def _count(value: object) -> int | None:
    """:func:`costspan._coerce.count`, with the exact-type check first (read per usage field)."""
    if type(value) is int:
        return value if value >= 0 else None
    return count(value)


def write_usage_attributes(attrs: dict[str, Any], usage: TokenUsage) -> None:
    """Add the ``gen_ai.usage.*`` attributes of ``usage`` to ``attrs`` (counts the provider did
    not report are left out, never written as 0)."""
    if usage.input_tokens is not None:
        attrs[A.GEN_AI_USAGE_INPUT_TOKENS] = usage.input_tokens
    if usage.output_tokens is not None:
        attrs[A.GEN_AI_USAGE_OUTPUT_TOKENS] = usage.output_tokens
    if usage.cache_read_tokens is not None:
        attrs[A.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = usage.cache_read_tokens
    if usage.cache_write_tokens is not None:
        attrs[A.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] = usage.cache_write_tokens
    if usage.reasoning_tokens is not None:
        attrs[A.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] = usage.reasoning_tokens
