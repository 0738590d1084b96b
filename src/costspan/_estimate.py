"""Estimates: the worst case of a request, projected offline before it is sent.

The same projection serves admission (what a call reserves in its budgets), the public
:func:`estimate` and ``costspan estimate``: input tokens counted with the model's tokenizer
(message overhead included), output bounded by the request's own cap times ``n`` (or
:data:`DEFAULT_OUTPUT_TOKENS` when it sets none), priced with no cache hits.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from costspan import _attributes as A
from costspan import _operations as ops
from costspan._coerce import whole
from costspan._operations import Operation, given
from costspan._pricing import Pricer
from costspan._runtime import runtime
from costspan._usage import TokenUsage

DEFAULT_OUTPUT_TOKENS: Final = 1024
"""The output bound of a request that sets no output cap of its own."""

CAP_PARAMS: Final = ("max_completion_tokens", "max_output_tokens", "max_tokens")
"""The request parameters that cap a call's output, in the order they are read."""


@dataclass(frozen=True, slots=True)
class Estimate:
    """A worst-case projection of one call, made offline before it is sent."""

    model: str
    input_tokens: int
    """The input the provider is expected to bill: costspan's count times what recent calls of
    this provider and model showed (see :mod:`costspan._calibration`)."""
    output_tokens: int
    usd: Decimal | None
    """None when no price is known for the model."""
    counted_input_tokens: int = 0
    """costspan's own count of the input, before calibration."""

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


NO_ESTIMATE: Final = Estimate("", 0, 0, None)


def output_cap(kwargs: Mapping[str, Any]) -> int | None:
    """The output cap a request sets itself (``max_completion_tokens`` and its kin), if any."""
    for name in CAP_PARAMS:
        value = whole(given(kwargs, name))
        if value is not None and value >= 0:
            return value
    return None


def choices(kwargs: Mapping[str, Any]) -> int:
    """How many answers a request asks for (``n``): each is billed its own output."""
    n = whole(given(kwargs, "n"))
    return n if n is not None and n > 1 else 1


def project(
    operation: Operation,
    kwargs: Mapping[str, Any],
    model: str,
    provider: str,
    when_ns: int,
    pricer: Pricer | None = None,
) -> Estimate:
    """The worst case of a request: exact input, capped output, no cache hits."""
    current = runtime()
    counted = operation.input_tokens(kwargs, model)
    input_tokens = current.calibration.calibrated(provider, model, counted)
    if operation.name == A.OP_EMBEDDINGS:
        output = 0
    else:
        cap = output_cap(kwargs)
        output = (DEFAULT_OUTPUT_TOKENS if cap is None else cap) * choices(kwargs)
    cost = (pricer or current.pricer).price(
        TokenUsage(input_tokens, output), models=(model,), provider=provider, when_ns=when_ns
    )
    return Estimate(model, input_tokens, output, None if cost is None else cost.total, counted)


def fallback_bound(
    operation: Operation,
    kwargs: Mapping[str, Any],
    model: str,
    provider: str,
    when_ns: int,
    pricer: Pricer,
) -> Estimate:
    """A worst case that needs no tokenizer and no understanding of the request: every UTF-8
    byte of the request counted as a token (a byte-level BPE never makes more tokens than
    bytes), output bounded as :func:`project` bounds it. Loose, but it holds for any input;
    the ``local`` fail mode reserves it when the exact projection failed."""
    try:
        body = json.dumps(kwargs, default=repr, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        body = repr(kwargs)
    input_tokens = len(body.encode("utf-8", "replace"))
    if operation.name == A.OP_EMBEDDINGS:
        output = 0
    else:
        cap = output_cap(kwargs)
        output = (DEFAULT_OUTPUT_TOKENS if cap is None else cap) * choices(kwargs)
    cost = pricer.price(
        TokenUsage(input_tokens, output), models=(model,), provider=provider, when_ns=when_ns
    )
    return Estimate(model, input_tokens, output, None if cost is None else cost.total)


_OPERATIONS: Final[dict[str, tuple[Operation, str]]] = {
    "chat": (ops.CHAT, "messages"),
    "responses": (ops.RESPONSES, "input"),
    "text_completion": (ops.COMPLETIONS, "prompt"),
    "embeddings": (ops.EMBEDDINGS, "input"),
}


def estimate(
    model: str,
    messages_or_input: object,
    *,
    max_output_tokens: int | None = None,
    provider: str = "openai",
    operation: str = "chat",
    when_ns: int | None = None,
) -> Estimate:
    """Project a call's worst-case tokens and cost without making it (offline).

    Input tokens are counted exactly with the model's tokenizer (chat message overhead
    included); output is bounded by ``max_output_tokens`` or ``DEFAULT_OUTPUT_TOKENS`` (1024).
    ``operation`` is ``chat`` (messages), ``responses`` (input), ``text_completion`` (prompt) or
    ``embeddings`` (input). ``usd`` is None when no price is known for the model.
    """
    if operation not in _OPERATIONS:
        raise ValueError(f"operation must be one of {', '.join(_OPERATIONS)}, not {operation!r}")
    op, key = _OPERATIONS[operation]
    value = messages_or_input
    if operation == "chat" and isinstance(value, str):
        value = [{"role": "user", "content": value}]
    kwargs: dict[str, Any] = {key: value, "model": model}
    if max_output_tokens is not None:
        if isinstance(max_output_tokens, bool) or max_output_tokens < 0:
            raise ValueError("max_output_tokens must be a whole number >= 0")
        kwargs["max_output_tokens"] = max_output_tokens
    return project(op, kwargs, model, provider, when_ns or time.time_ns())
