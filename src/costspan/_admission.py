"""Admission: before a call is sent, reserve its worst-case cost in every budget that applies.

For each call made under one or more budgets:

1. Estimate the worst case: input tokens counted exactly (offline tokenizer), output bounded by
   the request's own output cap times ``n`` (or ``DEFAULT_OUTPUT_TOKENS`` when it has none),
   priced with no cache hits.
2. Reserve that amount in every budget's ledger scope at once (all or nothing).
3. If a budget refuses, its action decides, before anything is sent: block (raise
   :class:`BudgetExceeded`), downgrade the model, clamp the output cap, truncate the prompt, let
   it through with a warning, or ask the user's callable. Then reserve again.
4. After the call, commit its actual cost (and release the rest); a failed request is released.

The refusing budget's action applies: an inner budget's ``downgrade`` never masks an outer
budget's ``block``, because the outer scope is the one that refuses.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import secrets
import threading
from collections.abc import Callable, Coroutine, Generator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, cast

from opentelemetry.metrics import Counter, Meter
from opentelemetry.trace import Span
from opentelemetry.util.types import AttributeValue

from costspan import _attributes as A
from costspan import _config
from costspan._budget import Budget, InboundBudget, inbound_budgets, local_budgets, micros
from costspan._costing import current_pricer
from costspan._errors import BudgetExceeded, BudgetUnavailable, UnpricedModelError
from costspan._limits import Applied
from costspan._operations import Operation, given
from costspan._pricing import Cost
from costspan._usage import TokenUsage
from costspan.ledgers import Ledger, LedgerUnavailable, Reservation, ScopeLimit, ScopeState
from costspan.ledgers._open import LedgerSpec
from costspan.ledgers._protocol import InlineAsync

_logger = logging.getLogger(__name__)

DEFAULT_OUTPUT_TOKENS: Final = 1024
"""The output bound of a request that sets no output cap of its own."""
MIN_CLAMP_TOKENS: Final = 16
"""Below this many affordable output tokens a clamp refuses instead (an answer that short is no
answer). Reasoning models spend output tokens on reasoning first: a small clamp may leave them
with an empty answer and ``finish_reason="length"``."""
LEASE_S: Final = 900.0
"""How long a hold lives without a commit: longer than any sane request or stream."""

_ledger_lock = threading.Lock()
_ledger: Ledger | None = None  # set explicitly (tests, set_ledger)
_opened: tuple[object, Ledger] | None = None  # (what the settings asked for, the engine)


def current_ledger() -> Ledger:
    """The process's ledger: set explicitly, else the one the settings name (opened once)."""
    global _opened
    if _ledger is not None:
        return _ledger
    settings = _config.current()
    wanted = (settings.ledger, settings.fail_mode)
    opened = _opened
    if opened is not None and opened[0] == wanted:
        return opened[1]
    with _ledger_lock:
        if _opened is None or _opened[0] != wanted:
            spec = settings.ledger
            ledger = spec.open(settings.fail_mode) if isinstance(spec, LedgerSpec) else spec
            _opened = (wanted, ledger)
        return _opened[1]


def set_ledger(ledger: Ledger | None) -> None:
    """Replace the process's ledger (None: the configured one, opened afresh on next use)."""
    global _ledger, _opened
    with _ledger_lock:
        _ledger = ledger
        _opened = None


def _blocks(ledger: Ledger) -> bool:
    """Whether the ledger waits on I/O (an event loop must await it, never call it)."""
    return not isinstance(ledger, InlineAsync)


_settling: set[asyncio.Task[object]] = set()


