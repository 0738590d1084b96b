"""The life of one instrumented call: its span, its metrics, and how it ends.

An :class:`Invocation` starts the CLIENT span with the sampling-relevant attributes, is told the
outcome (a response, a finished stream, or an exception) exactly once, prices the usage (estimating
it offline when the provider reported none), sets the cost attributes *before* the span ends (a
span processor can no longer add them), then ends the span and records the metrics. Ending twice
is a no-op, so the several ways a stream can end (exhausted, closed, garbage-collected) may all
call it safely.
"""

from __future__ import annotations

import logging
import threading
import time
import timeit
from collections.abc import Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import Histogram, Meter, MeterProvider, get_meter
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer, TracerProvider
from opentelemetry.util.types import AttributeValue

from costspan import _attributes as A
from costspan import _records as records
from costspan._admission import Admission, BudgetMeter
from costspan._costing import CostMeter, attribution, metric_tags
from costspan._operations import Attributes, Outcome
from costspan._pricing import Cost
from costspan._usage import TokenUsage
from costspan._version import __version__

_logger = logging.getLogger(__name__)

SCHEMA_URL = "https://opentelemetry.io/schemas/1.41.0"

# Attributes that identify a call on metrics; bounded in cardinality (no ids, no user data).
_METRIC_KEYS = (
    A.GEN_AI_OPERATION_NAME,
    A.GEN_AI_PROVIDER_NAME,
    A.GEN_AI_REQUEST_MODEL,
    A.SERVER_ADDRESS,
    A.SERVER_PORT,
)


class Telemetry:
    """The tracer and the metric instruments of one instrumentation."""

    __slots__ = (
        "budgets",
        "costs",
        "duration",
        "meter",
        "time_to_first_chunk",
        "token_usage",
        "tracer",
    )

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self.tracer: Tracer = trace.get_tracer(
            "costspan", __version__, tracer_provider, schema_url=SCHEMA_URL
        )
        self.meter: Meter = get_meter(
            "costspan", __version__, meter_provider, schema_url=SCHEMA_URL
        )
        self.duration: Histogram = self.meter.create_histogram(
            A.METRIC_OPERATION_DURATION,
            unit="s",
            description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=list(A.DURATION_BUCKETS),
        )
        self.token_usage: Histogram = self.meter.create_histogram(
            A.METRIC_TOKEN_USAGE,
            unit="{token}",
            description="Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=list(A.TOKEN_USAGE_BUCKETS),
        )
        self.time_to_first_chunk: Histogram = self.meter.create_histogram(
            A.METRIC_TIME_TO_FIRST_CHUNK,
            unit="s",
            description="Time to receive the first chunk of a streaming response",
            explicit_bucket_boundaries_advisory=list(A.DURATION_BUCKETS),
        )
        self.costs = CostMeter(self.meter)
        self.budgets = BudgetMeter(self.meter)


def usage_attributes(usage: TokenUsage) -> Attributes:
    """The ``gen_ai.usage.*`` attributes of a usage; unreported counts are left out."""
    attrs: Attributes = {}
    for key, value in (
        (A.GEN_AI_USAGE_INPUT_TOKENS, usage.input_tokens),
        (A.GEN_AI_USAGE_OUTPUT_TOKENS, usage.output_tokens),
        (A.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, usage.cache_read_tokens),
        (A.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, usage.cache_write_tokens),
        (A.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, usage.reasoning_tokens),
    ):
        if value is not None:
            attrs[key] = value
    return attrs


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


