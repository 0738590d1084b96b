"""Admission: before a call is sent, reserve its worst case in every budget that applies.

For each call made under one or more budgets or configured limits:

1. Estimate the worst case (:mod:`costspan._estimate`).
2. Reserve that amount in every scope at once, all or nothing (the runtime's ledger).
3. If a scope refuses, its action decides, before anything is sent: block (a
   :class:`~costspan.BudgetExceeded`), downgrade the model, clamp the output cap, truncate the
   prompt, let it through with a warning, or ask the user's callable. Then reserve again.

The refusing scope's action applies: an inner budget's ``downgrade`` never masks an outer
budget's ``block``, because the outer scope is the one that refuses. The result is an
:class:`Admitted`: the reservation to settle after the call (:mod:`costspan._reservation`), the
request changes and span attributes to write, or the refusal to raise. Nothing here writes a
span or a metric; the invocation does.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, cast

from opentelemetry.util.types import AttributeValue

from costspan import _attributes as A
from costspan._coerce import given
from costspan._errors import BudgetExceeded, BudgetUnavailable, UnpricedModelError
from costspan._estimate import NO_ESTIMATE, Estimate, fallback_bound, project
from costspan._money import display, held, usd
from costspan._operations import Operation
from costspan._reservation import Admission, blocks, reservation_id
from costspan._runtime import Runtime, once, runtime
from costspan._scopes import Scope, active_scopes
from costspan._usage import TokenUsage
from costspan.ledgers import (
    Ledger,
    LedgerUnavailable,
    Reservation,
    ScopeLimit,
    ScopeState,
)

_logger = logging.getLogger(__name__)

MIN_CLAMP_TOKENS: Final = 16
"""Below this many affordable output tokens a clamp refuses instead (an answer that short is no
answer). Reasoning models spend output tokens on reasoning first: a small clamp may leave them
with an empty answer and ``finish_reason="length"``."""


@dataclass(slots=True)
class Request:
    """What admission needs to know of a call; ``kwargs`` is the call's own (copied) dict, which
    actions rewrite."""

    operation: Operation
    kwargs: dict[str, Any]
    model: str
    provider: str
    when_ns: int
    trace_id: int = 0
    """The call's trace, which names its per-request windows (0: the current span's)."""


@dataclass(slots=True)
class Admitted:
    """What admission decided: a reservation to settle, or a refusal to raise."""

    admission: Admission | None
    attributes: dict[str, AttributeValue] = field(default_factory=dict[str, AttributeValue])
    """Span attributes: the decision, the budgets, and the changes actions made."""
    refusal: BudgetExceeded | None = None
    rejected: list[str] = field(default_factory=list[str])
    """Why inbound budget entries were ignored (malformed, oversized...)."""

    @property
    def decision(self) -> str | None:
        """The decision when budgets changed or refused the call (None: allowed as asked)."""
        value = self.attributes.get(A.COSTSPAN_BUDGET_DECISION)
        return None if value in (None, "allow") else str(value)

    @property
    def degraded(self) -> str | None:
        """The fail mode that decided without the shared ledger, if one did."""
        value = self.attributes.get(A.COSTSPAN_LEDGER_FAIL_MODE)
        return None if value is None else str(value)


class UserError(Exception):
    """Internal: the user's ``on_exceed`` callable raised; its exception reaches the caller."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(repr(exc))
        self.exc = exc


class Refusal(Exception):
    """Internal: the admission loop gives up on a call (turned into BudgetExceeded)."""

    def __init__(self, scope: Scope, state: ScopeState | None) -> None:
        super().__init__(scope.label)
        self.scope = scope
        self.state = state


def exceeded(scope: Scope, estimate: Estimate, state: ScopeState | None) -> BudgetExceeded:
    """The refusal of a call by ``scope``, from the ledger's own answer (the scope's spend and
    its tightest caps at the refusal)."""
    state = state or ScopeState(scope.key)
    room = state.room_micros
    return BudgetExceeded(
        budget=scope.budget,
        scope=scope.label,
        spent_usd=usd(state.spent_micros),
        remaining_usd=None if room is None else usd(room),
        remaining_tokens=state.room_tokens,
        estimate_usd=estimate.usd,
        estimate_tokens=estimate.tokens,
        model=estimate.model,
        held_usd=usd(state.held_micros),
        cap_usd=None if state.cap_micros is None else usd(state.cap_micros),
    )