def _dispatch(
    sync: Callable[..., object], coro: Callable[..., Coroutine[Any, Any, object]], *args: Any
) -> asyncio.Task[object] | None:
    """Run a ledger write now, or - inside a running event loop, on a ledger that blocks - as a
    task (returned, so the caller's coroutine can await it). A task the loop cancels (it is
    shutting down) is finished synchronously: the write is idempotent, so one that had already
    reached the ledger is not counted twice."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        sync(*args)
        return None
    task: asyncio.Task[object] = loop.create_task(coro(*args))
    _settling.add(task)

    def done(t: asyncio.Task[object]) -> None:
        _settling.discard(t)
        try:
            if t.cancelled():
                sync(*args)
            elif t.exception() is not None:
                _logger.error(
                    "costspan could not settle a budget reservation", exc_info=t.exception()
                )
        except Exception:
            _logger.exception("costspan could not settle a budget reservation")

    task.add_done_callback(done)
    return task


async def settled(admission: Admission | None) -> None:
    """Wait for an admission's ledger writes that run as tasks (so an async caller reads its
    own spend after the call returns). Shielded: cancelling the caller never cancels a write."""
    if admission is None or not admission.writes:
        return
    writes, admission.writes = admission.writes, []
    await asyncio.shield(asyncio.gather(*writes, return_exceptions=True))


# -- what a call sees ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Limit:
    """A budget as one call sees it: local (a Budget object) or inbound (from baggage)."""

    scope_key: str
    usd: Decimal | None
    tokens: int | None
    action: Any
    downgrade: Mapping[str, str]
    label: str
    budget: Budget | None
    expires_at: float | None = None
    sticky: bool = True

    @classmethod
    def of_budget(cls, b: Budget) -> Limit:
        # A Budget's caps never change: build its Limit once, not on every call.
        limit = b.__dict__.get("_limit")
        if limit is None:
            limit = cls(b.scope_key, b.usd, b.tokens, b.on_exceed, b.downgrade, b.label, b)
            b.__dict__["_limit"] = limit
        return limit

    @classmethod
    def of_inbound(cls, b: InboundBudget) -> Limit:
        return cls(b.scope_key, b.usd, b.tokens, b.action, {}, b.id, None)

    @classmethod
    def of_rule(cls, applied: Applied) -> Limit:
        rule = applied.rule
        return cls(
            applied.key,
            rule.usd,
            rule.tokens,
            rule.action,
            {},
            applied.label,
            None,
            expires_at=applied.expires_at,
            sticky=False,  # caps from trusted configuration: the configured value is the cap
        )

    @functools.cached_property
    def scope(self) -> ScopeLimit:
        """The ledger scope and caps of this budget (built once: its caps never change)."""
        return ScopeLimit(
            self.scope_key,
            None if self.usd is None else micros(self.usd),
            self.tokens,
            self.expires_at,
            self.sticky,
        )


class BudgetMeter:
    """Decision, threshold and rejected-baggage counters."""

    __slots__ = ("decisions", "rejected", "thresholds", "unavailable")

    def __init__(self, meter: Meter) -> None:
        self.decisions: Counter = meter.create_counter(
            A.METRIC_BUDGET_DECISIONS, unit="{call}", description="Budget decisions on GenAI calls"
        )
        self.thresholds: Counter = meter.create_counter(
            A.METRIC_BUDGET_THRESHOLDS,
            unit="{event}",
            description="Budgets passing a soft threshold (warn_at)",
        )
        self.rejected: Counter = meter.create_counter(
            A.METRIC_BAGGAGE_REJECTED,
            unit="{entry}",
            description="Inbound budget baggage entries ignored as malformed or hostile",
        )
        self.unavailable: Counter = meter.create_counter(
            A.METRIC_LEDGER_UNAVAILABLE,
            unit="{call}",
            description="Calls decided without the shared ledger (it was unreachable)",
        )


_warned_reasons: set[str] = set()


def active_limits(meter: BudgetMeter | None = None, trace_id: int = 0) -> list[Limit]:
    """Every budget and configured limit on a call in this context; block actions first."""
    limits = [Limit.of_budget(b) for b in local_budgets()]
    if _config.current().trust_inbound_budgets:

        def reject(reason: str) -> None:
            if meter is not None:
                meter.rejected.add(1, {A.COSTSPAN_BAGGAGE_REJECT_REASON: reason})
            if reason not in _warned_reasons:
                _warned_reasons.add(reason)
                _logger.warning(
                    "costspan ignored a budget entry in inbound baggage (%s); further entries "
                    "rejected for this reason are counted in %s, not logged",
                    reason,
                    A.METRIC_BAGGAGE_REJECTED,
                )

        limits.extend(Limit.of_inbound(b) for b in inbound_budgets(reject=reject))
    table = _config.current().limits
    if table:
        limits.extend(Limit.of_rule(applied) for applied in table.applied(trace_id))
    # A failing block budget must be found first, so its refusal is never masked.
    limits.sort(key=lambda limit: limit.action != "block")
    return limits


# -- estimates ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Estimate:
    """A worst-case projection of one call, made offline before it is sent."""

    model: str
    input_tokens: int
    output_tokens: int
    usd: Decimal | None
    """None when no price is known for the model."""

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


_CAP_PARAMS: Final = ("max_completion_tokens", "max_output_tokens", "max_tokens")


def output_cap(kwargs: Mapping[str, Any]) -> int | None:
    for name in _CAP_PARAMS:
        value = given(kwargs, name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def project(
    operation: Operation, kwargs: Mapping[str, Any], model: str, provider: str, when_ns: int
) -> Estimate:
    """The worst case of a request: exact input, capped output, no cache hits."""
    input_tokens = operation.input_tokens(kwargs, model)
    if operation.name == A.OP_EMBEDDINGS:
        output = 0
    else:
        cap = output_cap(kwargs)
        choices = given(kwargs, "n")
        n = choices if isinstance(choices, int) and choices > 1 else 1
        output = (DEFAULT_OUTPUT_TOKENS if cap is None else cap) * n
    cost = current_pricer().price(
        TokenUsage(input_tokens, output), models=(model,), provider=provider, when_ns=when_ns
    )
    return Estimate(model, input_tokens, output, None if cost is None else cost.total)


# -- the admission of one call ------------------------------------------------------------------
@dataclass(slots=True)
class Admission:
    """One call's reservation, its decision, and its settlement (exactly once)."""

    limits: list[Limit]
    rid: str
    estimate: Estimate
    decision: str = "allow"
    warned: list[Limit] = field(default_factory=list[Limit])
    meter: BudgetMeter | None = None
    settled: bool = False
    states: dict[str, ScopeState] = field(default_factory=dict[str, ScopeState])
    """Each scope's counters as the ledger last reported them (after the grant)."""
    held_micros: int = 0
    degraded: str | None = None
    writes: list[asyncio.Task[object]] = field(default_factory=list[asyncio.Task[object]])
    """Ledger writes running as tasks of the caller's event loop."""

    def attributes(self) -> dict[str, AttributeValue]:
        attrs: dict[str, AttributeValue] = {
            A.COSTSPAN_BUDGET_DECISION: self.decision,
            A.COSTSPAN_BUDGET_IDS: [limit.label for limit in self.limits],
        }
        if self.estimate.usd is not None:
            attrs[A.COSTSPAN_BUDGET_ESTIMATE_USD] = float(self.estimate.usd)
        if self.degraded is not None:
            attrs[A.COSTSPAN_LEDGER_FAIL_MODE] = self.degraded
        return attrs

    def held(self) -> list[ScopeLimit]:
        return [limit.scope for limit in self.limits if limit not in self.warned]

    def settle(
        self, usage: TokenUsage | None, cost: Cost | None, span: Span | None
    ) -> dict[str, AttributeValue]:
        """Commit what the call used (or release it when nothing was billed); returns the
        span attributes that describe the budgets afterwards."""
        if self.settled:
            return {}
        self.settled = True
        ledger = current_ledger()
        held = self.held()
        blocking = _blocks(ledger)
        if usage is None:
            if held:
                if blocking:
                    self._track(_dispatch(ledger.release, ledger.arelease, self.rid, held))
                else:
                    ledger.release(self.rid, held)
            return {}
        spent = micros(cost.total) if cost is not None else 0
        tokens = (usage.input_tokens or 0) + (usage.output_tokens or 0)
        writes: list[tuple[str, list[ScopeLimit]]] = []
        if held:
            writes.append((self.rid, held))
        if self.warned:
            # Over-budget calls let through by a warn action: charged, never held.
            writes.append((self.rid + ":over", [w.scope for w in self.warned]))
        for rid, scopes in writes:
            if blocking:
                self._track(_dispatch(ledger.commit, ledger.acommit, rid, spent, tokens, scopes))
            else:
                ledger.commit(rid, spent, tokens, scopes)
        return self._after(span, spent, tokens)

    def _track(self, task: asyncio.Task[object] | None) -> None:
        if task is not None:
            self.writes.append(task)

    def _after(self, span: Span | None, spent: int, tokens: int) -> dict[str, AttributeValue]:
        """Remaining budget and thresholds, projected from the ledger's answer at the grant
        (no second round trip): that state, less this call's hold, plus what it spent."""
        remaining: list[int] = []
        for limit in self.limits:
            before = self.states.get(limit.scope_key)
            if before is None:
                continue
            hold = 0 if limit in self.warned else self.held_micros
            hold_tokens = 0 if limit in self.warned else self.estimate.tokens
            state = ScopeState(
                before.key,
                spent_micros=before.spent_micros + spent,
                held_micros=max(before.held_micros - hold, 0),
                spent_tokens=before.spent_tokens + tokens,
                held_tokens=max(before.held_tokens - hold_tokens, 0),
                calls=before.calls + 1,
                cap_micros=before.cap_micros,
                cap_tokens=before.cap_tokens,
            )
            if state.cap_micros is not None:
                remaining.append(state.cap_micros - state.spent_micros - state.held_micros)
            if limit.budget is not None and limit.budget.warn_at:
                self._thresholds(limit.budget, state, span)
        if not remaining:
            return {}
        # A display value: the ledger keeps the exact integer micro-dollars.
        return {A.COSTSPAN_BUDGET_REMAINING_USD: max(min(remaining), 0) / 1_000_000}

    def _thresholds(self, b: Budget, state: ScopeState, span: Span | None) -> None:
        fractions: list[float] = []
        if state.cap_micros:
            fractions.append(state.spent_micros / state.cap_micros)
        if state.cap_tokens:
            fractions.append(state.spent_tokens / state.cap_tokens)
        used = max(fractions, default=0.0)
        for threshold in b.warn_at:
            if used >= threshold and b.crossed(threshold):
                attrs: dict[str, AttributeValue] = {
                    A.COSTSPAN_BUDGET_ID: b.label,
                    A.COSTSPAN_BUDGET_THRESHOLD: threshold,
                    "costspan.budget.spent_usd": float(Decimal(state.spent_micros) / 1_000_000),
                }
                if span is not None and span.is_recording():
                    span.add_event("costspan.budget.threshold", attrs)
                _logger.warning(
                    "costspan budget %r passed %d%% of its cap (spent $%s)",
                    b.label,
                    round(threshold * 100),
                    Decimal(state.spent_micros) / 1_000_000,
                )
                if self.meter is not None:
                    self.meter.thresholds.add(1, {A.COSTSPAN_BUDGET_THRESHOLD: threshold})


