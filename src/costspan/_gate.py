"""The budget gate for GenAI spans of other instrumentations: reserve at span start, settle at end.

:class:`~costspan.CostSpanProcessor` sees every span start in the caller's context, before the
request is sent, and every span end. For a GenAI *inference* span (operation ``chat``,
``text_completion``, ``generate_content``, ``embeddings``) of another instrumentation it:

1. **captures** at ``on_start``, from the span's parent context, the budgets and configured limits
   the call is under (:func:`~costspan._scopes.active_scopes`: local ``Budget`` objects, inbound
   baggage budgets, limits by baggage value and window, the span's trace for request windows);
2. **reserves** the worst case knowable there (:func:`foreign_estimate`) in all of them at once and
   raises :class:`~costspan.BudgetExceeded` from ``on_start`` when one has no room (the
   instrumentations tested let that exception reach the caller before anything is sent); the
   hold is renewed while the span is open;
3. **settles** at ``on_end``: commits the span's priced usage and releases the rest of the hold,
   or releases it all when the span failed without usage.

``COSTSPAN_GATE_FOREIGN_SPANS=false`` turns steps 2's reservation and refusal off; the captured
budgets are still charged when the span ends.

**One priced span per provider call.** When inference spans nest for one call, the outermost
counts: a GenAI inference span whose direct parent is a GenAI inference span of the same provider
(another instrumentation's, or costspan's own) is part of that call. It is marked
``costspan.cost.counted_on=<span id of the counting span>``, carries no cost and is charged to
nothing; its usage is kept until the counting span ends, for a counting span that reports none.
costspan's own spans are priced and charged by their own invocation: an instrumentation's span
that wraps one of them is marked as counted on it, and its hold released before costspan's own
admission reserves. Other instrumentations' spans that already carry ``gen_ai.usage.cost.amount``
are left alone.

What is kept per span is bounded: one :class:`Call` per open inference span, keyed by
(trace id, span id), removed at ``on_end``; past :data:`MAX_OPEN` open spans the oldest is
forgotten (its hold released). docs/instrumentations.md states the guarantee per instrumentation.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span
from opentelemetry.trace import SpanContext, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from costspan import _attributes as A
from costspan._admit import exceeded, fail_mode_of, failure_reason, log_failure
from costspan._coerce import count, text
from costspan._errors import BudgetExceeded, BudgetUnavailable, UnpricedModelError
from costspan._estimate import NO_ESTIMATE, Estimate
from costspan._money import display, held, micros
from costspan._pricing import Cost
from costspan._reservation import Admission, Settlement
from costspan._runtime import Runtime, once, runtime
from costspan._scopes import Scope, active_scopes, possibly_limited
from costspan._tokens import count_text
from costspan._usage import TokenUsage
from costspan.ledgers import Ledger, LedgerUnavailable, Reservation, ScopeState

_logger = logging.getLogger(__name__)

INFERENCE: Final = frozenset({"chat", "text_completion", "generate_content", "embeddings"})
"""The GenAI operations that are one provider call each (agent and tool spans are not)."""
OWN_SCOPE: Final = "costspan"
"""The instrumentation scope of costspan's own spans (priced and charged by their invocation)."""
MAX_OPEN: Final = 10_000
"""Open inference spans tracked at most; a span that never ends is forgotten past this."""
MAX_CHILD_USAGES: Final = 64
START_INPUT_TOKENS: Final = 4096
"""The input a call is reserved as when its span carries no content and no call of the same
provider and model has been seen yet (afterwards: a high quantile of what recent calls were
billed, :meth:`~costspan._calibration.Calibration.recent_input`). An estimate, not a bound."""
UNREFUSABLE_SCOPES: Final = frozenset({"com.anthropic.sdk.python"})
"""Instrumentations that swallow exceptions raised while their span starts (the ``anthropic``
SDK's own spans: "never raises: a span that cannot start is None, and the call goes on"). A
refusal there would lose the call from sight while it is still sent, so their spans are never
refused: a call without room goes on, is charged when it ends, and is marked ``unenforced``."""
_TEXT_PARTS: Final = frozenset({"text", "tool_call", "tool_call_response", "reasoning"})
_REMEMBERED: Final = 256