class Invocation:
    """One call's span, timing and settlement. Created by the wrappers; ended exactly once."""

    __slots__ = (
        "_ended",
        "_lock",
        "_token",
        "admission",
        "estimate",
        "first_chunk_at",
        "metric_attributes",
        "pending",
        "request_tier",
        "span",
        "start_ns",
        "started_at",
        "tags",
        "telemetry",
    )

    def __init__(
        self,
        telemetry: Telemetry,
        name: str,
        start_attributes: Attributes,
        estimate: Callable[[str | None], TokenUsage] | None = None,
    ) -> None:
        self.telemetry = telemetry
        self.estimate = estimate
        self.admission: Admission | None = None
        # Attributes decided before the call (budget decisions), written with the outcome's in
        # one go: each separate set_attributes() costs a pass through the SDK's validation.
        self.pending: Attributes = {}
        self.span = telemetry.tracer.start_span(
            name, kind=SpanKind.CLIENT, attributes=start_attributes
        )
        self.metric_attributes: dict[str, AttributeValue] = {
            k: start_attributes[k] for k in _METRIC_KEYS if k in start_attributes
        }
        self.metric_attributes.update(metric_tags())
        self.tags = attribution()  # for the spend record: the baggage of the call's caller
        self.request_tier = _str(start_attributes.get(A.OPENAI_REQUEST_SERVICE_TIER))
        self.start_ns = time.time_ns()  # the request time: it selects historic prices
        self.started_at = timeit.default_timer()
        self.first_chunk_at: float | None = None
        self._token: object | None = None
        self._ended = False
        # Streams can be closed by one thread while the garbage collector finalises them in
        # another; the lock makes "end exactly once" hold anyway.
        self._lock = threading.Lock()

    # -- context -----------------------------------------------------------------------------
    def activate(self) -> None:
        """Make the span current, so HTTP spans of the request nest under it."""
        self._token = otel_context.attach(trace.set_span_in_context(self.span))

    def deactivate(self) -> None:
        token, self._token = self._token, None
        if token is not None:
            otel_context.detach(token)  # pyright: ignore[reportArgumentType]

    # -- progress ----------------------------------------------------------------------------
    def set_attributes(self, attributes: Attributes) -> None:
        if self.span.is_recording():
            self.span.set_attributes(attributes)

    def mark_first_chunk(self) -> None:
        if self.first_chunk_at is None:
            self.first_chunk_at = timeit.default_timer()
            ttfc = self.first_chunk_at - self.started_at
            self.span.set_attribute(A.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, ttfc)
            self.telemetry.time_to_first_chunk.record(ttfc, self.metric_attributes)

    # -- endings -----------------------------------------------------------------------------
    def _claim_end(self) -> bool:
        with self._lock:
            if self._ended:
                return False
            self._ended = True
            return True

    @property
    def ended(self) -> bool:
        return self._ended

    def _settle(self, attrs: Attributes, outcome: Outcome) -> TokenUsage | None:
        """Usage (reported, else estimated) and its cost, added to ``attrs``, and the budget
        reservation committed. Never raises."""
        usage = outcome.usage
        cost = None
        try:
            if usage is None:
                # The request was sent and may have been billed: never let it go unaccounted.
                attrs[A.COSTSPAN_USAGE_MISSING] = True
                if self.estimate is not None:
                    usage = self.estimate(outcome.text)
            if usage is None:
                return None
            attrs.update(usage_attributes(usage))
            cost, cost_attrs = self.telemetry.costs.settle(
                usage,
                models=(
                    _str(attrs.get(A.GEN_AI_RESPONSE_MODEL)),
                    _str(self.metric_attributes.get(A.GEN_AI_REQUEST_MODEL)),
                ),
                provider=str(self.metric_attributes.get(A.GEN_AI_PROVIDER_NAME, "openai")),
                when_ns=self.start_ns,
                service_tier=_str(attrs.get(A.OPENAI_RESPONSE_SERVICE_TIER)) or self.request_tier,
                metric_attributes=self._cost_dimensions(attrs),
            )
            attrs.update(cost_attrs)
        except Exception:
            _logger.exception("costspan could not price a call; the span goes out without cost")
        finally:
            attrs.update(self._release_or_commit(usage, cost))
        if usage is not None:
            self._record(attrs, usage, cost)
        return usage

    def _record(self, attrs: Attributes, usage: TokenUsage, cost: Cost | None) -> None:
        """Keep the call's spend record (the buffer; the store, if one is configured)."""
        context = self.span.get_span_context()
        decision = attrs.get(A.COSTSPAN_BUDGET_DECISION)
        records.keep_call(
            time_ns=self.start_ns,
            operation=str(self.metric_attributes.get(A.GEN_AI_OPERATION_NAME, "")),
            provider=str(self.metric_attributes.get(A.GEN_AI_PROVIDER_NAME, "openai")),
            request_model=_str(self.metric_attributes.get(A.GEN_AI_REQUEST_MODEL)),
            response_model=_str(attrs.get(A.GEN_AI_RESPONSE_MODEL)),
            tags=self.tags,
            usage=usage,
            cost=cost,
            trace_id=context.trace_id,
            span_id=context.span_id,
            decision=None if decision is None else str(decision),
        )

    def _release_or_commit(self, usage: TokenUsage | None, cost: Any) -> Attributes:
        """Settle the call's budget reservation; the budget attributes it leaves on the span."""
        if self.admission is None:
            return {}
        try:
            return self.admission.settle(usage, cost, self.span)
        except Exception:
            _logger.exception("costspan could not settle a budget reservation")
            return {}

    def _cost_dimensions(self, attrs: Attributes) -> dict[str, AttributeValue]:
        dims = {
            k: v
            for k, v in self.metric_attributes.items()
            if k not in (A.SERVER_ADDRESS, A.SERVER_PORT)
        }
        response_model = attrs.get(A.GEN_AI_RESPONSE_MODEL)
        if response_model is not None:
            dims[A.GEN_AI_RESPONSE_MODEL] = response_model
        return dims

    def succeed(self, outcome: Outcome) -> None:
        """End the span with the outcome's attributes, usage and cost."""
        if not self._claim_end():
            return
        try:
            attrs = {**self.pending, **outcome.attributes}
            usage = self._settle(attrs, outcome)
            self.set_attributes(attrs)
            self._record_metrics(attrs, usage, error_type=None)
        finally:
            self.span.end()

    def succeed_unobserved(self) -> None:
        """End a call whose response costspan could not read: sent, so usage is estimated."""
        self.succeed(Outcome({}, None))

    def fail(
        self,
        error_type: str,
        description: str | None = None,
        outcome: Outcome | None = None,
        exception: BaseException | None = None,
    ) -> None:
        """End the span as failed; ``outcome`` keeps whatever a broken stream had already said."""
        if not self._claim_end():
            return
        try:
            attrs: Attributes = {**self.pending, **(outcome.attributes if outcome else {})}
            # An outcome means the request went out (a stream broke midway): settle what it
            # used. Without one the provider refused the request and nothing was billed.
            usage = self._settle(attrs, outcome) if outcome is not None else None
            if outcome is None:
                self._release_or_commit(None, None)
            attrs[A.ERROR_TYPE] = error_type
            self.set_attributes(attrs)
            if exception is not None and self.span.is_recording():
                self.span.record_exception(exception)
            self.span.set_status(Status(StatusCode.ERROR, description))
            self._record_metrics(attrs, usage, error_type=error_type)
        finally:
            self.span.end()

    def _record_metrics(
        self, span_attrs: Attributes, usage: TokenUsage | None, error_type: str | None
    ) -> None:
        attrs: dict[str, Any] = dict(self.metric_attributes)
        response_model = span_attrs.get(A.GEN_AI_RESPONSE_MODEL)
        if response_model is not None:
            attrs[A.GEN_AI_RESPONSE_MODEL] = response_model
        if error_type is not None:
            attrs[A.ERROR_TYPE] = error_type
        self.telemetry.duration.record(timeit.default_timer() - self.started_at, attrs)
        # The conventions allow recording counted (not reported) usage when offline counting
        # is on, as it is here; the span says which it was.
        if usage is None:
            return
        if usage.input_tokens is not None:
            self.telemetry.token_usage.record(
                usage.input_tokens, {**attrs, A.GEN_AI_TOKEN_TYPE: "input"}
            )
        if usage.output_tokens is not None:
            self.telemetry.token_usage.record(
                usage.output_tokens, {**attrs, A.GEN_AI_TOKEN_TYPE: "output"}
            )


def error_type_of(exc: BaseException) -> str:
    """``error.type`` for an exception: its qualified class name, low in cardinality."""
    return type(exc).__qualname__
