"""``CostSpanProcessor``: attribution from baggage on every span, cost on spans from anywhere.

It sits in the span pipeline in front of the exporting processor::

    provider.add_span_processor(CostSpanProcessor(BatchSpanProcessor(exporter)))

- ``on_start`` copies the configured attribution keys (``COSTSPAN_ATTRIBUTION_KEYS``: ``user.id``,
  ``tenant.id``, ``feature``, ``session.id``, ``request.id`` by default) from baggage onto every
  span, under the same names.
- ``on_end`` prices GenAI spans that arrive without cost -- spans of the official OpenTelemetry
  OpenAI instrumentation, or of any instrumentation that follows the conventions -- and forwards an
  enriched copy to the processor it wraps. A finished span is read-only in the SDK, so the copy is
  a new ``ReadableSpan`` with the same identity and the extra attributes. Everything else passes
  through untouched; costspan's own spans are priced before they end and pass through too.

A processor runs on the caller's thread and its exceptions would reach the caller's ``with``
block, so every hook catches everything and logs.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Mapping
from typing import Any

from opentelemetry.context import Context
from opentelemetry.metrics import MeterProvider, get_meter
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.util.types import AttributeValue

from costspan import _attributes as A
from costspan._baggage import attribution
from costspan._coerce import count, text
from costspan._costing import price_usage
from costspan._pricing import Cost
from costspan._records import spend_record
from costspan._runtime import add_enforcer, runtime
from costspan._telemetry import CostMeter
from costspan._usage import TokenUsage
from costspan._version import __version__

_logger = logging.getLogger(__name__)


# Providers that already carry a CostSpanProcessor: costspan.instrument() and the auto-launch
# configurator both install one, and a second would price foreign spans twice.
_installed: weakref.WeakSet[Any] = weakref.WeakSet()


def usage_from_attributes(attrs: Any) -> TokenUsage | None:
    """Usage from GenAI span attributes (v1.41 names, and the genai repo's cache_write name)."""
    input_tokens = count(attrs.get(A.GEN_AI_USAGE_INPUT_TOKENS))
    output_tokens = count(attrs.get(A.GEN_AI_USAGE_OUTPUT_TOKENS))
    if input_tokens is None and output_tokens is None:
        return None
    cache_write = count(attrs.get(A.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS))
    if cache_write is None:
        cache_write = count(attrs.get(A.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS))
    return TokenUsage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=count(attrs.get(A.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS)),
        cache_write_tokens=cache_write,
        reasoning_tokens=count(attrs.get(A.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS)),
    )


