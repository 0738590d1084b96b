"""Turning a finished call's usage into cost attributes and cost metrics.

Shared by the wrappers (costspan's own spans, priced before they end) and by
:class:`~costspan.CostSpanProcessor` (spans of other instrumentations, priced on their way out).
An unknown model is never a silent $0: it gets ``costspan.unpriced=true``, a count in
``costspan.calls.unpriced``, and one :class:`~costspan.UnpricedModelWarning` per model.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Mapping
from typing import Final

from opentelemetry import baggage
from opentelemetry.context import Context
from opentelemetry.metrics import Counter, Meter
from opentelemetry.util.types import AttributeValue

from costspan import _attributes as A
from costspan import _config
from costspan._errors import UnpricedModelWarning
from costspan._pricing import Cost, Pricer
from costspan._usage import TokenUsage

Attributes = dict[str, AttributeValue]

_logger = logging.getLogger(__name__)

_pricer_lock = threading.Lock()
_pricer: tuple[object, Pricer] | None = None


def current_pricer() -> Pricer:
    """The pricer for the settings in force (rebuilt when price overrides change)."""
    global _pricer
    prices = _config.current().prices
    cached = _pricer
    if cached is not None and cached[0] is prices:
        return cached[1]
    with _pricer_lock:
        if _pricer is None or _pricer[0] is not prices:
            _pricer = (prices, Pricer(prices))
        return _pricer[1]


_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


def warn_unpriced(provider: str, model: str) -> None:
    """Warn once per (provider, model) that a call could not be priced."""
    with _warned_lock:
        if (provider, model) in _warned:
            return
        _warned.add((provider, model))
    warnings.warn(
        f"costspan has no price for model {model!r} of provider {provider!r}: its calls are "
        "recorded as unpriced (costspan.unpriced=true), not as $0. Add a price with "
        "costspan.configure(prices={...}) or COSTSPAN_PRICES.",
        UnpricedModelWarning,
        stacklevel=2,
    )


# W3C guarantees propagation of 8,192 bytes of baggage in all; a single attribution value of
# more than 256 characters is not an id, and is dropped rather than copied onto every span.
MAX_ATTRIBUTION_VALUE: Final = 256


def attribution(context: Context | None = None) -> dict[str, str]:
    """The attribution keys present in baggage, with usable values."""
    keys = _config.current().attribution_keys
    if not keys:
        return {}
    entries = baggage.get_all(context)
    return {
        k: v
        for k in keys
        if isinstance(v := entries.get(k), str) and 0 < len(v) <= MAX_ATTRIBUTION_VALUE
    }


def metric_tags(context: Context | None = None) -> dict[str, str]:
    """The configured metric tags present in baggage (bounded: only keys the user named)."""
    keys = _config.current().metric_tags
    if not keys:
        return {}
    entries = baggage.get_all(context)
    return {k: v for k in keys if isinstance(v := entries.get(k), str) and len(v) <= 128}


def cost_attributes(cost: Cost) -> Attributes:
    attrs: Attributes = {
        A.GEN_AI_USAGE_COST_AMOUNT: float(cost.total),
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
    if _config.current().openlit_cost_attribute:
        attrs[A.OPENLIT_USAGE_COST] = float(cost.total)
    return attrs


class CostMeter:
    """The cost, token and unpriced-call counters of one meter."""

    __slots__ = ("cost", "tokens", "unpriced")

    def __init__(self, meter: Meter) -> None:
        self.cost: Counter = meter.create_counter(
            A.METRIC_COST, unit="USD", description="Cost of GenAI calls in US dollars"
        )
        self.tokens: Counter = meter.create_counter(
            A.METRIC_TOKENS,
            unit="{token}",
            description="Cached-input, cache-write and reasoning tokens of GenAI calls",
        )
        self.unpriced: Counter = meter.create_counter(
            A.METRIC_UNPRICED_CALLS,
            unit="{call}",
            description="GenAI calls whose model has no known price",
        )

    def settle(
        self,
        usage: TokenUsage,
        *,
        models: tuple[str | None, ...],
        provider: str,
        when_ns: int,
        service_tier: str | None,
        metric_attributes: Mapping[str, AttributeValue],
    ) -> tuple[Cost | None, Attributes]:
        """Price ``usage``; record the metrics; return the cost and its span attributes."""
        cost = current_pricer().price(
            usage, models=models, provider=provider, when_ns=when_ns, service_tier=service_tier
        )
        attrs: Attributes = {}
        if usage.estimated:
            attrs[A.COSTSPAN_USAGE_ESTIMATED] = True
        dims = dict(metric_attributes)
        if cost is None:
            model = next((m for m in models if m), "unknown")
            attrs[A.COSTSPAN_UNPRICED] = True
            self.unpriced.add(1, dims)
            try:
                warn_unpriced(provider, model)
            except Exception:
                # Warnings turned into errors (-W error) must not cost the call its telemetry.
                _logger.warning("no price for model %r of provider %r", model, provider)
        else:
            attrs.update(cost_attributes(cost))
            self.cost.add(float(cost.total), dims)
        # Input and output totals are in gen_ai.client.token.usage; this counter breaks out the
        # subsets that histogram cannot show.
        for kind, count in (
            ("cached_input", usage.cache_read_tokens),
            ("cache_write", usage.cache_write_tokens),
            ("reasoning", usage.reasoning_tokens),
        ):
            if count:
                self.tokens.add(count, {**dims, A.COSTSPAN_TOKEN_TYPE: kind})
        return cost, attrs