Key = tuple[int, int]


@dataclass(slots=True, eq=False)
class Call:
    """A GenAI inference span of another instrumentation, from its start to its end."""

    key: Key
    owner: int
    """``id()`` of the CostSpanProcessor that tracks it (the first of a provider's to see it)."""
    scope_name: str
    operation: str
    provider: str | None
    model: str
    start_ns: int
    root: Call | None = None
    """The counting span's call, when this span is part of another span's call."""
    counted_on: int | None = None
    """The span id that carries this call's cost when it is not this span."""
    scopes: list[Scope] = field(default_factory=list[Scope])
    rejected: list[str] = field(default_factory=list[str])
    ledger: Ledger | None = None
    hold: Admission | None = None
    decision: str | None = None
    degraded: str | None = None
    estimate: Estimate | None = None
    basis: tuple[str, ...] = ()
    children: list[TokenUsage] = field(default_factory=list[TokenUsage])
    """Usage of the spans marked as part of this call, for a counting span that reports none."""

    @property
    def marked(self) -> bool:
        """Whether another span carries this call's cost."""
        return self.root is not None or self.counted_on is not None

    @property
    def counted_span(self) -> int:
        """The span id that carries this call's cost (the end of the chain, when the counting
        span itself turned out to be counted on costspan's own span inside it)."""
        if self.counted_on is not None:
            return self.counted_on
        root = self.root
        if root is None:
            return self.key[1]
        return root.counted_on if root.counted_on is not None else root.key[1]


class Calls:
    """The open inference spans of the process (bounded), and the last finished copies handed
    on (so that a second CostSpanProcessor of one provider exports the same copy)."""

    def __init__(self, limit: int = MAX_OPEN) -> None:
        self.limit = limit
        self._open: OrderedDict[Key, Call] = OrderedDict()
        self._ended: OrderedDict[Key, ReadableSpan] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._open)

    def __contains__(self, key: Key) -> bool:
        return key in self._open

    def get(self, key: Key) -> Call | None:
        return self._open.get(key)

    def add(self, call: Call) -> Call | None:
        """Track ``call``; returns the oldest call, forgotten to keep the table bounded."""
        with self._lock:
            self._open[call.key] = call
            if len(self._open) > self.limit:
                return self._open.popitem(last=False)[1]
        return None

    def pop(self, key: Key, owner: int) -> Call | None:
        """The call of a span that ended, if ``owner`` tracks it."""
        with self._lock:
            call = self._open.get(key)
            if call is None or call.owner != owner:
                return None
            del self._open[key]
            return call

    def discard(self, key: Key) -> None:
        with self._lock:
            self._open.pop(key, None)

    def remember(self, key: Key, span: ReadableSpan) -> None:
        with self._lock:
            self._ended[key] = span
            if len(self._ended) > _REMEMBERED:
                self._ended.popitem(last=False)

    def ended(self, key: Key) -> ReadableSpan | None:
        return self._ended.get(key)


CALLS: Final = Calls()


