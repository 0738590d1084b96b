"""One call's reservation in its budgets' ledger, and how it is settled (exactly once).

An :class:`Admission` is what admission (:mod:`costspan._admit`) hands back for a call it let
through: the scopes it reserved in, the ledger it reserved in (kept, so a ``configure()`` during
the call cannot send the commit elsewhere), the estimate it held, and the decision it took.

After the call, :meth:`Admission.settle` commits the call's actual tokens and cost (the ledger
releases the rest of the hold), or releases the hold when nothing was billed. It writes no span:
it returns a :class:`Settlement` (the remaining budget, thresholds crossed) that the invocation
records. On an event loop, writes to a ledger that waits on I/O run as tasks of that loop;
:func:`await_writes` lets an async caller wait for them before it returns.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry.util.types import AttributeValue

from costspan import _attributes as A
from costspan._estimate import Estimate
from costspan._money import MAX_MICROS, MAX_TOKENS, display, usd
from costspan._scopes import Scope
from costspan.ledgers import Ledger, ScopeLimit, ScopeState
from costspan.ledgers._protocol import InlineAsync
from costspan.ledgers._renewer import Renewer

if TYPE_CHECKING:
    import asyncio  # imported by the engines whose writes run as tasks

    from costspan._budget import Budget

_logger = logging.getLogger(__name__)


class _Ids:
    """Reservation ids: unique across processes (a random 64-bit prefix per process, drawn again
    in a forked child) and within one (a counter): as unique as 96 random bits per id, without a
    system call per reservation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._renew()

    def _renew(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count()

    def next(self) -> str:
        n = next(self.counter)  # atomic: a C iterator under the GIL
        if n >= 0xFFFFFFFF:
            with self._lock:
                if n >= 0xFFFFFFFF:
                    self._renew()
                n = next(self.counter)
        return f"{self.prefix}{n:08x}"


_ids = _Ids()
os.register_at_fork(after_in_child=_ids._renew)  # pyright: ignore[reportPrivateUsage]


def reservation_id() -> str:
    """A new reservation id (24 hex digits)."""
    return _ids.next()


def blocks(ledger: Ledger) -> bool:
    """Whether the ledger waits on I/O (an event loop must await it, never call it)."""
    return not isinstance(ledger, InlineAsync)


_running: set[asyncio.Task[object]] = set()  # strong references: a loop keeps only weak ones


def _write(
    sync: Callable[..., object], coro: Callable[..., Coroutine[Any, Any, object]], *args: Any
) -> asyncio.Task[object] | None:
    """Run a ledger write now, or - inside a running event loop, on a ledger that blocks - as a
    task (returned, so the caller's coroutine can await it). A task the loop cancels (it is
    shutting down) is finished synchronously: the write is idempotent, so one that had already
    reached the ledger is not counted twice."""
    import asyncio  # (already loaded: only engines that wait on I/O write through here)

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        sync(*args)
        return None
    task: asyncio.Task[object] = loop.create_task(coro(*args))
    _running.add(task)

    def done(t: asyncio.Task[object]) -> None:
        _running.discard(t)
        try:
            if t.cancelled():
                sync(*args)
            elif t.exception() is not None:
                _logger.error(
                    "costspan could not write a budget settlement", exc_info=t.exception()
                )
        except Exception:
            _logger.exception("costspan could not write a budget settlement")

    task.add_done_callback(done)
    return task


async def await_writes(admission: Admission | None) -> None:
    """Wait for an admission's ledger writes that run as tasks (so an async caller reads its
    own spend after the call returns). Shielded: cancelling the caller never cancels a write."""
    if admission is None or not admission.writes:
        return
    import asyncio

    writes, admission.writes = admission.writes, []
    await asyncio.shield(asyncio.gather(*writes, return_exceptions=True))


def _no_tasks() -> list[asyncio.Task[object]]:
    return []


@dataclass(frozen=True, slots=True)
class Crossing:
    """A budget passing one of its soft thresholds (``warn_at``) with a call."""

    label: str
    threshold: float
    spent_usd: float


@dataclass(frozen=True, slots=True)
class Settlement:
    """What settling a call left: the least room among its USD caps, and thresholds crossed."""

    remaining_usd: float | None = None
    crossed: tuple[Crossing, ...] = ()
    overrun_micros: int = 0
    """What the call cost beyond what it held (a provider billing past the bound): recorded in
    full by the ledger, and made visible so nobody finds out from the invoice."""

    def attributes(self) -> dict[str, AttributeValue]:
        attrs: dict[str, AttributeValue] = {}
        if self.remaining_usd is not None:
            attrs[A.COSTSPAN_BUDGET_REMAINING_USD] = self.remaining_usd
        if self.overrun_micros:
            attrs[A.COSTSPAN_BUDGET_OVERRUN_USD] = display(self.overrun_micros)
        return attrs


@dataclass(slots=True)
class Admission:
    """One call's reservation, its decision, and its settlement (exactly once)."""

    scopes: list[Scope]
    rid: str
    ledger: Ledger
    estimate: Estimate
    decision: str = "allow"
    warned: list[Scope] = field(default_factory=list[Scope])
    """Scopes whose warn action let the call through over their cap: charged, never held."""
    states: dict[str, ScopeState] = field(default_factory=dict[str, ScopeState])
    """Each scope's counters as the ledger last reported them (after the grant)."""
    held_micros: int = 0
    degraded: str | None = None
    """The fail mode that decided without the shared ledger, if it was unreachable."""
    settled: bool = False
    renewer: Renewer | None = None
    """Renews the hold while the call runs (set once it holds)."""
    writes: list[asyncio.Task[object]] = field(default_factory=_no_tasks)
    """Ledger writes running as tasks of the caller's event loop."""
    inline: bool = False
    """Write the settlement on the calling thread even inside an event loop (the holds of
    :mod:`costspan._gate`: a span processor cannot await, and the caller reads its spend as soon
    as the call returns)."""

    def attributes(self) -> dict[str, AttributeValue]:
        attrs: dict[str, AttributeValue] = {
            A.COSTSPAN_BUDGET_DECISION: self.decision,
            A.COSTSPAN_BUDGET_IDS: [scope.label for scope in self.scopes],
        }
        if self.estimate.usd is not None:
            attrs[A.COSTSPAN_BUDGET_ESTIMATE_USD] = display(self.estimate.usd)
        if self.degraded is not None:
            attrs[A.COSTSPAN_LEDGER_FAIL_MODE] = self.degraded
        return attrs

    def held(self) -> list[ScopeLimit]:
        return [scope.limit for scope in self.scopes if scope not in self.warned]

    def hold_while_running(self, renewer: Renewer, lease_s: float) -> None:
        """Renew the hold until the call settles (a call may run longer than one lease)."""
        held = self.held()
        if held:
            self.renewer = renewer
            renewer.watch(self.rid, self.ledger, held, lease_s)

    def _stop_renewing(self) -> None:
        if self.renewer is not None:
            self.renewer.forget(self.rid)

    def release(self) -> None:
        """Free the hold: the request was never billed (refused by the provider, never sent)."""
        if self.settled:
            return
        self.settled = True
        self._stop_renewing()
        held = self.held()
        if not held:
            return
        ledger = self.ledger
        if blocks(ledger) and not self.inline:
            self._track(_write(ledger.release, ledger.arelease, self.rid, held))
        else:
            ledger.release(self.rid, held)

    def settle(self, tokens: int, spent_micros: int) -> Settlement:
        """Commit what the call used (the ledger frees the rest of the hold)."""
        if self.settled:
            return Settlement()
        self.settled = True
        if self.renewer is not None:
            self.renewer.forget(self.rid)
        # Never more than a ledger stores (an absurd usage): charged the most, not an error.
        spent_micros = min(max(spent_micros, 0), MAX_MICROS)
        tokens = min(max(tokens, 0), MAX_TOKENS)
        ledger = self.ledger
        writes: list[tuple[str, list[ScopeLimit]]] = []
        held = self.held()
        if held:
            writes.append((self.rid, held))
        if self.warned:
            writes.append((self.rid + ":over", [w.limit for w in self.warned]))
        if blocks(ledger) and not self.inline:
            for rid, scopes in writes:
                self._track(
                    _write(ledger.commit, ledger.acommit, rid, spent_micros, tokens, scopes)
                )
        else:
            for rid, scopes in writes:
                ledger.commit(rid, spent_micros, tokens, scopes)
        return self._after(spent_micros, tokens)

    def _track(self, task: asyncio.Task[object] | None) -> None:
        if task is not None:
            self.writes.append(task)

    def _after(self, spent: int, tokens: int) -> Settlement:
        """Remaining budget and thresholds after this call's commit. An in-process ledger is
        read again (it costs no round trip), so calls that settled meanwhile count: a fan-out
        whose calls pass a threshold together still reports it. A shared ledger's is projected
        from its answer at the grant: that state, less this call's hold, plus what it spent."""
        least: int | None = None
        crossed: list[Crossing] = []
        held_micros = self.held_micros
        warned = self.warned
        read = not blocks(self.ledger)
        for scope in self.scopes:
            before = self.states.get(scope.key)
            if before is None:
                continue
            now = self._read(scope.key) if read else None
            if now is not None:
                spent_micros, held_now, spent_tokens = (
                    now.spent_micros,
                    now.held_micros,
                    now.spent_tokens,
                )
            else:
                holds = not warned or scope not in warned
                spent_micros = before.spent_micros + spent
                held_now = max(before.held_micros - (held_micros if holds else 0), 0)
                spent_tokens = before.spent_tokens + tokens
            cap = before.cap_micros
            if cap is not None:
                left = cap - spent_micros - held_now
                least = left if least is None or left < least else least
            budget = scope.budget
            if budget is not None and budget.warn_at:
                # The share of the cap used (the larger of USD and tokens); a threshold is
                # passed at most once, so nothing more is worked out below the lowest.
                used = spent_micros / cap if cap else 0.0
                if before.cap_tokens:
                    used = max(used, spent_tokens / before.cap_tokens)
                if used >= budget.warn_at[0]:
                    crossed.extend(_crossings(budget, used, spent_micros))
        if least is None and not crossed:
            return Settlement(overrun_micros=self._overrun(spent))
        return Settlement(
            # A display value: the ledger keeps the exact integer micro-dollars.
            remaining_usd=None if least is None else display(max(least, 0)),
            crossed=tuple(crossed),
            overrun_micros=self._overrun(spent),
        )

    def _read(self, key: str) -> ScopeState | None:
        """The scope's counters now, this call's commit in them; None when they cannot be read
        or the scope is gone (a budget that ended drops its counters with its last hold)."""
        try:
            state = self.ledger.snapshot(key)
        except Exception:
            _logger.debug("costspan could not read a budget after settling", exc_info=True)
            return None
        return state if state.calls else None

    def _overrun(self, spent: int) -> int:
        if spent <= self.held_micros:
            return 0
        return spent - self.held_micros if self.held() else 0


def _crossings(budget: Budget, used: float, spent_micros: int) -> list[Crossing]:
    """The soft thresholds of ``budget`` that this call passed, having used ``used`` of its cap
    (each reported once)."""
    spent = display(usd(spent_micros))
    return [
        Crossing(budget.label, threshold, spent)
        for threshold in budget.warn_at
        if used >= threshold and budget.crossed(threshold)
    ]
