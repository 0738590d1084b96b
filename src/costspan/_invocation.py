"""The life of one instrumented call: its span, its metrics, and how it ends.

An :class:`Invocation` is the one writer of its span. It starts the CLIENT span with the
sampling-relevant attributes, takes what admission decided (:meth:`Invocation.admitted`), is told
the outcome (a response, a finished stream, or an exception) exactly once, and then *accounts*
for the call: usage (reported, else estimated offline), its price, the budget settlement, the
spend record, the span attributes and events, the metrics. Cost attributes are set *before* the
span ends (a span processor can no longer add them). Ending twice is a no-op, so the several
ways a stream can end (exhausted, closed, garbage-collected) may all call it safely.

Each accounting step runs on its own: a failure in one (pricing, the ledger, the record, a
metric) is logged and the others still run, the span always ends, and a hold is always settled.
"""

from __future__ import annotations

import logging
import threading
import time
import timeit
from collections.abc import Callable
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from costspan import _attributes as A
from costspan._admit import Admitted
from costspan._baggage import attribution, metric_tags
from costspan._coerce import text
from costspan._costing import price_usage
from costspan._errors import BudgetExceeded
from costspan._money import micros, usd
from costspan._operations import Attributes, Outcome
from costspan._pricing import Cost
from costspan._records import spend_record
from costspan._reservation import Admission, Settlement
from costspan._runtime import Runtime, once, runtime
from costspan._telemetry import Telemetry
from costspan._usage import TokenUsage, write_usage_attributes

_logger = logging.getLogger(__name__)

# Attributes that identify a call on metrics; bounded in cardinality (no ids, no user data).
_METRIC_KEYS = (
    A.GEN_AI_OPERATION_NAME,
    A.GEN_AI_PROVIDER_NAME,
    A.GEN_AI_REQUEST_MODEL,
    A.SERVER_ADDRESS,
    A.SERVER_PORT,
)


_UNANSWERED: Final = frozenset({"APITimeoutError", "TimeoutException"})


def _maybe_billed(exc: BaseException) -> bool:
    """Whether a call that raised ``exc`` may still have been billed: it timed out waiting for
    the answer (openai's ``APITimeoutError``, httpx's timeouts), so the provider may have done
    the work. (Read by class name: this module does not import openai or httpx.)"""
    return any(cls.__name__ in _UNANSWERED for cls in type(exc).__mro__)


def _attribution() -> dict[str, str]:
    """The caller's attribution baggage; none when it cannot be read (the span and the record
    lose their tags, never the call)."""
    try:
        return attribution()
    except Exception:
        _logger.exception("costspan could not attribute a call; it goes on without tags")
        return {}


def error_type_of(exc: BaseException) -> str:
    """``error.type`` for an exception: its qualified class name, low in cardinality."""
    return type(exc).__qualname__