# -- span start ---------------------------------------------------------------------------------
def start(span: Span, parent_context: Context | None, owner: int) -> Call | None:
    """Track a GenAI inference span from its start and gate it when it is a call of its own
    under a budget or limit.

    Raises :class:`~costspan.BudgetExceeded` (or :class:`~costspan.UnpricedModelError` under
    ``COSTSPAN_ON_UNPRICED=raise``) when the call must not be sent; the span has then ended,
    marked refused. Returns the call tracked, if any.
    """
    attrs = span.attributes or {}
    operation = attrs.get(A.GEN_AI_OPERATION_NAME)
    if operation not in INFERENCE:
        return None
    context = span.get_span_context()
    key = (context.trace_id, context.span_id)
    parent = span.parent
    parent_call = CALLS.get((parent.trace_id, parent.span_id)) if parent is not None else None
    scope = span.instrumentation_scope
    scope_name = scope.name if scope is not None else ""
    if scope_name == OWN_SCOPE:
        if parent_call is not None:
            _counted_by_own(parent_call, context.span_id)
        return None
    if key in CALLS or A.GEN_AI_USAGE_COST_AMOUNT in attrs:
        return None  # another CostSpanProcessor of this provider has it, or it is priced
    call = Call(
        key,
        owner,
        scope_name,
        str(operation),
        text(attrs.get(A.GEN_AI_PROVIDER_NAME)) or text(attrs.get(A.GEN_AI_SYSTEM)),
        text(attrs.get(A.GEN_AI_REQUEST_MODEL)) or "",
        span.start_time or time.time_ns(),
    )
    if parent is not None and _own_inference(trace.get_current_span(parent_context), parent):
        call.counted_on = parent.span_id  # costspan's own span counts this call
        _track(call)
        return call
    if parent_call is not None and _same_provider(parent_call, call):
        root = parent_call.root or parent_call
        call.root = root
        _track(call)
        _refine(root, attrs)
        return call
    _track(call)
    _gate(call, span, parent_context, attrs)
    return call


def _track(call: Call) -> None:
    forgotten = CALLS.add(call)
    if forgotten is not None:
        release(forgotten)
        if once(("gate-forgot",)):
            _logger.warning(
                "costspan tracks at most %d open GenAI spans of other instrumentations; the "
                "oldest was forgotten (its budget hold released, its cost no longer charged). "
                "Spans that never end are the usual cause.",
                CALLS.limit,
            )


def _own_inference(parent_span: object, parent: SpanContext) -> bool:
    """Whether the parent is costspan's own GenAI inference span (a span of this process)."""
    if not isinstance(parent_span, ReadableSpan):
        return False
    context = parent_span.context
    scope = parent_span.instrumentation_scope
    return (
        context is not None
        and context.span_id == parent.span_id
        and scope is not None
        and scope.name == OWN_SCOPE
        and (parent_span.attributes or {}).get(A.GEN_AI_OPERATION_NAME) in INFERENCE
    )


def _same_provider(parent: Call, child: Call) -> bool:
    if parent.provider is None or child.provider is None:
        return True
    return parent.provider.lower() == child.provider.lower()


def _counted_by_own(parent: Call, own_span_id: int) -> None:
    """costspan's own span started under another instrumentation's span of the same call: its
    own admission holds and charges the call, so the outer span's hold goes now."""
    root = parent.root or parent
    if root.counted_on is None:
        root.counted_on = own_span_id
        release(root)


# -- the gate -----------------------------------------------------------------------------------
def _gate(call: Call, span: Span, parent_context: Context | None, attrs: Mapping[str, Any]) -> None:
    token = otel_context.attach(parent_context) if parent_context is not None else None
    try:
        if not possibly_limited():
            return
        try:
            call.scopes, call.rejected = active_scopes(call.key[0])
        except Exception as exc:
            _unreadable(call, span, exc)
            return
    finally:
        if token is not None:
            otel_context.detach(token)
    if not call.scopes:
        return
    current = runtime()
    call.ledger = current.ledger
    for scope in call.scopes:
        if scope.budget is not None and scope.budget.retired:
            scope.budget.revive(call.ledger)
    if not current.settings.gate_foreign_spans:
        return  # charged when the span ends, never refused
    try:
        call.estimate, call.basis = foreign_estimate(attrs, call, current)
    except Exception as exc:
        _fail_safe(call, span, exc, current, NO_ESTIMATE)
        return
    estimate = call.estimate
    if (
        estimate.usd is None
        and current.settings.on_unpriced == "raise"
        and call.scope_name not in UNREFUSABLE_SCOPES
    ):
        _refuse(call, span, UnpricedModelError(call.model, call.provider or "openai"))
    lease = current.settings.lease_seconds
    try:
        call.hold = _hold(call.scopes, estimate, call.ledger.reserve, call.ledger, lease)
    except _Refused as refused:
        _not_admitted(call, span, exceeded(refused.scope, estimate, refused.state))
        return
    except LedgerUnavailable as exc:  # COSTSPAN_FAIL_MODE=closed and the ledger is away
        call.degraded = "closed"
        unavailable = BudgetUnavailable(
            scope=call.scopes[0].label,
            model=call.model,
            reason=f"the ledger is unreachable ({exc})",
        )
        _not_admitted(call, span, unavailable)
        return
    except Exception as exc:
        _fail_safe(call, span, exc, current, estimate)
        return
    _admitted(call, current)


