"""Estimates: the worst case of a request, projected offline before it is sent.

The same projection serves admission (what a call reserves in its budgets), the public
:func:`estimate` and ``costspan estimate``. It is an upper bound of what the provider can bill:

- input: every part of the request counted offline (:mod:`costspan._input`: messages, tools,
  schemas, images, audio, history), times the provider's calibration; a part that cannot be
  counted (a file, stored history) makes it the model's context window;
- output: the request's cap (the one costspan gives an uncapped budgeted request, or the
  provider's own default), times the answers (``n``, ``best_of``), plus predicted output;
- priced with no cache hits.
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
from costspan._coerce import given
from costspan._operations import Operation
from costspan._pricing import Pricer
from costspan._runtime import Runtime, runtime
from costspan._usage import TokenUsage

DEFAULT_OUTPUT_TOKENS: Final = 4096
"""The default of ``COSTSPAN_DEFAULT_MAX_OUTPUT_TOKENS``: the output cap a request under a
budget or limit is given when it sets none."""


@dataclass(frozen=True, slots=True)
class Estimate:
    """A worst-case projection of one call, made offline before it is sent."""

    model: str
    input_tokens: int
    """The input the provider can bill at most: costspan's count of every part of the request
    times what recent calls of this provider and model showed (see :mod:`costspan._calibration`),
    or the model's context window when a part cannot be counted offline."""
    output_tokens: int
    """The output it can bill at most: the cap times the answers asked for (``n``)."""
    usd: Decimal | None
    """None when no price is known for the model."""
    counted_input_tokens: int = 0
    """costspan's own count of the input, before calibration."""
    uncounted: tuple[str, ...] = ()
    """Parts of the input costspan could not count (a file, stored history): bounded by the
    model's context window instead."""

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


NO_ESTIMATE: Final = Estimate("", 0, 0, None)


def input_bound(
    operation: Operation,
    kwargs: Mapping[str, Any],
    model: str,
    provider: str,
    current: Runtime | None = None,
) -> tuple[int, int, tuple[str, ...]]:
    """(input the provider can bill at most, costspan's count, what could not be counted)."""
    current = current or runtime()
    counted = operation.count_input(kwargs, model)
    bound = current.calibration.calibrated(provider, model, counted.tokens)
    if counted.unknown:
        window = current.pricer.context_window(model, provider)
        bound = max(bound, window or current.settings.max_input_tokens)
    return bound, counted.tokens, counted.unknown


def output_bound(
    operation: Operation,
    kwargs: Mapping[str, Any],
    model: str,
    provider: str,
    input_tokens: int,
    current: Runtime | None = None,
) -> int:
    """The output the provider can bill at most: the request's cap (or the provider's own for an
    uncapped request, or, uncapped, what the settings say) times the answers, plus predicted
    output."""
    if operation.name == A.OP_EMBEDDINGS:
        return 0
    cap = operation.output_cap(kwargs)
    if cap is None:
        cap = operation.implicit_cap(provider)
    if cap is None:
        current = current or runtime()
        cap = current.settings.default_max_output_tokens
        # A cap the request sets but that is no cap (100.5, -5, True) is left for the provider to
        # refuse (nothing billed); a lenient one might ignore it, so the model's largest answer
        # is reserved meanwhile.
        if current.settings.uncapped_output == "reserve" or operation.invalid_cap(kwargs):
            window = current.pricer.context_window(model, provider)
            if window is not None:
                cap = max(window - input_tokens, 0)
    return cap * operation.choices(kwargs) + operation.extra_output(kwargs, model)


def project(
    operation: Operation,
    kwargs: Mapping[str, Any],
    model: str,
    provider: str,
    when_ns: int,
    pricer: Pricer | None = None,
    current: Runtime | None = None,
) -> Estimate:
    """The worst case of a request: every input part, the output cap, no cache hits.
    ``current``: the runtime to read settings, calibration and prices from (the one in force
    by default)."""
    current = current or runtime()
    input_tokens, counted, uncounted = input_bound(operation, kwargs, model, provider, current)
    output = output_bound(operation, kwargs, model, provider, input_tokens, current)
    pricer = pricer or current.pricer
    priced = current.calibration.alias(provider, model) or model
    total = pricer.total(input_tokens, output, model=priced, provider=provider, when_ns=when_ns)
    if total is not None:
        total = _at_tier(
            current,
            pricer,
            given(kwargs, "service_tier"),
            total,
            priced,
            provider,
            when_ns,
            input_tokens,
            output,
        )
    return Estimate(model, input_tokens, output, total, counted, uncounted)


UNSPECIFIED_TIERS: Final = (None, "auto")
"""Tiers that leave the choice to the provider: OpenAI serves them at the project's default
tier, which may be ``priority`` (billed at a premium)."""


def _at_tier(
    current: Runtime,
    pricer: Pricer,
    tier: object,
    standard: Decimal,
    model: str,
    provider: str,
    when_ns: int,
    input_tokens: int,
    output_tokens: int,
) -> Decimal:
    """The bound priced at the tier the request can be billed at: the one it names, else the
    dearer of the standard tier and the one this provider was seen serving such requests at
    (a project whose default tier is ``priority``)."""
    if tier is not None and type(tier) is not str:
        tier = None
    unspecified = tier in UNSPECIFIED_TIERS
    named = current.calibration.served_tier(provider) if unspecified else tier
    if named is None or named == "default":
        return standard
    usage = TokenUsage(input_tokens, output_tokens)
    cost = pricer.price(
        usage, models=(model,), provider=provider, when_ns=when_ns, service_tier=str(named)
    )
    if cost is None:
        return standard
    return max(standard, cost.total) if unspecified else cost.total


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
    try:
        output = output_bound(operation, kwargs, model, provider, input_tokens)
    except Exception:
        output = DEFAULT_OUTPUT_TOKENS * 8
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

    The same upper bound a budget reserves (docs/budgets.md, "The worst case"): every input part
    counted with the model's tokenizer and calibrated to the provider; output bounded by
    ``max_output_tokens``, else ``COSTSPAN_DEFAULT_MAX_OUTPUT_TOKENS`` (4096).
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
        for name in op.cap_params[:1]:  # the API's own cap parameter (embeddings have none)
            kwargs[name] = max_output_tokens
    return project(op, kwargs, model, provider, when_ns or time.time_ns())