class Refusal(Exception):
    """Internal: the admission loop gives up on a call (turned into BudgetExceeded)."""

    def __init__(self, limit: Limit, state: ScopeState | None) -> None:
        super().__init__(limit.label)
        self.limit = limit
        self.state = state


def _exceeded(limit: Limit, estimate: Estimate, state: ScopeState | None) -> BudgetExceeded:
    # The ledger's own answer: the scope's spend and its (tightest) caps at the refusal.
    state = state or ScopeState(limit.scope_key)
    room = state.room_micros
    remaining_usd = None if room is None else Decimal(room) / 1_000_000
    return BudgetExceeded(
        budget=limit.budget,
        scope=limit.label,
        spent_usd=Decimal(state.spent_micros) / 1_000_000,
        remaining_usd=remaining_usd,
        remaining_tokens=state.room_tokens,
        estimate_usd=estimate.usd,
        estimate_tokens=estimate.tokens,
        model=estimate.model,
    )


# What the admission loop asks of the ledger: reserve (rid, scopes, usd µ$, tokens).
_Ask = tuple[str, list[ScopeLimit], int, int]


@dataclass(slots=True)
class Admitter:
    """Runs the admission loop for one call; the wrapper owns the span and the kwargs.

    The loop is a generator that yields each reservation it needs and is sent the ledger's
    answer, so one loop serves both the blocking and the asyncio ledger calls.
    """

    operation: Operation
    kwargs: dict[str, Any]
    model: str
    provider: str
    when_ns: int
    limits: list[Limit]
    meter: BudgetMeter | None
    changes: dict[str, AttributeValue] = field(default_factory=dict[str, AttributeValue])

    def run(self) -> Generator[_Ask, Reservation, Admission]:
        admission = Admission(
            self.limits, secrets.token_hex(12), Estimate("", 0, 0, None), meter=self.meter
        )
        if (
            any(limit.action == "clamp" for limit in self.limits)
            and output_cap(self.kwargs) is None
            and self.operation.name != A.OP_EMBEDDINGS
        ):
            # An uncapped request could outspend its estimate; under a clamp budget it gets the
            # cap it was estimated with, so that what is reserved really bounds what is spent.
            self.kwargs[self._cap_param()] = DEFAULT_OUTPUT_TOKENS
            self.changes[A.COSTSPAN_BUDGET_CLAMPED_MAX_TOKENS] = DEFAULT_OUTPUT_TOKENS
            admission.decision = "clamp"
        estimate = self._estimate()
        for _ in range(len(self.limits) + 4):
            held = admission.held()
            usd = 0 if estimate.usd is None else micros(estimate.usd)
            result = yield (admission.rid, held, usd, estimate.tokens)
            admission.states.update((state.key, state) for state in result.states)
            if result.degraded is not None:
                admission.degraded = result.degraded
            if result.granted:
                admission.estimate = estimate
                admission.held_micros = usd
                return admission
            limit = next(x for x in self.limits if x.scope_key == result.failed_scope)
            estimate = self._act(limit, estimate, admission, result)
        raise Refusal(self.limits[0], None)

    def _estimate(self) -> Estimate:
        estimate = project(self.operation, self.kwargs, self.model, self.provider, self.when_ns)
        if estimate.usd is None and _config.current().on_unpriced == "raise":
            raise UnpricedModelError(self.model, self.provider)
        return estimate

    def _act(
        self, limit: Limit, estimate: Estimate, admission: Admission, result: Reservation
    ) -> Estimate:
        action = limit.action
        state = admission.states.get(limit.scope_key)
        if action == "block":
            raise Refusal(limit, state)
        if action == "warn":
            admission.warned.append(limit)
            admission.decision = "warn"
            return estimate
        if action == "downgrade":
            cheaper = limit.downgrade.get(self.model)
            if cheaper is None:
                raise Refusal(limit, state)
            self.changes.setdefault(A.COSTSPAN_BUDGET_ORIGINAL_MODEL, self.model)
            self.model = cheaper
            self.kwargs["model"] = cheaper
            admission.decision = "downgrade"
            return self._estimate()
        if action == "clamp":
            return self._clamp(limit, estimate, admission, result)
        if action == "truncate":
            return self._truncate(limit, admission, state)
        if callable(action):
            overrides: object = action(_exceeded(limit, estimate, state))
            if not isinstance(overrides, Mapping) or not overrides:
                raise Refusal(limit, state)
            changes = cast("Mapping[object, object]", overrides)
            self.kwargs.update({str(k): v for k, v in changes.items()})
            self.model = str(self.kwargs.get("model", self.model))
            admission.decision = "callable"
            return self._estimate()
        raise Refusal(limit, state)

    @staticmethod
    def _room(result: Reservation) -> tuple[Decimal | None, int | None]:
        """The least USD and token room among the scopes the ledger just checked."""
        usd: Decimal | None = None
        tokens: int | None = None
        for state in result.states:
            if state.room_micros is not None:
                room = Decimal(state.room_micros) / 1_000_000
                usd = room if usd is None else min(usd, room)
            if state.room_tokens is not None:
                tokens = state.room_tokens if tokens is None else min(tokens, state.room_tokens)
        return usd, tokens

    def _clamp(
        self, limit: Limit, estimate: Estimate, admission: Admission, result: Reservation
    ) -> Estimate:
        state = admission.states.get(limit.scope_key)
        room_usd, room_tokens = self._room(result)
        n = given(self.kwargs, "n")
        choices = n if isinstance(n, int) and n > 1 else 1
        affordable = math.inf
        if room_tokens is not None:
            affordable = (room_tokens - estimate.input_tokens) // choices
        if room_usd is not None and estimate.usd is not None:
            pricer = current_pricer()
            base = pricer.price(
                TokenUsage(estimate.input_tokens, 0),
                models=(self.model,),
                provider=self.provider,
                when_ns=self.when_ns,
            )
            # The price of a million output tokens at this prompt's tier gives the output rate.
            full = pricer.price(
                TokenUsage(estimate.input_tokens, 1_000_000),
                models=(self.model,),
                provider=self.provider,
                when_ns=self.when_ns,
            )
            if base is None or full is None:
                raise Refusal(limit, state)
            rate = (full.total - base.total) / 1_000_000
            left = room_usd - base.total
            if rate > 0:
                affordable = min(affordable, int(left / rate) // choices)
            elif left < 0:
                affordable = 0
        cap = output_cap(self.kwargs)
        if cap is not None:
            affordable = min(affordable, cap)
        if affordable == math.inf or affordable < MIN_CLAMP_TOKENS:
            raise Refusal(limit, state)
        new_cap = int(affordable)
        self.kwargs[self._cap_param()] = new_cap
        self.changes[A.COSTSPAN_BUDGET_CLAMPED_MAX_TOKENS] = new_cap
        admission.decision = "clamp"
        return self._estimate()

    def _cap_param(self) -> str:
        if self.operation.api_type == A.API_RESPONSES:
            return "max_output_tokens"
        if self.operation.name == A.OP_TEXT_COMPLETION:
            return "max_tokens"
        # A caller's own max_tokens on a non-reasoning chat model is lowered in place rather
        # than adding a second cap; otherwise max_completion_tokens, which every model accepts.
        if (
            given(self.kwargs, "max_tokens") is not None
            and given(self.kwargs, "max_completion_tokens") is None
        ):
            return "max_tokens"
        return "max_completion_tokens"

    def _truncate(self, limit: Limit, admission: Admission, state: ScopeState | None) -> Estimate:
        key = "messages" if "messages" in self.kwargs else "input"
        items = self.kwargs.get(key)
        if not isinstance(items, list) or len(items) < 2:  # pyright: ignore[reportUnknownArgumentType]
            raise Refusal(limit, state)
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
            raise Refusal(limit, state)
        self.kwargs[key] = messages
        dropped = int(self.changes.get(A.COSTSPAN_BUDGET_DROPPED_MESSAGES, 0)) + 1  # pyright: ignore[reportArgumentType]
        self.changes[A.COSTSPAN_BUDGET_DROPPED_MESSAGES] = dropped
        admission.decision = "truncate"
        return self._estimate()


Admitted = tuple[Admission | None, dict[str, AttributeValue], BudgetExceeded | None]


def admit(
    operation: Operation,
    kwargs: dict[str, Any],
    model: str,
    provider: str,
    when_ns: int,
    meter: BudgetMeter | None,
    trace_id: int = 0,
) -> Admitted:
    """Admit a call: (admission, span attributes, refusal). Mutates ``kwargs`` for actions.
    ``trace_id``: the call's trace, which names its per-request windows."""
    limits = active_limits(meter, trace_id)
    if not limits:
        return None, {}, None
    admitter = Admitter(operation, kwargs, model, provider, when_ns, limits, meter)
    ledger = current_ledger()
    loop = admitter.run()
    try:
        ask = next(loop)
        while True:
            ask = loop.send(ledger.reserve(*ask, LEASE_S))
    except StopIteration as done:
        return _admitted(admitter, done.value)
    except (Refusal, LedgerUnavailable) as exc:
        return _refused(admitter, exc)


async def aadmit(
    operation: Operation,
    kwargs: dict[str, Any],
    model: str,
    provider: str,
    when_ns: int,
    meter: BudgetMeter | None,
    trace_id: int = 0,
) -> Admitted:
    """:func:`admit` for async calls: a ledger that blocks is awaited, never called."""
    ledger = current_ledger()
    if not _blocks(ledger):
        return admit(operation, kwargs, model, provider, when_ns, meter, trace_id)
    limits = active_limits(meter, trace_id)
    if not limits:
        return None, {}, None
    admitter = Admitter(operation, kwargs, model, provider, when_ns, limits, meter)
    loop = admitter.run()
    try:
        ask = next(loop)
        while True:
            ask = loop.send(await ledger.areserve(*ask, LEASE_S))
    except StopIteration as done:
        return _admitted(admitter, done.value)
    except (Refusal, LedgerUnavailable) as exc:
        return _refused(admitter, exc)


def _admitted(admitter: Admitter, admission: Admission) -> Admitted:
    meter = admitter.meter
    if meter is not None:
        if admission.decision != "allow":
            # Plain admissions are just calls (gen_ai.client.operation.duration counts them);
            # the counter tracks what budgets changed or refused.
            meter.decisions.add(1, {A.COSTSPAN_BUDGET_DECISION: admission.decision})
        if admission.degraded is not None:
            meter.unavailable.add(1, {A.COSTSPAN_LEDGER_FAIL_MODE: admission.degraded})
    return admission, {**admission.attributes(), **admitter.changes}, None


def _refused(admitter: Admitter, cause: Refusal | LedgerUnavailable) -> Admitted:
    limits, meter = admitter.limits, admitter.meter
    estimate = project(
        admitter.operation, admitter.kwargs, admitter.model, admitter.provider, admitter.when_ns
    )
    attrs: dict[str, AttributeValue] = {
        A.COSTSPAN_BUDGET_DECISION: "refuse",
        A.COSTSPAN_BUDGET_IDS: [limit.label for limit in limits],
    }
    exc: BudgetExceeded
    if isinstance(cause, LedgerUnavailable):
        exc = BudgetUnavailable(scope=limits[0].label, model=admitter.model, reason=str(cause))
        attrs[A.COSTSPAN_LEDGER_FAIL_MODE] = "closed"
        if meter is not None:
            meter.unavailable.add(1, {A.COSTSPAN_LEDGER_FAIL_MODE: "closed"})
    else:
        exc = _exceeded(cause.limit, estimate, cause.state)
        attrs[A.COSTSPAN_BUDGET_REFUSED_BY] = cause.limit.label
    if estimate.usd is not None:
        attrs[A.COSTSPAN_BUDGET_ESTIMATE_USD] = float(estimate.usd)
    if meter is not None:
        meter.decisions.add(1, {A.COSTSPAN_BUDGET_DECISION: "refuse"})
    return None, attrs, exc


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
    import time

    from costspan import _operations as ops

    table: dict[str, tuple[Operation, str]] = {
        "chat": (ops.CHAT, "messages"),
        "responses": (ops.RESPONSES, "input"),
        "text_completion": (ops.COMPLETIONS, "prompt"),
        "embeddings": (ops.EMBEDDINGS, "input"),
    }
    if operation not in table:
        raise ValueError(f"operation must be one of {', '.join(table)}, not {operation!r}")
    op, key = table[operation]
    value = messages_or_input
    if operation == "chat" and isinstance(value, str):
        value = [{"role": "user", "content": value}]
    kwargs: dict[str, Any] = {key: value, "model": model}
    if max_output_tokens is not None:
        if isinstance(max_output_tokens, bool) or max_output_tokens < 0:
            raise ValueError("max_output_tokens must be a whole number >= 0")
        kwargs["max_output_tokens"] = max_output_tokens
    return project(op, kwargs, model, provider, when_ns or time.time_ns())