def _admitted(call: Call, current: Runtime) -> None:
    hold = call.hold
    assert hold is not None
    call.decision = hold.decision
    call.degraded = hold.degraded
    hold.hold_while_running(current.renewer, current.settings.lease_seconds)


def foreign_estimate(
    attrs: Mapping[str, Any], call: Call, current: Runtime
) -> tuple[Estimate, tuple[str, ...]]:
    """The worst case knowable at a span's start, and what it was based on.

    Output: ``gen_ai.request.max_tokens`` times ``gen_ai.request.choice.count``; without a cap
    on the span, ``COSTSPAN_DEFAULT_MAX_OUTPUT_TOKENS`` (the request itself is not capped: an
    estimate, not a bound). Input: the span's captured content (``gen_ai.input.messages`` and
    ``gen_ai.system_instructions``, counted offline and calibrated to the provider), else what
    recent calls of the provider and model were billed, else :data:`START_INPUT_TOKENS`.
    """
    model, provider = call.model, call.provider or "openai"
    output = 0
    if call.operation == A.OP_EMBEDDINGS:
        basis_out = "output:none"
    else:
        cap = count(attrs.get(A.GEN_AI_REQUEST_MAX_TOKENS))
        basis_out = "output:max_tokens"
        if cap is None:
            cap = current.settings.default_max_output_tokens
            basis_out = "output:default"
        output = cap * max(count(attrs.get(A.GEN_AI_REQUEST_CHOICE_COUNT)) or 1, 1)
    content = content_tokens(attrs, model)
    counted = 0 if content is None else current.calibration.calibrated(provider, model, content[0])
    if content is not None and content[1]:
        input_tokens, basis_in = counted, "input:content"
    else:
        recent = current.calibration.recent_input(provider, model)
        fallback = START_INPUT_TOKENS if recent is None else recent
        input_tokens = max(counted, fallback)
        basis_in = "input:start" if recent is None else "input:recent"
    cost = current.pricer.price(
        TokenUsage(input_tokens, output), models=(model,), provider=provider, when_ns=call.start_ns
    )
    estimate = Estimate(model, input_tokens, output, None if cost is None else cost.total)
    return estimate, (basis_out, basis_in)


def content_tokens(attrs: Mapping[str, Any], model: str) -> tuple[int, bool] | None:
    """(tokens, complete) of the content a span captured at start; None without content.

    The JSON text of ``gen_ai.input.messages`` and ``gen_ai.system_instructions`` is counted as
    a whole (its keys and quotes only add tokens). ``complete`` is False when a part is not text
    (an image, a file, a URI): its tokens are not in the count.
    """
    found = False
    tokens = 0
    complete = True
    for name in (A.GEN_AI_INPUT_MESSAGES, A.GEN_AI_SYSTEM_INSTRUCTIONS):
        value = attrs.get(name)
        if value is None:
            continue
        raw = value if isinstance(value, str) else json.dumps(list(value), default=str)
        found = True
        tokens += count_text(raw, model)
        complete = complete and _text_only(raw)
    return (tokens, complete) if found else None


def _text_only(raw: str) -> bool:
    try:
        data: object = json.loads(raw)
    except ValueError:
        return True  # plain text, counted as it is
    stack: list[object] = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            typed: dict[str, object] = item  # pyright: ignore[reportUnknownVariableType]
            kind = typed.get("type")
            if isinstance(kind, str) and "parts" not in typed and kind not in _TEXT_PARTS:
                return False
            stack.extend(typed.values())
        elif isinstance(item, list):
            stack.extend(item)  # pyright: ignore[reportUnknownArgumentType]
    return True


class _Refused(Exception):
    def __init__(self, scope: Scope, state: ScopeState | None) -> None:
        super().__init__(scope.label)
        self.scope = scope
        self.state = state