class Invocation:
    """One call's span, timing and accounting. Created by the wrappers; ended exactly once."""

    __slots__ = (
        "_ended",
        "_linked",
        "_lock",
        "_token",
        "admission",
        "attempts",
        "counter",
        "estimate",
        "first_chunk_at",
        "metric_attributes",
        "model",
        "pending",
        "provider",
        "request_tier",
        "runtime",
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
        counter: Callable[[], int] | None = None,
        current: Runtime | None = None,
    ) -> None:
        self.telemetry = telemetry
        self.estimate = estimate
        self.counter = counter  # costspan's count of the request's input, for calibration
        self.admission: Admission | None = None
        # How many times the client may send the request (1 + its retries): a call that timed
        # out may have been billed for each.
        self.attempts = 1
        # The runtime the call started under (read once: settings, pricer, recorder).
        self.runtime = current = current or runtime()
        # Attributes decided before the call (budget decisions), written with the outcome's in
        # one go: each separate set_attributes() costs a pass through the SDK's validation.
        self.pending: Attributes = {}
        settings = current.settings
        # The baggage of the call's caller: on the span from its start (CostSpanProcessor
        # leaves costspan's own spans to their invocation) and in the spend record.
        self.tags = tags = _attribution() if settings.attribution_keys else {}
        self.span = telemetry.tracer.start_span(
            name,
            kind=SpanKind.CLIENT,
            attributes={**start_attributes, **tags} if tags else start_attributes,
        )
        metric: dict[str, AttributeValue] = {
            k: start_attributes[k] for k in _METRIC_KEYS if k in start_attributes
        }
        if settings.metric_tags:
            metric.update(metric_tags())
        self.metric_attributes = metric
        provider = metric.get(A.GEN_AI_PROVIDER_NAME)
        self.provider: str = provider if isinstance(provider, str) else "openai"
        model = metric.get(A.GEN_AI_REQUEST_MODEL)
        self.model: str | None = model if isinstance(model, str) and model else None
        self.request_tier = text(start_attributes.get(A.OPENAI_REQUEST_SERVICE_TIER))
        self.start_ns = time.time_ns()  # the request time: it selects historic prices
        self.started_at = timeit.default_timer()
        self.first_chunk_at: float | None = None
        self._token: object | None = None
        self._linked: otel_context.Context | None = None
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

    # -- before the call ---------------------------------------------------------------------
    def admitted(self, result: Admitted) -> BudgetExceeded | None:
        """Take what admission decided: its span attributes and metrics, the reservation to
        settle later; returns the refusal to raise (the span has then ended)."""
        attributes = result.attributes
        self.pending.update(attributes)
        cap = attributes.get(A.COSTSPAN_BUDGET_CLAMPED_MAX_TOKENS)
        if cap is None:
            cap = attributes.get(A.COSTSPAN_BUDGET_OUTPUT_CAP_SET)
        if cap is not None:  # the span describes the request that was sent
            self.pending[A.GEN_AI_REQUEST_MAX_TOKENS] = cap
        if (
            result.rejected
            or attributes.get(A.COSTSPAN_BUDGET_DECISION, "allow") != "allow"
            or A.COSTSPAN_LEDGER_FAIL_MODE in attributes
        ):
            self._step(self._budget_metrics, result)
        if result.refusal is not None:
            refusal = result.refusal
            self.fail(type(refusal).__qualname__, str(refusal), exception=refusal)
            return refusal
        self.admission = result.admission
        return None

    def _budget_metrics(self, result: Admitted) -> None:
        meter = self.telemetry.budgets
        decision = result.decision
        if decision is not None:
            # Plain admissions are just calls (gen_ai.client.operation.duration counts them);
            # the counter tracks what budgets changed or refused.
            meter.decisions.add(1, {A.COSTSPAN_BUDGET_DECISION: decision})
        if result.degraded is not None:
            meter.unavailable.add(1, {A.COSTSPAN_LEDGER_FAIL_MODE: result.degraded})
        for reason in result.rejected:
            meter.rejected.add(1, {A.COSTSPAN_BAGGAGE_REJECT_REASON: reason})
            if once(("baggage-rejected", reason)):
                _logger.warning(
                    "costspan ignored a budget entry in inbound baggage (%s); further entries "
                    "rejected for this reason are counted in %s, not logged",
                    reason,
                    A.METRIC_BAGGAGE_REJECTED,
                )

    def rename(self, model: str, operation: str) -> None:
        """The request now asks for another model (a budget downgraded it)."""
        self.span.update_name(f"{operation} {model}")
        self.pending[A.GEN_AI_REQUEST_MODEL] = model
        self.metric_attributes[A.GEN_AI_REQUEST_MODEL] = model
        self.model = model

    # -- progress ----------------------------------------------------------------------------
    def mark_first_chunk(self) -> None:
        if self.first_chunk_at is None:
            self.first_chunk_at = timeit.default_timer()
            ttfc = self.first_chunk_at - self.started_at
            # Written with the outcome's attributes (one pass through the SDK, not two).
            self.pending[A.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = ttfc
            telemetry = self.telemetry
            telemetry.record(
                telemetry.time_to_first_chunk, ttfc, self.metric_attributes, self._span_context()
            )

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

    def succeed(self, outcome: Outcome) -> None:
        """End the span with the outcome's attributes, usage and cost."""
        if not self._claim_end():
            return
        try:
            attrs = outcome.attributes
            if self.pending:
                attrs = {**self.pending, **attrs}
            usage = self._account(attrs, outcome)
            try:
                self._write(attrs)
            except Exception:
                _logger.exception("costspan: write failed; the call goes on")
            try:
                self._record_metrics(attrs, usage, None)
            except Exception:
                _logger.exception("costspan: record_metrics failed; the call goes on")
        finally:
            self._done()

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
        """End the span as failed; ``outcome`` keeps whatever a broken stream had already said.

        An outcome means the request went out (a stream broke midway): what it used is
        accounted for. Without one the provider refused the request and nothing was billed."""
        if not self._claim_end():
            return
        try:
            attrs: Attributes = {**self.pending, **(outcome.attributes if outcome else {})}
            usage = None
            if outcome is not None:
                usage = self._account(attrs, outcome)
            elif exception is not None and _maybe_billed(exception):
                # The request went out and no answer came back: the provider may have
                # processed (and billed) it, once per attempt the client made.
                attrs[A.COSTSPAN_USAGE_MISSING] = True
                self._step(self._settle, None, None, False, self.attempts)
            else:
                self._step(self._release)
            attrs[A.ERROR_TYPE] = error_type
            self._step(self._write, attrs, exception, description)
            self._step(self._record_metrics, attrs, usage, error_type)
        finally:
            self._done()

    def _done(self) -> None:
        # The estimator and counter are the call's closures, which hold the call, which holds
        # this invocation: dropped here, the call's objects are freed as soon as the caller lets
        # go of them (by reference counting, not by the cyclic garbage collector later).
        self.estimate = self.counter = None
        self.span.end()

    # -- accounting (each step on its own; see the module docstring) --------------------------
    def _step(self, step: Callable[..., Any], *args: Any) -> Any:
        try:
            return step(*args)
        except Exception:
            _logger.exception("costspan: %s failed; the call goes on", step.__name__.strip("_"))
            return None

    def _account(self, attrs: Attributes, outcome: Outcome) -> TokenUsage | None:
        """Usage (reported, else estimated), its cost and the budget settlement, added to
        ``attrs``; the spend record kept. Returns the usage."""
        usage = outcome.usage
        if usage is None:
            # The request was sent and may have been billed: never let it go unaccounted.
            attrs[A.COSTSPAN_USAGE_MISSING] = True
            if self.estimate is not None:
                usage = self._step(self.estimate, outcome.text)
        cost: Cost | None = None
        priced = False
        if usage is not None:
            write_usage_attributes(attrs, usage)
            try:
                cost, cost_attrs = self._price(usage, attrs)
            except Exception:
                _logger.exception("costspan: price failed; the call goes on")
            else:
                attrs.update(cost_attrs)
                priced = True
                self._step(self._cost_metrics, usage, cost, attrs)
        if self.admission is None:
            if usage is not None and self.counter is not None:
                self._step(self._learn, usage)
        else:
            settlement = self._step(self._settle, usage, cost, priced)
            if isinstance(settlement, Settlement):
                if settlement.remaining_usd is not None or settlement.overrun_micros:
                    attrs.update(settlement.attributes())
                if settlement.crossed:
                    self._step(self._thresholds, settlement)
                if settlement.overrun_micros:
                    self._step(self._overrun, settlement.overrun_micros)
        if usage is not None:
            self._step(self._record, attrs, usage, cost)
        return usage

    def _price(self, usage: TokenUsage, attrs: Attributes) -> tuple[Cost | None, Attributes]:
        response_model = attrs.get(A.GEN_AI_RESPONSE_MODEL)
        answered = response_model if type(response_model) is str and response_model else None
        tier = attrs.get(A.OPENAI_RESPONSE_SERVICE_TIER)
        priced = price_usage(
            usage,
            models=(answered, self.model),
            provider=self.provider,
            when_ns=self.start_ns,
            service_tier=tier if type(tier) is str and tier else self.request_tier,
            current=self.runtime,
        )
        self._step(self._served_as, priced[0], answered, tier)
        return priced

    def _served_as(self, cost: Cost | None, answered: str | None, tier: object) -> None:
        """What the provider served tells later reservations what to price: the tier a request
        naming none was served at, and the model a requested name was answered by (seen once
        per pair) when that model is dearer or the name has no price at all (a gateway alias,
        an Azure deployment, a router). A dated id of the same model costs the same and teaches
        nothing."""
        current = self.runtime
        if type(tier) is str and tier and self.request_tier in (None, "auto"):
            current.calibration.learn_tier(self.provider, tier)
        requested = self.model
        if (
            cost is None
            or answered is None
            or not requested
            or answered == requested
            or not current.calibration.first_answer(self.provider, requested, answered)
        ):
            return
        pricer, provider, when = current.pricer, self.provider, self.start_ns
        sample = 1000  # tokens of each kind: compares input and output rates together
        theirs = pricer.total(sample, sample, model=answered, provider=provider, when_ns=when)
        ours = pricer.total(sample, sample, model=requested, provider=provider, when_ns=when)
        if theirs is not None and (ours is None or theirs > ours):
            current.calibration.learn_alias(provider, requested, answered)

    def _cost_metrics(self, usage: TokenUsage, cost: Cost | None, attrs: Attributes) -> None:
        dims = self._cost_dimensions(attrs)
        self.telemetry.costs.record(usage, cost, dims, self._span_context())

    def _settle(
        self, usage: TokenUsage | None, cost: Cost | None, priced: bool, attempts: int = 1
    ) -> Settlement:
        """Commit the call's reservation. Without a price (pricing failed) or the provider's
        usage (none came, or only costspan's estimate of it) the call is charged at least what
        it held, its worst case, for each attempt: it was sent, so it may have been billed for
        more than its text shows (reasoning, a cut stream), and spend is never silently lost."""
        admission = self.admission
        if admission is None:
            return Settlement()
        tokens = admission.estimate.tokens
        if usage is not None:
            tokens = (usage.input_tokens or 0) + (usage.output_tokens or 0)
            self._step(self._calibrate, admission, usage)
        spent = admission.held_micros
        if priced:
            spent = micros(cost.total) if cost is not None else 0
        if usage is None or usage.estimated:
            spent = max(spent, admission.held_micros) * attempts
            tokens = max(tokens, admission.estimate.tokens) * attempts
        try:
            return admission.settle(tokens, spent)
        except Exception:
            # One more try: settlements are idempotent by reservation id.
            _logger.exception("costspan could not settle a budget reservation; trying again")
            admission.settled = False
            return admission.settle(tokens, spent)

    def _calibrate(self, admission: Admission, usage: TokenUsage) -> None:
        """Teach the calibration what the provider billed for what costspan counted."""
        estimate = admission.estimate
        if usage.estimated or usage.input_tokens is None or not estimate.counted_input_tokens:
            return
        if estimate.uncounted:
            return  # a file or stored history was not counted: the ratio would be meaningless
        self.runtime.calibration.observe(
            self.provider, estimate.model, estimate.counted_input_tokens, usage.input_tokens
        )

    def _learn(self, usage: TokenUsage) -> None:
        """A call outside any budget still teaches the calibration (sampled: counting costs)."""
        if usage.estimated or usage.input_tokens is None or self.counter is None:
            return
        calibration = runtime().calibration
        model = text(self.metric_attributes.get(A.GEN_AI_REQUEST_MODEL))
        if model is None or not calibration.wants(self.provider, model):
            return
        counted = self.counter()
        if counted:
            calibration.observe(self.provider, model, counted, usage.input_tokens)

    def _release(self) -> None:
        if self.admission is not None:
            self.admission.release()

    def _thresholds(self, settlement: Settlement) -> None:
        for crossing in settlement.crossed:
            event: Attributes = {
                A.COSTSPAN_BUDGET_ID: crossing.label,
                A.COSTSPAN_BUDGET_THRESHOLD: crossing.threshold,
                A.COSTSPAN_BUDGET_SPENT_USD: crossing.spent_usd,
            }
            if self.span.is_recording():
                self.span.add_event(A.EVENT_BUDGET_THRESHOLD, event)
            _logger.warning(
                "costspan budget %r passed %d%% of its cap (spent $%s)",
                crossing.label,
                round(crossing.threshold * 100),
                crossing.spent_usd,
            )
            self.telemetry.budgets.thresholds.add(
                1, {A.COSTSPAN_BUDGET_THRESHOLD: crossing.threshold}
            )

    def _overrun(self, micros_over: int) -> None:
        model = str(self.metric_attributes.get(A.GEN_AI_REQUEST_MODEL, ""))
        self.telemetry.budgets.overruns.add(
            1, {A.GEN_AI_PROVIDER_NAME: self.provider, A.GEN_AI_REQUEST_MODEL: model}
        )
        if once(("overrun", self.provider, model)):
            _logger.warning(
                "costspan: a call to %r of provider %r cost $%s more than the worst case it "
                "reserved; the budget is charged the actual cost. Further overruns of this model "
                "are counted in %s, not logged",
                model,
                self.provider,
                usd(micros_over),
                A.METRIC_BUDGET_OVERRUNS,
            )

    def _record(self, attrs: Attributes, usage: TokenUsage, cost: Cost | None) -> None:
        """Keep the call's spend record."""
        context = self.span.get_span_context()
        decision = attrs.get(A.COSTSPAN_BUDGET_DECISION)
        runtime().recorder.add(
            spend_record(
                time_ns=self.start_ns,
                operation=str(self.metric_attributes.get(A.GEN_AI_OPERATION_NAME, "")),
                provider=self.provider,
                request_model=text(self.metric_attributes.get(A.GEN_AI_REQUEST_MODEL)),
                response_model=text(attrs.get(A.GEN_AI_RESPONSE_MODEL)),
                tags=self.tags,
                usage=usage,
                cost=cost,
                trace_id=context.trace_id,
                span_id=context.span_id,
                decision=None if decision is None else str(decision),
            )
        )

    def _write(
        self,
        attrs: Attributes,
        exception: BaseException | None = None,
        description: str | None = None,
    ) -> None:
        span = self.span
        if not span.is_recording():
            return
        span.set_attributes(attrs)
        if A.ERROR_TYPE in attrs:
            if exception is not None:
                span.record_exception(exception)
            span.set_status(Status(StatusCode.ERROR, description))

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

    def _record_metrics(
        self, span_attrs: Attributes, usage: TokenUsage | None, error_type: str | None
    ) -> None:
        dims: dict[str, AttributeValue] = dict(self.metric_attributes)
        response_model = span_attrs.get(A.GEN_AI_RESPONSE_MODEL)
        if response_model is not None:
            dims[A.GEN_AI_RESPONSE_MODEL] = response_model
        if error_type is not None:
            dims[A.ERROR_TYPE] = error_type
        self.telemetry.record_call(
            dims, timeit.default_timer() - self.started_at, usage, self._span_context()
        )

    def _span_context(self) -> otel_context.Context:
        """The caller's context with this call's span in it: the span is current only while the
        request is sent, and a metric's exemplar must link to it. Made once per call (its cost
        metric, its histograms and a stream's first chunk share it: an exemplar reads only the
        span)."""
        linked = self._linked
        if linked is None:
            linked = self._linked = trace.set_span_in_context(self.span)
        return linked
