"""``CostSpanProcessor``: attribution on every span; cost, budgets and limits for GenAI spans of
any instrumentation.

It sits in the span pipeline in front of the exporting processor::

    provider.add_span_processor(CostSpanProcessor(BatchSpanProcessor(exporter)))

- ``on_start`` copies the configured attribution keys (``COSTSPAN_ATTRIBUTION_KEYS``: ``user.id``,
  ``tenant.id``, ``feature``, ``session.id``, ``request.id`` by default) from baggage onto every
  span, under the same names (costspan's own spans start with them: their invocation reads the
  same baggage). For a GenAI inference span of another instrumentation it is also
  the budget gate (:mod:`costspan._gate`): it reserves the call's worst case knowable there in
  the budgets and limits of the span's context, and raises :class:`~costspan.BudgetExceeded`
  when one has no room -- the one exception it lets out, before the request is sent.
- ``on_end`` prices GenAI inference spans that arrive without cost -- spans of the official
  OpenTelemetry OpenAI or Anthropic instrumentations, an SDK's own spans, any instrumentation
  that follows the conventions -- charges the budgets and limits the span started under, and
  forwards an enriched copy to the processor it wraps. A finished span is read-only in the SDK,
  so the copy is a new ``ReadableSpan`` with the same identity and the extra attributes. A span
  that is part of a call another span counts gets ``costspan.cost.counted_on`` instead of cost.
  Everything else passes through untouched; costspan's own spans are priced and charged before
  they end and pass through too.

A processor runs on the caller's thread and its exceptions would reach the caller's ``with``
block, so every hook catches everything else and logs.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Mapping
from typing import Any

from opentelemetry.context import Context
from opentelemetry.metrics import MeterProvider, get_meter
from opentelemetry.sdk.trace import Event, ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import StatusCode
from opentelemetry.util.types import AttributeValue

from costspan import _attributes as A
from costspan import _gate as gate
from costspan._baggage import attribution
from costspan._coerce import count, text
from costspan._costing import price_usage
from costspan._errors import BudgetExceeded, UnpricedModelError
from costspan._money import usd
from costspan._pricing import Cost
from costspan._records import spend_record
from costspan._reservation import Settlement
from costspan._runtime import add_enforcer, once, runtime
from costspan._telemetry import BudgetMeter, CostMeter
from costspan._usage import TokenUsage, write_usage_attributes
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
    """Adds attribution to every span; prices, gates and charges GenAI spans; hands them on.

    Args:
        next_processor: the processor that exports (usually a ``BatchSpanProcessor``). Without
            one, costspan still attributes spans, gates and charges foreign GenAI calls and
            counts their cost in metrics, but cannot change what another processor exports.
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
        self._budgets: BudgetMeter | None = None

    @property
    def costs(self) -> CostMeter:
        # Created on first use: under auto-instrumentation the meter provider is set up after
        # the span pipeline.
        if self._costs is None:
            self._costs = CostMeter(self._meter())
        return self._costs

    @property
    def budgets(self) -> BudgetMeter:
        if self._budgets is None:
            self._budgets = BudgetMeter(self._meter())
        return self._budgets

    def _meter(self) -> Any:
        return get_meter("costspan", __version__, self._meter_provider)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        # costspan's own spans start with their attribution (one pass through the SDK's
        # attribute checks, not two).
        if not _is_own(span):
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
        try:
            call = gate.start(span, parent_context, id(self))
        except (BudgetExceeded, UnpricedModelError) as refusal:
            # The deliberate raise: the span has ended, refused, and nothing is sent.
            self._step(self._refused, refusal)
            raise
        except Exception:
            _logger.exception("costspan could not check a GenAI span's budgets")
            return
        if call is not None and (call.decision not in (None, "allow") or call.rejected):
            self._step(self._decided, call)

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
            out = self.finish(span)
        except Exception:
            _logger.exception("costspan could not price a span; it is exported without cost")
        if self.next_processor is not None:
            try:
                self.next_processor.on_end(out)
            except Exception:
                _logger.exception("the processor behind CostSpanProcessor failed in on_end")

    def finish(self, span: ReadableSpan) -> ReadableSpan:
        """The span as it leaves: priced and charged, marked as counted on another span, or
        unchanged (not an unpriced GenAI inference span)."""
        if _is_own(span):
            return span  # priced and charged by its invocation, never tracked here
        context = span.context
        if context is None:
            return self.enrich(span)
        key = (context.trace_id, context.span_id)
        call = gate.CALLS.pop(key, id(self))
        if call is None:
            done = gate.CALLS.ended(key)
            if done is not None:
                return done  # another CostSpanProcessor of this provider finished it
            out = self.enrich(span)
        else:
            out = self.account(span, call)
        if out is not span:
            gate.CALLS.remember(key, out)
        return out

    def enrich(self, span: ReadableSpan) -> ReadableSpan:
        """The span with cost attributes if it is an unpriced GenAI inference span (one this
        processor did not see start: it is charged to no budget); else the span itself."""
        attrs = span.attributes or {}
        if attrs.get(A.GEN_AI_OPERATION_NAME) not in gate.INFERENCE:
            return span
        if A.GEN_AI_USAGE_COST_AMOUNT in attrs or A.COSTSPAN_UNPRICED in attrs:
            return span  # priced (or marked unpriced) by costspan's own wrapper already
        if A.COSTSPAN_COST_COUNTED_ON in attrs:
            return span
        usage = usage_from_attributes(attrs)
        if usage is None:
            return span
        provider = _provider(attrs)
        _, extra = self._price(span, attrs, usage, provider)
        return _copy(span, {**attrs, **extra})

    def account(self, span: ReadableSpan, call: gate.Call) -> ReadableSpan:
        """Price a GenAI span this processor tracked from its start, and charge its budgets."""
        attrs = span.attributes or {}
        usage = usage_from_attributes(attrs)
        if call.marked:
            gate.keep_child_usage(call, usage)
            gate.release(call)
            return _copy(span, {**attrs, A.COSTSPAN_COST_COUNTED_ON: f"{call.counted_span:016x}"})
        extra: dict[str, AttributeValue] = {}
        if usage is None:
            usage = gate.children_usage(call)
            if usage is not None:  # the span reported none; the spans inside it did
                write_usage_attributes(extra, usage)
        failed = span.status.status_code is StatusCode.ERROR
        cost: Cost | None = None
        if usage is not None:
            cost, priced = self._price(span, {**attrs, **extra}, usage, _provider(attrs))
            extra.update(priced)
            self._step(gate.observe, call, usage)
        elif call.hold is not None and not failed:
            extra[A.COSTSPAN_USAGE_MISSING] = True
        charged = gate.settle(call, usage, cost, failed)
        extra.update(charged.attributes)
        events: list[Event] = []
        if charged.settlement is not None:
            events = self._step(self._settled, call, charged.settlement) or []
        if not extra:
            return span
        return _copy(span, {**attrs, **extra}, events)

    def _price(
        self,
        span: ReadableSpan,
        attrs: Mapping[str, AttributeValue],
        usage: TokenUsage,
        provider: str,
    ) -> tuple[Cost | None, dict[str, AttributeValue]]:
        """Price a usage; count it in the cost metrics and keep its spend record."""
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
        try:
            self.costs.record(usage, cost, dims)
        except Exception:
            _logger.exception("costspan could not count a foreign span's cost")
        try:
            self._record(span, attrs, usage, cost, provider)
        except Exception:
            _logger.exception("costspan could not keep a foreign span's spend record")
        return cost, extra

    # -- budget telemetry (each step on its own: a failing metric never costs the span) -------
    @staticmethod
    def _step(step: Any, *args: Any) -> Any:
        try:
            return step(*args)
        except Exception:
            _logger.exception("costspan: %s failed", getattr(step, "__name__", "a step"))
            return None

    def _refused(self, refusal: Exception) -> None:
        self.budgets.decisions.add(1, {A.COSTSPAN_BUDGET_DECISION: "refuse"})
        mode = getattr(refusal, "fail_mode", None)
        if isinstance(refusal, BudgetExceeded) and isinstance(mode, str) and mode != "closed":
            self.budgets.unavailable.add(1, {A.COSTSPAN_LEDGER_FAIL_MODE: mode})

    def _decided(self, call: gate.Call) -> None:
        meter = self.budgets
        if call.decision not in (None, "allow"):
            meter.decisions.add(1, {A.COSTSPAN_BUDGET_DECISION: str(call.decision)})
        if call.degraded is not None:
            meter.unavailable.add(1, {A.COSTSPAN_LEDGER_FAIL_MODE: call.degraded})
        for reason in call.rejected:
            meter.rejected.add(1, {A.COSTSPAN_BAGGAGE_REJECT_REASON: reason})

    def _settled(self, call: gate.Call, settlement: Settlement) -> list[Event]:
        """Threshold crossings (span events, a log line, a metric) and an overrun."""
        events: list[Event] = []
        for crossing in settlement.crossed:
            events.append(
                Event(
                    A.EVENT_BUDGET_THRESHOLD,
                    {
                        A.COSTSPAN_BUDGET_ID: crossing.label,
                        A.COSTSPAN_BUDGET_THRESHOLD: crossing.threshold,
                        A.COSTSPAN_BUDGET_SPENT_USD: crossing.spent_usd,
                    },
                )
            )
            _logger.warning(
                "costspan budget %r passed %d%% of its cap (spent $%s)",
                crossing.label,
                round(crossing.threshold * 100),
                crossing.spent_usd,
            )
            self.budgets.thresholds.add(1, {A.COSTSPAN_BUDGET_THRESHOLD: crossing.threshold})
        over = settlement.overrun_micros
        if over:
            provider = call.provider or "openai"
            self.budgets.overruns.add(
                1, {A.GEN_AI_PROVIDER_NAME: provider, A.GEN_AI_REQUEST_MODEL: call.model}
            )
            if once(("overrun", provider, call.model)):
                _logger.warning(
                    "costspan: a call to %r of provider %r (traced by %s) cost $%s more than "
                    "it reserved at span start (%s); the budget is charged the actual cost. "
                    "Further overruns of this model are counted in %s, not logged",
                    call.model,
                    provider,
                    call.scope_name,
                    usd(over),
                    ", ".join(call.basis),
                    A.METRIC_BUDGET_OVERRUNS,
                )
        return events

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


def _provider(attrs: Mapping[str, AttributeValue]) -> str:
    return text(attrs.get(A.GEN_AI_PROVIDER_NAME)) or text(attrs.get(A.GEN_AI_SYSTEM)) or "openai"


def _is_own(span: ReadableSpan) -> bool:
    scope = span.instrumentation_scope
    return scope is not None and scope.name == gate.OWN_SCOPE


def _copy(
    span: ReadableSpan, attributes: Mapping[str, AttributeValue], events: list[Event] | None = None
) -> ReadableSpan:
    """A finished span with other attributes (and more events): the SDK's spans are read-only
    once they end."""
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=attributes,
        events=[*span.events, *(events or [])],
        links=span.links,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


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