_Reserve = Callable[[str, Sequence[Any], int, int, float], Reservation]


def _hold(
    scopes: list[Scope],
    estimate: Estimate,
    reserve: _Reserve,
    ledger: Ledger,
    lease_s: float,
) -> Admission:
    """Reserve ``estimate`` in every scope at once. A ``warn`` scope without room lets the call
    through unheld (it is charged when the span ends); any other action refuses: the request of
    another instrumentation cannot be downgraded, clamped or truncated."""
    admission = Admission(scopes, secrets.token_hex(12), ledger, estimate, inline=True)
    amount, tokens = held(estimate.usd, estimate.tokens)
    for _ in range(len(scopes) + 1):
        result = reserve(admission.rid, admission.held(), amount, tokens, lease_s)
        admission.states.update((state.key, state) for state in result.states)
        if result.degraded is not None:
            admission.degraded = result.degraded
        if result.granted:
            admission.held_micros = amount
            return admission
        scope = next(x for x in scopes if x.key == result.failed_scope)
        if scope.action != "warn" or scope in admission.warned:
            raise _Refused(scope, admission.states.get(scope.key))
        admission.warned.append(scope)
        admission.decision = "warn"
    raise _Refused(scopes[0], None)


def _refine(root: Call, attrs: Mapping[str, Any]) -> None:
    """A span nested in a call says more than the call's first span did (the ``anthropic``
    SDK's own span carries ``max_tokens``, the instrumentation's span around it does not): the
    call's hold is replaced by one reserved with it. The new hold is taken before the old one
    goes, so the call is never unheld; if both do not fit, the old one stays."""
    hold = root.hold
    if hold is None or hold.settled:
        return
    learns_cap = (
        "output:default" in root.basis and count(attrs.get(A.GEN_AI_REQUEST_MAX_TOKENS)) is not None
    )
    learns_content = (
        "input:content" not in root.basis and content_tokens(attrs, root.model) is not None
    )
    if not (learns_cap or learns_content):
        return
    current = runtime()
    try:
        estimate, basis = foreign_estimate(attrs, root, current)
        same = estimate.usd is not None and micros(estimate.usd) == hold.held_micros
        if same and hold.estimate.usd is not None:
            root.basis = basis
            return
        ledger = hold.ledger
        lease = current.settings.lease_seconds
        better = _hold(root.scopes, estimate, ledger.reserve, ledger, lease)
    except Exception:
        _logger.debug("costspan kept a call's first hold (a better one did not fit)", exc_info=True)
        return
    better.hold_while_running(current.renewer, current.settings.lease_seconds)
    root.hold, root.estimate, root.basis, root.decision = better, estimate, basis, better.decision
    hold.release()
    # The ledger answered while the first hold was still in: take it out of the counters the
    # settlement projects the remaining budget from.
    first = {limit.key for limit in hold.held()}
    for key, state in list(better.states.items()):
        if key in first:
            better.states[key] = state._replace(
                held_micros=max(state.held_micros - hold.held_micros, 0),
                held_tokens=max(state.held_tokens - hold.estimate.tokens, 0),
            )


def _not_admitted(call: Call, span: Span, refusal: BudgetExceeded) -> None:
    """No room (or no ledger to ask): refuse, unless the instrumentation cannot be refused."""
    if call.scope_name not in UNREFUSABLE_SCOPES:
        _refuse(call, span, refusal)
    call.decision = "unenforced"
    if once(("gate-unrefusable", call.scope_name)):
        _logger.warning(
            "costspan could not refuse a call traced by %s (it ignores errors raised while its "
            "span starts), so a call went on although %s; it is charged when it ends. Further "
            "such calls are counted in %s{costspan.budget.decision=unenforced}. Install the "
            "official OpenTelemetry instrumentation of that client (its spans can be refused).",
            call.scope_name,
            refusal,
            A.METRIC_BUDGET_DECISIONS,
        )


