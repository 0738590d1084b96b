"""Turning a finished call's usage into its cost and the span attributes that carry it.

Shared by the invocation (costspan's own spans, priced before they end) and by
:class:`~costspan.CostSpanProcessor` (spans of other instrumentations, priced on their way out).
An unknown model is never a silent $0: it gets ``costspan.unpriced=true`` and one
:class:`~costspan.UnpricedModelWarning` per model (the cost metrics count it too).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Final

from opentelemetry.util.types import AttributeValue

from costspan import _attributes as A
from costspan._errors import UnpricedModelWarning
from costspan._pricing import Cost
from costspan._runtime import Runtime, once, runtime
from costspan._usage import TokenUsage

Attributes = dict[str, AttributeValue]

_logger = logging.getLogger(__name__)


_PACKAGE: Final = os.path.dirname(os.path.abspath(__file__)) + os.sep
# Frames a warning must not point at: costspan's own (but the demo, which is an app), and the
# libraries between the user's call and costspan's code.
_THROUGH: Final = tuple(
    os.sep + name + os.sep for name in ("openai", "wrapt", "opentelemetry", "httpx", "httpx2")
)


def _callers_level() -> int:
    """The ``stacklevel`` that points a warning at the user's line (the call into openai, or
    the loop over its stream), not into costspan: the first frame that is none of the above."""
    frame = sys._getframe(1)  # pyright: ignore[reportPrivateUsage]
    level = 1
    while frame is not None:
        path = frame.f_code.co_filename
        internal = (path.startswith(_PACKAGE) and not path.endswith("_demo.py")) or any(
            part in path for part in _THROUGH
        )
        if not internal:
            return level
        frame = frame.f_back
        level += 1
    return 2


def warn_unpriced(provider: str, model: str) -> None:
    """Warn once per (provider, model) that a call could not be priced."""
    if not once(("unpriced", provider, model)):
        return
    message = (
        f"costspan has no price for model {model!r} of provider {provider!r}: its calls are "
        "recorded as unpriced (costspan.unpriced=true), not as $0. Add a price with "
        "costspan.configure(prices={...}) or COSTSPAN_PRICES."
    )
    try:
        warnings.warn(message, UnpricedModelWarning, stacklevel=_callers_level())
    except Exception:
        # Warnings turned into errors (-W error) must not cost the call its telemetry.
        _logger.warning("no price for model %r of provider %r", model, provider)


def cost_attributes(cost: Cost, current: Runtime | None = None) -> Attributes:
    total = float(cost.total)  # display(): the double a span attribute holds
    attrs: Attributes = {
        A.GEN_AI_USAGE_COST_AMOUNT: total,
        A.GEN_AI_USAGE_COST_CURRENCY: "USD",
        A.GEN_AI_USAGE_COST_SOURCE: "provider" if cost.source == "provider" else "local",
        A.COSTSPAN_PRICE_SOURCE: cost.source,
    }
    if cost.source != "provider":
        attrs[A.COSTSPAN_COST_INPUT] = float(cost.input)
        attrs[A.COSTSPAN_COST_OUTPUT] = float(cost.output)
        # The parts most calls don't have are left out rather than written as 0.
        if cost.cached_input:
            attrs[A.COSTSPAN_COST_CACHED_INPUT] = float(cost.cached_input)
        if cost.cache_write:
            attrs[A.COSTSPAN_COST_CACHE_WRITE] = float(cost.cache_write)
        if cost.reasoning:
            attrs[A.COSTSPAN_COST_REASONING] = float(cost.reasoning)
    if cost.provider:
        attrs[A.COSTSPAN_PRICE_PROVIDER] = cost.provider
    if cost.model:
        attrs[A.COSTSPAN_PRICE_MODEL] = cost.model
    if (current or runtime()).settings.openlit_cost_attribute:
        attrs[A.OPENLIT_USAGE_COST] = total
    return attrs


def price_usage(
    usage: TokenUsage,
    *,
    models: tuple[str | None, ...],
    provider: str,
    when_ns: int,
    service_tier: str | None,
    current: Runtime | None = None,
) -> tuple[Cost | None, Attributes]:
    """The cost of ``usage`` (None: no price known) and the span attributes that say so.
    ``current``: the runtime to price with (the one in force by default)."""
    current = current or runtime()
    cost = current.pricer.price(
        usage, models=models, provider=provider, when_ns=when_ns, service_tier=service_tier
    )
    if cost is None:
        attrs: Attributes = {A.COSTSPAN_UNPRICED: True}
        warn_unpriced(provider, next((m for m in models if m), "unknown"))
    else:
        attrs = cost_attributes(cost, current)
    if usage.estimated:
        attrs[A.COSTSPAN_USAGE_ESTIMATED] = True
    return cost, attrs