class CostSpanProcessor(SpanProcessor):
    """Adds attribution to every span and cost to GenAI spans, then hands them on.

    Args:
        next_processor: the processor that exports (usually a ``BatchSpanProcessor``). Without
            one, costspan still attributes spans and counts foreign spans' cost in metrics, but
            cannot change what another processor exports.
        meter_provider: where the cost metrics of foreign spans go (the global one by default).
    """

    def __init__(
        self,
        next_processor: SpanProcessor | None = None,
        *,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self.next_processor = next_processor
        add_enforcer(self)
        self._meter_provider = meter_provider
        self._costs: CostMeter | None = None

    @property
    def costs(self) -> CostMeter:
        # Created on first use: under auto-instrumentation the meter provider is set up after
        # the span pipeline.
        if self._costs is None:
            meter = get_meter("costspan", __version__, self._meter_provider)
            self._costs = CostMeter(meter)
        return self._costs

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        try:
            tags = attribution(parent_context)
            if tags:
                span.set_attributes(tags)
        except Exception:
            _logger.exception("costspan could not attribute a span")
        if self.next_processor is not None:
            try:
                self.next_processor.on_start(span, parent_context)
            except Exception:
                _logger.exception("the processor behind CostSpanProcessor failed in on_start")

    def _on_ending(self, span: Span) -> None:
        on_ending = getattr(self.next_processor, "_on_ending", None)
        if on_ending is not None:
            try:
                on_ending(span)
            except Exception:
                _logger.exception("the processor behind CostSpanProcessor failed in _on_ending")

    def on_end(self, span: ReadableSpan) -> None:
        out = span
        try:
            out = self.enrich(span)
        except Exception:
            _logger.exception("costspan could not price a span; it is exported without cost")
        if self.next_processor is not None:
            try:
                self.next_processor.on_end(out)
            except Exception:
                _logger.exception("the processor behind CostSpanProcessor failed in on_end")

    def enrich(self, span: ReadableSpan) -> ReadableSpan:
        """The span with cost attributes if it is an unpriced GenAI span; else the span itself."""
        attrs = span.attributes or {}
        if A.GEN_AI_OPERATION_NAME not in attrs:
            return span
        if A.GEN_AI_USAGE_COST_AMOUNT in attrs or A.COSTSPAN_UNPRICED in attrs:
            return span  # priced (or marked unpriced) by costspan's own wrapper already
        usage = usage_from_attributes(attrs)
        if usage is None:
            return span
        provider = text(attrs.get(A.GEN_AI_PROVIDER_NAME)) or text(attrs.get(A.GEN_AI_SYSTEM))
        provider = provider or "openai"
        dims: dict[str, AttributeValue] = {
            k: v
            for k in (
                A.GEN_AI_OPERATION_NAME,
                A.GEN_AI_PROVIDER_NAME,
                A.GEN_AI_REQUEST_MODEL,
                A.GEN_AI_RESPONSE_MODEL,
                *runtime().settings.metric_tags,
            )
            if (v := attrs.get(k)) is not None
        }
        cost, extra = price_usage(
            usage,
            models=(
                text(attrs.get(A.GEN_AI_RESPONSE_MODEL)),
                text(attrs.get(A.GEN_AI_REQUEST_MODEL)),
            ),
            provider=provider,
            when_ns=span.start_time or 0,
            service_tier=text(attrs.get(A.OPENAI_RESPONSE_SERVICE_TIER)),
        )
        try:
            self.costs.record(usage, cost, dims)
        except Exception:
            _logger.exception("costspan could not count a foreign span's cost")
        try:
            self._record(span, attrs, usage, cost, provider)
        except Exception:
            _logger.exception("costspan could not keep a foreign span's spend record")
        return ReadableSpan(
            name=span.name,
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes={**attrs, **extra},
            events=span.events,
            links=span.links,
            kind=span.kind,
            status=span.status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )

    @staticmethod
    def _record(
        span: ReadableSpan,
        attrs: Mapping[str, AttributeValue],
        usage: TokenUsage,
        cost: Cost | None,
        provider: str,
    ) -> None:
        """A spend record for a call another instrumentation traced (tags as copied on start)."""
        keys = runtime().settings.attribution_keys
        context = span.context
        record = spend_record(
            time_ns=span.start_time or 0,
            operation=str(attrs.get(A.GEN_AI_OPERATION_NAME, "")),
            provider=provider,
            request_model=text(attrs.get(A.GEN_AI_REQUEST_MODEL)),
            response_model=text(attrs.get(A.GEN_AI_RESPONSE_MODEL)),
            tags={k: v for k in keys if isinstance(v := attrs.get(k), str)},
            usage=usage,
            cost=cost,
            trace_id=0 if context is None else context.trace_id,
            span_id=0 if context is None else context.span_id,
        )
        runtime().recorder.add(record)

    def shutdown(self) -> None:
        if self.next_processor is not None:
            self.next_processor.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        if self.next_processor is not None:
            return self.next_processor.force_flush(timeout_millis)
        return True


def install(tracer_provider: Any, processor: CostSpanProcessor | None = None) -> bool:
    """Add a CostSpanProcessor to an SDK tracer provider once; False if it has one or can't."""
    if tracer_provider in _installed or not hasattr(tracer_provider, "add_span_processor"):
        return False
    tracer_provider.add_span_processor(processor or CostSpanProcessor())
    _installed.add(tracer_provider)
    return True


def mark_installed(tracer_provider: Any) -> None:
    _installed.add(tracer_provider)


def is_installed(tracer_provider: Any) -> bool:
    return tracer_provider in _installed