def _refuse(call: Call, span: Span, refusal: Exception) -> None:
    """End the span as refused (it is exported like costspan's own refusals) and raise."""
    CALLS.discard(call.key)
    attrs: dict[str, AttributeValue] = {
        A.COSTSPAN_BUDGET_DECISION: "refuse",
        A.COSTSPAN_BUDGET_IDS: [scope.label for scope in call.scopes],
        A.ERROR_TYPE: type(refusal).__qualname__,
    }
    if isinstance(refusal, BudgetExceeded):
        attrs[A.COSTSPAN_BUDGET_REFUSED_BY] = refusal.scope
    if call.estimate is not None and call.estimate.usd is not None:
        attrs[A.COSTSPAN_BUDGET_ESTIMATE_USD] = display(call.estimate.usd)
    if call.basis:
        attrs[A.COSTSPAN_BUDGET_ESTIMATE_BASIS] = list(call.basis)
    if call.degraded is not None:
        attrs[A.COSTSPAN_LEDGER_FAIL_MODE] = call.degraded
    try:
        span.set_attributes(attrs)
        span.record_exception(refusal)
        span.set_status(Status(StatusCode.ERROR, str(refusal)))
        span.end()
    except Exception:
        _logger.exception("costspan could not end a refused span")
    raise refusal


# -- when the gate itself fails (the fail mode decides, as for costspan's own calls) -------------
_GATED: Final = "the budgets of another instrumentation's GenAI span"


def _unreadable(call: Call, span: Span, exc: Exception) -> None:
    current = runtime()
    mode = fail_mode_of(current.ledger, current)
    log_failure(exc, mode, _GATED)
    call.degraded = mode
    if mode == "open":
        call.decision = "unchecked"
        return
    reason = f"its budgets could not be read ({failure_reason(exc)})"
    unavailable = BudgetUnavailable(
        scope="(unreadable budgets)", model=call.model, reason=reason, fail_mode=mode
    )
    _not_admitted(call, span, unavailable)


def _fail_safe(
    call: Call, span: Span, exc: Exception, current: Runtime, estimate: Estimate
) -> None:
    """``open``: the call goes on unchecked (and is charged when it ends); ``closed``: refused;
    ``local``: reserved in this process's own counters (with a tokenizer-free estimate if the
    estimate failed), refused if even that fails."""
    ledger = call.ledger or current.ledger
    mode = fail_mode_of(ledger, current)
    log_failure(exc, mode, _GATED)
    call.degraded = mode
    if mode == "open":
        call.decision = "unchecked"
        return
    from costspan.ledgers import FailSafeLedger  # a failure path: the engine is loaded by now

    if mode == "local" and isinstance(ledger, FailSafeLedger):
        if estimate is NO_ESTIMATE:
            estimate = _crude_estimate(call, current)
        call.estimate = estimate
        lease = current.settings.lease_seconds
        try:
            call.hold = _hold(call.scopes, estimate, ledger.reserve_locally, ledger, lease)
        except _Refused as refused:
            _not_admitted(call, span, exceeded(refused.scope, estimate, refused.state))
            return
        except Exception as again:
            _logger.error("costspan could not check budgets locally either", exc_info=again)
        else:
            _admitted(call, current)
            return
    labels = [scope.label for scope in call.scopes]
    unavailable = BudgetUnavailable(
        scope=labels[0] if labels else "(unknown)",
        model=call.model,
        reason=f"checking them failed ({failure_reason(exc)})",
        fail_mode=mode,
    )
    _not_admitted(call, span, unavailable)


def _crude_estimate(call: Call, current: Runtime) -> Estimate:
    """Without a working estimate: the settings' input and output bounds, priced if possible."""
    input_tokens = current.settings.max_input_tokens
    output = current.settings.default_max_output_tokens
    try:
        cost = current.pricer.price(
            TokenUsage(input_tokens, output),
            models=(call.model,),
            provider=call.provider or "openai",
            when_ns=call.start_ns,
        )
    except Exception:
        cost = None
    return Estimate(call.model, input_tokens, output, None if cost is None else cost.total)