# What the admission loop asks of the ledger: reserve (rid, scopes, usd µ$, tokens).
_Ask = tuple[str, list[ScopeLimit], int, int]


@dataclass(slots=True)
class Admitter:
    """Runs the admission loop for one call.

    The loop is a generator that yields each reservation it needs and is sent the ledger's
    answer, so one loop serves both the blocking and the asyncio ledger calls.
    """

    request: Request
    scopes: list[Scope]
    runtime: Runtime
    ledger: Ledger
    changes: dict[str, AttributeValue] = field(default_factory=dict[str, AttributeValue])
    degraded: str | None = None
    """The fail mode that answered instead of the shared ledger, if one did."""

    @property
    def kwargs(self) -> dict[str, Any]:
        return self.request.kwargs

    @property
    def lease_s(self) -> float:
        """How long a hold lives unless renewed (``COSTSPAN_LEASE_SECONDS``)."""
        return self.runtime.settings.lease_seconds

    def run(self) -> Generator[_Ask, Reservation, Admission]:
        for scope in self.scopes:
            budget = scope.budget
            if budget is not None and budget.retired:
                budget.revive(self.ledger)  # a call still running in a left budget
        admission = Admission(self.scopes, reservation_id(), self.ledger, NO_ESTIMATE)
        self._bound_output()
        estimate = self.estimate()
        for _ in range(len(self.scopes) + 4):
            amount, tokens = held(estimate.usd, estimate.tokens)
            result = yield (admission.rid, admission.held(), amount, tokens)
            states = admission.states
            for state in result.states:
                states[state.key] = state
            if result.degraded is not None:
                admission.degraded = self.degraded = result.degraded
            if result.granted:
                admission.estimate = estimate
                admission.held_micros = amount
                return admission
            scope = next(x for x in self.scopes if x.key == result.failed_scope)
            estimate = self._act(scope, estimate, admission, result)
        raise Refusal(self.scopes[0], None)

    def _bound_output(self) -> None:
        """An uncapped request could answer with as many tokens as its model allows, far past
        any estimate: under a budget or limit that enforces (any action but warn) it gets the
        cap it is reserved with (``COSTSPAN_DEFAULT_MAX_OUTPUT_TOKENS``), marked on the span.
        With ``COSTSPAN_UNCAPPED_OUTPUT=reserve`` the request is left alone and the model's
        largest answer is reserved instead (see :func:`costspan._estimate.output_bound`)."""
        r = self.request
        operation = r.operation
        kwargs = r.kwargs
        if (
            operation.name == A.OP_EMBEDDINGS
            or operation.output_cap(kwargs) is not None
            or operation.implicit_cap(r.provider) is not None
            or operation.invalid_cap(kwargs)  # the caller's own (invalid) cap is sent as given
        ):
            return
        for scope in self.scopes:
            if scope.action != "warn":
                break
        else:
            return  # warn only: nothing enforces a cap
        settings = self.runtime.settings
        if settings.uncapped_output == "reserve" and (
            self.runtime.pricer.context_window(r.model, r.provider) is not None
        ):
            return  # the model's largest answer is reserved instead (output_bound)
        cap = settings.default_max_output_tokens
        kwargs[operation.cap_param(kwargs, r.provider)] = cap
        self.changes[A.COSTSPAN_BUDGET_OUTPUT_CAP_SET] = cap

    def estimate(self) -> Estimate:
        r = self.request
        current = self.runtime
        estimate = project(r.operation, r.kwargs, r.model, r.provider, r.when_ns, current=current)
        if estimate.usd is None and current.settings.on_unpriced == "raise":
            raise UnpricedModelError(r.model, r.provider)
        return estimate

    def _act(
        self, scope: Scope, estimate: Estimate, admission: Admission, result: Reservation
    ) -> Estimate:
        action = scope.action
        state = admission.states.get(scope.key)
        if action == "block":
            raise Refusal(scope, state)
        if action == "warn":
            admission.warned.append(scope)
            admission.decision = "warn"
            return estimate
        if action == "downgrade":
            cheaper = scope.downgrade.get(self.request.model)
            if cheaper is None:
                raise Refusal(scope, state)
            self.changes.setdefault(A.COSTSPAN_BUDGET_ORIGINAL_MODEL, self.request.model)
            self.request.model = cheaper
            self.kwargs["model"] = cheaper
            admission.decision = "downgrade"
            return self.estimate()
        if action == "clamp":
            return self._clamp(scope, estimate, admission, result)
        if action == "truncate":
            return self._truncate(scope, admission, state)
        if callable(action):
            try:
                overrides: object = action(exceeded(scope, estimate, state))
            except BaseException as exc:
                raise UserError(exc) from exc  # the user's own exception, passed on unchanged
            if not isinstance(overrides, Mapping) or not overrides:
                raise Refusal(scope, state)
            changes = cast("Mapping[object, object]", overrides)
            self.kwargs.update({str(k): v for k, v in changes.items()})
            self.request.model = str(self.kwargs.get("model", self.request.model))
            admission.decision = "callable"
            return self.estimate()
        raise Refusal(scope, state)

    @staticmethod
    def _room(result: Reservation) -> tuple[Decimal | None, int | None]:
        """The least USD and token room among the scopes the ledger just checked."""
        room_usd: Decimal | None = None
        tokens: int | None = None
        for state in result.states:
            if state.room_micros is not None:
                room = usd(state.room_micros)
                room_usd = room if room_usd is None else min(room_usd, room)
            if state.room_tokens is not None:
                tokens = state.room_tokens if tokens is None else min(tokens, state.room_tokens)
        return room_usd, tokens

    def _clamp(
        self, scope: Scope, estimate: Estimate, admission: Admission, result: Reservation
    ) -> Estimate:
        state = admission.states.get(scope.key)
        room_usd, room_tokens = self._room(result)
        operation = self.request.operation
        n = operation.choices(self.kwargs)
        affordable = math.inf
        if room_tokens is not None:
            affordable = (room_tokens - estimate.input_tokens) // n
        if room_usd is not None and estimate.usd is not None:
            r = self.request
            pricer = self.runtime.pricer
            base = pricer.price(
                TokenUsage(estimate.input_tokens, 0),
                models=(r.model,),
                provider=r.provider,
                when_ns=r.when_ns,
            )
            # The price of a million output tokens at this prompt's tier gives the output rate.
            full = pricer.price(
                TokenUsage(estimate.input_tokens, 1_000_000),
                models=(r.model,),
                provider=r.provider,
                when_ns=r.when_ns,
            )
            if base is None or full is None:
                raise Refusal(scope, state)
            rate = (full.total - base.total) / 1_000_000
            left = room_usd - base.total
            if rate > 0:
                affordable = min(affordable, int(left / rate) // n)
            elif left < 0:
                affordable = 0
        cap = operation.output_cap(self.kwargs)
        if cap is not None:
            affordable = min(affordable, cap)
        if affordable == math.inf or affordable < MIN_CLAMP_TOKENS:
            raise Refusal(scope, state)
        new_cap = int(affordable)
        self.kwargs[operation.cap_param(self.kwargs, self.request.provider)] = new_cap
        for name in operation.cap_params:  # a second cap the request sets is lowered too
            if given(self.kwargs, name) is not None:
                self.kwargs[name] = new_cap
        self.changes[A.COSTSPAN_BUDGET_CLAMPED_MAX_TOKENS] = new_cap
        admission.decision = "clamp"
        return self.estimate()

    def _truncate(self, scope: Scope, admission: Admission, state: ScopeState | None) -> Estimate:
        key = "messages" if "messages" in self.kwargs else "input"
        items = self.kwargs.get(key)
        if not isinstance(items, list) or len(items) < 2:  # pyright: ignore[reportUnknownArgumentType]
            raise Refusal(scope, state)
        messages: list[Any] = list(items)  # pyright: ignore[reportUnknownArgumentType]
        # Drop the oldest message that is not a system/developer instruction.
        for i, message in enumerate(messages[:-1]):
            role = (
                cast("Mapping[str, object]", message).get("role")
                if isinstance(message, Mapping)
                else None
            )
            if role not in ("system", "developer"):
                del messages[i]
                break
        else:
            raise Refusal(scope, state)
        self.kwargs[key] = messages
        dropped = int(self.changes.get(A.COSTSPAN_BUDGET_DROPPED_MESSAGES, 0)) + 1  # pyright: ignore[reportArgumentType]
        self.changes[A.COSTSPAN_BUDGET_DROPPED_MESSAGES] = dropped
        admission.decision = "truncate"
        return self.estimate()


def _admitter(request: Request) -> tuple[Admitter | None, list[str]]:
    scopes, rejected = active_scopes(request.trace_id)
    if not scopes:
        return None, rejected
    current = runtime()
    return Admitter(request, scopes, current, current.ledger), rejected


def admit(request: Request) -> Admitted:
    """Admit a call. Mutates ``request.kwargs`` for actions. Raises only what a user asked for
    (``UnpricedModelError``; :class:`UserError` around an ``on_exceed`` callable's own
    exception); any other failure is decided by the fail mode (:func:`_fail_safe`)."""
    try:
        admitter, rejected = _admitter(request)
    except Exception as exc:
        return _unreadable(request, exc)
    if admitter is None:
        return Admitted(None, rejected=rejected)
    loop = admitter.run()
    reserve = admitter.ledger.reserve
    lease_s = admitter.lease_s
    try:
        ask = next(loop)
        while True:
            ask = loop.send(reserve(*ask, lease_s))
    except StopIteration as done:
        return _admitted(admitter, done.value, rejected)
    except (Refusal, LedgerUnavailable) as exc:
        return _refused(admitter, exc, rejected)
    except UserError:
        raise
    except UnpricedModelError:
        raise
    except Exception as exc:
        return _fail_safe(admitter, exc, rejected)


async def aadmit(request: Request) -> Admitted:
    """:func:`admit` for async calls: a ledger that blocks is awaited, never called."""
    try:
        admitter, rejected = _admitter(request)
    except Exception as exc:
        return _unreadable(request, exc)
    if admitter is None:
        return Admitted(None, rejected=rejected)
    if not blocks(admitter.ledger):
        return admit(request)
    loop = admitter.run()
    try:
        ask = next(loop)
        while True:
            ask = loop.send(await admitter.ledger.areserve(*ask, admitter.lease_s))
    except StopIteration as done:
        return _admitted(admitter, done.value, rejected)
    except (Refusal, LedgerUnavailable) as exc:
        return _refused(admitter, exc, rejected)
    except UserError:
        raise
    except UnpricedModelError:
        raise
    except Exception as exc:
        return _fail_safe(admitter, exc, rejected)


def _admitted(admitter: Admitter, admission: Admission, rejected: list[str]) -> Admitted:
    admission.hold_while_running(admitter.runtime.renewer, admitter.lease_s)
    attributes = admission.attributes()
    if admitter.changes:
        attributes.update(admitter.changes)
    return Admitted(admission, attributes, None, rejected)


def _refused(
    admitter: Admitter, cause: Refusal | LedgerUnavailable, rejected: list[str]
) -> Admitted:
    scopes, r = admitter.scopes, admitter.request
    try:
        estimate = project(r.operation, r.kwargs, r.model, r.provider, r.when_ns)
    except Exception:
        estimate = Estimate(r.model, 0, 0, None)  # the refusal stands; only its numbers are gone
    attrs: dict[str, AttributeValue] = {
        A.COSTSPAN_BUDGET_DECISION: "refuse",
        A.COSTSPAN_BUDGET_IDS: [scope.label for scope in scopes],
    }
    exc: BudgetExceeded
    if isinstance(cause, LedgerUnavailable):
        exc = BudgetUnavailable(
            scope=scopes[0].label, model=r.model, reason=f"the ledger is unreachable ({cause})"
        )
        attrs[A.COSTSPAN_LEDGER_FAIL_MODE] = "closed"
    else:
        exc = exceeded(cause.scope, estimate, cause.state)
        attrs[A.COSTSPAN_BUDGET_REFUSED_BY] = cause.scope.label
        if admitter.degraded is not None:  # refused by this process's own counters
            attrs[A.COSTSPAN_LEDGER_FAIL_MODE] = admitter.degraded
    if estimate.usd is not None:
        attrs[A.COSTSPAN_BUDGET_ESTIMATE_USD] = display(estimate.usd)
    return Admitted(None, attrs, exc, rejected)


# -- when admission itself fails ----------------------------------------------------------------
def failure_reason(exc: Exception) -> str:
    """An exception as one short line: its type and the first line of its message."""
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _unavailable(
    labels: list[str], model: str, reason: str, mode: str, rejected: list[str]
) -> Admitted:
    attrs: dict[str, AttributeValue] = {
        A.COSTSPAN_BUDGET_DECISION: "refuse",
        A.COSTSPAN_BUDGET_IDS: labels,
        A.COSTSPAN_LEDGER_FAIL_MODE: mode,
    }
    exc = BudgetUnavailable(scope=labels[0], model=model, reason=reason, fail_mode=mode)
    return Admitted(None, attrs, exc, rejected)


def _unchecked(labels: list[str], rejected: list[str]) -> Admitted:
    attrs: dict[str, AttributeValue] = {
        A.COSTSPAN_BUDGET_DECISION: "unchecked",
        A.COSTSPAN_BUDGET_IDS: labels,
        A.COSTSPAN_LEDGER_FAIL_MODE: "open",
    }
    return Admitted(None, attrs, rejected=rejected)


def log_failure(exc: Exception, mode: str, what: str = "a call's budgets") -> None:
    """Log, once per kind of error and fail mode, that ``what`` could not be checked."""
    if once(("admission-failed", what, type(exc).__name__, mode)):
        _logger.error(
            "costspan could not check %s (%s); COSTSPAN_FAIL_MODE=%s decides "
            "(further failures of this kind are counted in %s, not logged)",
            what,
            failure_reason(exc),
            mode,
            A.METRIC_LEDGER_UNAVAILABLE,
            exc_info=exc,
        )


def fail_mode_of(ledger: Ledger, current: Runtime) -> str:
    """The fail mode in force: a shared ledger's own (it was opened with it), else the
    setting's."""
    from costspan.ledgers import FailSafeLedger  # a failure path: the engine is loaded by now

    if isinstance(ledger, FailSafeLedger):
        return ledger.fail_mode
    return current.settings.fail_mode


def _unreadable(request: Request, exc: Exception) -> Admitted:
    """The budgets and limits of the call's context could not even be read: nothing local can
    decide, so only ``open`` sends the call."""
    current = runtime()
    mode = fail_mode_of(current.ledger, current)
    log_failure(exc, mode)
    labels = ["(unreadable budgets)"]
    if mode == "open":
        return _unchecked(labels, [])
    reason = f"its budgets could not be read ({failure_reason(exc)})"
    return _unavailable(labels, request.model, reason, mode, [])


def _fail_safe(admitter: Admitter, exc: Exception, rejected: list[str]) -> Admitted:
    """Admission failed (a ledger error, a bug, input costspan cannot read): the fail mode
    decides, as for an unreachable ledger. ``closed`` refuses; ``open`` sends unchecked;
    ``local`` reserves a tokenizer-free worst case in this process's own counters and refuses
    if even that cannot be done."""
    mode = fail_mode_of(admitter.ledger, admitter.runtime)
    log_failure(exc, mode)
    r, scopes = admitter.request, admitter.scopes
    labels = [scope.label for scope in scopes]
    if mode == "open":
        return _unchecked(labels, rejected)
    reason = f"checking them failed ({failure_reason(exc)})"
    if mode == "closed":
        return _unavailable(labels, r.model, reason, mode, rejected)
    try:
        return _admit_locally(admitter, rejected)
    except Exception as again:
        _logger.error("costspan could not check budgets locally either", exc_info=again)
        return _unavailable(labels, r.model, reason, mode, rejected)


def _admit_locally(admitter: Admitter, rejected: list[str]) -> Admitted:
    r, scopes, ledger = admitter.request, admitter.scopes, admitter.ledger
    try:
        estimate = admitter.estimate()  # the ledger failed, not necessarily the estimate
    except UnpricedModelError:
        raise
    except Exception:
        estimate = fallback_bound(
            r.operation, r.kwargs, r.model, r.provider, r.when_ns, admitter.runtime.pricer
        )
    amount, tokens = held(estimate.usd, estimate.tokens)
    admission = Admission(scopes, reservation_id(), ledger, estimate, degraded="local")
    admission.warned.extend(scope for scope in scopes if scope.action == "warn")
    limits = admission.held()
    from costspan.ledgers import FailSafeLedger

    if isinstance(ledger, FailSafeLedger):
        result = ledger.reserve_locally(admission.rid, limits, amount, tokens, admitter.lease_s)
    else:
        result = ledger.reserve(admission.rid, limits, amount, tokens, admitter.lease_s)
    admission.states.update((state.key, state) for state in result.states)
    if not result.granted:
        scope = next(x for x in scopes if x.key == result.failed_scope)
        refusal = _refused(admitter, Refusal(scope, admission.states.get(scope.key)), rejected)
        refusal.attributes[A.COSTSPAN_LEDGER_FAIL_MODE] = "local"
        return refusal
    admission.estimate = estimate
    admission.held_micros = amount
    return _admitted(admitter, admission, rejected)