# -- span end -----------------------------------------------------------------------------------
def release(call: Call) -> None:
    """Free a call's hold, if it has one (never billed, or counted by another span)."""
    hold = call.hold
    if hold is None:
        return
    try:
        hold.release()
    except Exception:
        _logger.exception("costspan could not release a budget hold (it expires with its lease)")


def keep_child_usage(call: Call, usage: TokenUsage | None) -> None:
    """A marked span ended: keep its usage for the counting span (bounded)."""
    root = call.root
    if root is not None and usage is not None and len(root.children) < MAX_CHILD_USAGES:
        root.children.append(usage)


def children_usage(call: Call) -> TokenUsage | None:
    """The usage the spans marked as part of ``call`` reported, summed (None: none did)."""
    if not call.children:
        return None

    def total(values: list[int | None]) -> int | None:
        known = [v for v in values if v is not None]
        return sum(known) if known else None

    kids = call.children
    return TokenUsage(
        input_tokens=total([u.input_tokens for u in kids]),
        output_tokens=total([u.output_tokens for u in kids]),
        cache_read_tokens=total([u.cache_read_tokens for u in kids]),
        cache_write_tokens=total([u.cache_write_tokens for u in kids]),
        reasoning_tokens=total([u.reasoning_tokens for u in kids]),
    )


@dataclass(frozen=True, slots=True)
class Charged:
    """What settling a call left: span attributes, and the settlement (thresholds, overrun)."""

    attributes: dict[str, AttributeValue]
    settlement: Settlement | None = None


def settle(call: Call, usage: TokenUsage | None, cost: Cost | None, failed: bool) -> Charged:
    """Charge the budgets the call started under with its actual cost; or release its hold
    (failed without usage); or, sent without usage, charge what it held: its cost is unknown,
    and spend is never dropped in silence. Calls without budgets are charged to nothing."""
    if not call.scopes:
        return Charged({})
    attrs = _budget_attributes(call)
    if usage is None:
        if failed or call.hold is None:
            release(call)
            return Charged(attrs)
        hold = call.hold
        return Charged(attrs, _settle(call, hold, hold.estimate.tokens, hold.held_micros))
    tokens = (usage.input_tokens or 0) + (usage.output_tokens or 0)
    spent = micros(cost.total) if cost is not None else 0
    hold = call.hold
    if hold is None:
        # Not held (gate off, unchecked, unenforced, a warn): charged after the fact.
        ledger = call.ledger or runtime().ledger
        hold = Admission(call.scopes, secrets.token_hex(12), ledger, NO_ESTIMATE, inline=True)
    settlement = _settle(call, hold, tokens, spent)
    attrs.update(settlement.attributes())
    return Charged(attrs, settlement)


def observe(call: Call, usage: TokenUsage) -> None:
    """Teach the calibration what this call's input was billed (the estimate of the next call
    of the provider and model whose span carries no content)."""
    if usage.input_tokens is not None and not usage.estimated:
        provider = call.provider or "openai"
        runtime().calibration.observe_size(provider, call.model, usage.input_tokens)


def _settle(call: Call, hold: Admission, tokens: int, spent: int) -> Settlement:
    try:
        return hold.settle(tokens, spent)
    except Exception:
        # Once more: settlements are idempotent by reservation id.
        _logger.exception("costspan could not settle a budget reservation; trying again")
        hold.settled = False
        return hold.settle(tokens, spent)


def _budget_attributes(call: Call) -> dict[str, AttributeValue]:
    attrs: dict[str, AttributeValue] = {
        A.COSTSPAN_BUDGET_IDS: tuple(scope.label for scope in call.scopes),
    }
    if call.decision is not None:
        attrs[A.COSTSPAN_BUDGET_DECISION] = call.decision
    estimate = call.estimate
    if call.hold is not None and estimate is not None and estimate.usd is not None:
        attrs[A.COSTSPAN_BUDGET_ESTIMATE_USD] = display(estimate.usd)
    if call.basis and call.hold is not None:
        attrs[A.COSTSPAN_BUDGET_ESTIMATE_BASIS] = call.basis
    if call.degraded is not None:
        attrs[A.COSTSPAN_LEDGER_FAIL_MODE] = call.degraded
    return attrs
