"""What a shared ledger does when its store cannot be reached: fail modes, breaker, outbox.

:class:`FailSafeLedger` wraps an engine that can fail (SQLite, Redis). While the engine answers,
it adds nothing but bookkeeping. When an operation fails with :class:`LedgerUnavailable`:

- the **circuit opens**: later operations do not touch the store at all (no timeouts on the
  call path) until a background thread sees the store answer again;
- a **reserve** is decided by the fail mode:

  - ``closed``: refused (the admission turns it into ``BudgetUnavailable``, nothing is sent);
  - ``open``: granted without any check, marked ``degraded="open"``;
  - ``local``: checked against this process's own counters (a :class:`MemoryLedger` seeded with
    the spend the shared store last reported for each scope), marked ``degraded="local"``;

- a **commit or release** that could not be written goes to the **outbox** and returns
  ``QUEUED``. When the store answers again, the outbox is replayed in order before the circuit
  closes. Replays are idempotent by reservation id: a commit the store already had (the reply was
  lost, not the request) is a duplicate, and a call admitted without the store is charged post
  hoc, once. At interpreter exit the outbox is flushed one last time; what still cannot be
  written is logged with its total, never dropped silently.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal, Protocol

from costspan.ledgers._memory import MemoryLedger
from costspan.ledgers._protocol import (
    CommitCode,
    Ledger,
    LedgerUnavailable,
    Reservation,
    ScopeLimit,
    ScopeState,
)

_logger = logging.getLogger(__name__)

FailMode = Literal["closed", "open", "local"]
FAIL_MODES: Final = ("closed", "open", "local")
_SEEN_SCOPES: Final = 10_000  # scopes whose last shared state is remembered for the fallback


class Engine(Ledger, Protocol):
    """A ledger whose store can be unreachable, and can be asked whether it is back."""

    def ping(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Pending:
    """A commit or release the store has not acknowledged yet."""

    rid: str
    usd_micros: int
    tokens: int
    scopes: tuple[ScopeLimit, ...]
    release: bool

    def send(self, engine: Engine) -> CommitCode:
        if self.release:
            return engine.release(self.rid, self.scopes)
        return engine.commit(self.rid, self.usd_micros, self.tokens, self.scopes)

    async def asend(self, engine: Engine) -> CommitCode:
        if self.release:
            return await engine.arelease(self.rid, self.scopes)
        return await engine.acommit(self.rid, self.usd_micros, self.tokens, self.scopes)


class FailSafeLedger:
    """A shared engine behind a circuit breaker, a fail mode and an outbox (see module doc).

    Args:
        engine: the shared ledger engine.
        fail_mode: ``closed``, ``open`` or ``local``.
        probe_interval_s: first wait before asking a dead store again; doubles up to
            ``max_probe_interval_s`` while it stays dead.
    """

    def __init__(
        self,
        engine: Engine,
        fail_mode: FailMode = "local",
        *,
        probe_interval_s: float = 0.5,
        max_probe_interval_s: float = 5.0,
    ) -> None:
        if fail_mode not in FAIL_MODES:
            raise ValueError(f"fail_mode must be one of {', '.join(FAIL_MODES)}")
        self.engine = engine
        self.fail_mode: FailMode = fail_mode
        self._probe_interval = probe_interval_s
        self._max_probe_interval = max_probe_interval_s
        self._lock = threading.Lock()
        self._open = False  # the circuit: True while the store is considered unreachable
        self._outbox: deque[_Pending] = deque()
        self._local = MemoryLedger()
        # Where each reservation decided without the store lives (None: granted unmetered).
        self._degraded: dict[str, MemoryLedger | None] = {}
        self._seen: OrderedDict[str, ScopeState] = OrderedDict()
        self._prober: threading.Thread | None = None
        self.outages = 0
        _live.add(self)

    def __repr__(self) -> str:
        return f"FailSafeLedger({self.engine!r}, fail_mode={self.fail_mode!r})"

    @property
    def available(self) -> bool:
        """False while the circuit is open (the store was found unreachable)."""
        return not self._open

    @property
    def queued(self) -> int:
        """Commits and releases waiting in the outbox."""
        return len(self._outbox)

    # -- reserve -----------------------------------------------------------------------------
    def reserve(
        self,
        rid: str,
        scopes: Sequence[ScopeLimit],
        usd_micros: int,
        tokens: int,
        lease_s: float,
    ) -> Reservation:
        attempted = not self._open
        if attempted:
            try:
                return self._remember(self.engine.reserve(rid, scopes, usd_micros, tokens, lease_s))
            except LedgerUnavailable as exc:
                self._trip(exc)
        return self._degraded_reserve(rid, scopes, usd_micros, tokens, lease_s, attempted)

    async def areserve(
        self,
        rid: str,
        scopes: Sequence[ScopeLimit],
        usd_micros: int,
        tokens: int,
        lease_s: float,
    ) -> Reservation:
        attempted = not self._open
        if attempted:
            try:
                reservation = await self.engine.areserve(rid, scopes, usd_micros, tokens, lease_s)
                return self._remember(reservation)
            except LedgerUnavailable as exc:
                self._trip(exc)
        return self._degraded_reserve(rid, scopes, usd_micros, tokens, lease_s, attempted)

    def reserve_locally(
        self,
        rid: str,
        scopes: Sequence[ScopeLimit],
        usd_micros: int,
        tokens: int,
        lease_s: float,
    ) -> Reservation:
        """Decide a reserve with this process's own counters only (seeded with the store's last
        answers), as the ``local`` fail mode does: for a call the store could not be asked
        about (its admission failed for another reason). Its commit still reaches the store."""
        local = self._local
        self._seed(local, scopes)
        reservation = local.reserve(rid, scopes, usd_micros, tokens, lease_s)
        if reservation.granted:
            with self._lock:
                self._degraded[rid] = local
        return reservation._replace(degraded="local")

    def _seed(self, local: MemoryLedger, scopes: Sequence[ScopeLimit]) -> None:
        for limit in scopes:
            seen = self._seen.get(limit.key)
            if seen is not None:
                # Other processes' holds count as spent: the fallback errs on the safe side.
                local.seed(
                    ScopeState(
                        limit.key,
                        spent_micros=seen.spent_micros + seen.held_micros,
                        spent_tokens=seen.spent_tokens + seen.held_tokens,
                        calls=seen.calls,
                    )
                )

    def _remember(self, reservation: Reservation) -> Reservation:
        # The last shared state of each scope seeds the local fallback if the store goes away.
        if reservation.states:
            with self._lock:
                seen = self._seen
                for state in reservation.states:
                    seen[state.key] = state
                    seen.move_to_end(state.key)
                while len(seen) > _SEEN_SCOPES:
                    seen.popitem(last=False)
        return reservation

    def _degraded_reserve(
        self,
        rid: str,
        scopes: Sequence[ScopeLimit],
        usd_micros: int,
        tokens: int,
        lease_s: float,
        attempted: bool,
    ) -> Reservation:
        """Decide a reserve without the store. ``attempted``: the store was asked and failed,
        so it may hold this reservation after all (a lost reply); a call that is then not
        granted queues a release, so that hold does not pin the budget until its lease ends."""
        self._ensure_prober()
        if self.fail_mode == "closed":
            if attempted:
                self._queue(_Pending(rid, 0, 0, tuple(scopes), release=True))
            raise LedgerUnavailable(f"{self.engine!r} is unreachable (COSTSPAN_FAIL_MODE=closed)")
        if self.fail_mode == "open":
            with self._lock:
                self._degraded[rid] = None
            return Reservation(granted=True, degraded="open")
        local = self._local
        self._seed(local, scopes)
        reservation = local.reserve(rid, scopes, usd_micros, tokens, lease_s)
        if reservation.granted:
            with self._lock:
                self._degraded[rid] = local
        elif attempted:
            self._queue(_Pending(rid, 0, 0, tuple(scopes), release=True))
        return reservation._replace(degraded="local")

    # -- commit and release ------------------------------------------------------------------
    def commit(
        self,
        rid: str,
        usd_micros: int,
        tokens: int,
        scopes: Sequence[ScopeLimit] = (),
    ) -> CommitCode:
        return self._send(self._settle_locally(rid, usd_micros, tokens, scopes, release=False))

    def release(self, rid: str, scopes: Sequence[ScopeLimit] = ()) -> CommitCode:
        return self._send(self._settle_locally(rid, 0, 0, scopes, release=True))

    async def acommit(
        self, rid: str, usd_micros: int, tokens: int, scopes: Sequence[ScopeLimit] = ()
    ) -> CommitCode:
        pending = self._settle_locally(rid, usd_micros, tokens, scopes, release=False)
        return await self._asend(pending)

    async def arelease(self, rid: str, scopes: Sequence[ScopeLimit] = ()) -> CommitCode:
        return await self._asend(self._settle_locally(rid, 0, 0, scopes, release=True))

    def _send(self, pending: _Pending | None) -> CommitCode:
        """Write to the store now, or queue for the outbox (None: nothing to write)."""
        if pending is None:
            return CommitCode.DUPLICATE
        if not self._open:
            try:
                return pending.send(self.engine)
            except LedgerUnavailable as exc:
                self._trip(exc)
        return self._queue(pending)

    async def _asend(self, pending: _Pending | None) -> CommitCode:
        if pending is None:
            return CommitCode.DUPLICATE
        if not self._open:
            try:
                return await pending.asend(self.engine)
            except LedgerUnavailable as exc:
                self._trip(exc)
        return self._queue(pending)

    def _settle_locally(
        self,
        rid: str,
        usd_micros: int,
        tokens: int,
        scopes: Sequence[ScopeLimit],
        *,
        release: bool,
    ) -> _Pending | None:
        """Settle a reservation made without the store in the fallback, and say what the store
        still has to learn (None: nothing, a released call that never reached it)."""
        with self._lock:
            degraded = rid in self._degraded
            local = self._degraded.pop(rid, None)
        if local is not None:
            if release:
                local.release(rid, scopes)
            else:
                local.commit(rid, usd_micros, tokens, scopes)
        if degraded and release:
            return None  # never held in the store, nothing spent: it needs to know nothing
        return _Pending(rid, usd_micros, tokens, tuple(scopes), release)

    def _queue(self, pending: _Pending) -> CommitCode:
        with self._lock:
            self._outbox.append(pending)
        self._ensure_prober()
        return CommitCode.QUEUED

    # -- reads -------------------------------------------------------------------------------
    def snapshot(self, scope: str) -> ScopeState:
        if not self._open:
            try:
                state = self.engine.snapshot(scope)
                with self._lock:
                    self._seen[scope] = state
                return state
            except LedgerUnavailable as exc:
                self._trip(exc)
        if self.fail_mode == "local":
            return self._local.snapshot(scope)
        return self._seen.get(scope) or ScopeState(scope)

    def close(self) -> None:
        self.flush()
        self.engine.close()

    # -- the breaker -------------------------------------------------------------------------
    def _trip(self, exc: LedgerUnavailable) -> None:
        with self._lock:
            if self._open:
                return
            self._open = True
            self.outages += 1
            self._local = MemoryLedger()  # a fresh fallback, seeded from the latest shared state
        _logger.warning(
            "costspan: the budget ledger is unreachable (%s); until it is back, budget checks "
            "run with COSTSPAN_FAIL_MODE=%s and commits wait in an outbox",
            exc,
            self.fail_mode,
        )
        self._ensure_prober()

    def _ensure_prober(self) -> None:
        with self._lock:
            if not self._open and not self._outbox:
                return
            if self._prober is not None and self._prober.is_alive():
                return
            self._prober = threading.Thread(
                target=self._probe, name="costspan-ledger-probe", daemon=True
            )
            self._prober.start()

    def _probe(self) -> None:
        """Ask the store until it answers, replay the outbox, then close the circuit."""
        wait = self._probe_interval
        while True:
            time.sleep(wait)
            try:
                self.engine.ping()
            except LedgerUnavailable:
                wait = min(wait * 2, self._max_probe_interval)
                continue
            except Exception:
                _logger.exception("costspan: unexpected error while probing the ledger")
                wait = min(wait * 2, self._max_probe_interval)
                continue
            if self.flush():
                was_open = self._open
                self._open = False
                if was_open:
                    _logger.warning("costspan: the budget ledger is back; budgets are shared again")
                with self._lock:
                    if not self._outbox:  # nothing arrived meanwhile
                        self._prober = None
                        return

    def flush(self) -> bool:
        """Replay the outbox in order; True when it is empty (everything acknowledged)."""
        while True:
            with self._lock:
                if not self._outbox:
                    return True
                pending = self._outbox[0]
            try:
                pending.send(self.engine)
            except LedgerUnavailable:
                return False
            except Exception:
                # Not a connectivity problem: keeping it would block the queue forever.
                _logger.exception(
                    "costspan: dropping an outbox entry the ledger rejected: %s", pending
                )
            with self._lock:
                if self._outbox and self._outbox[0] is pending:
                    self._outbox.popleft()


_live: weakref.WeakSet[FailSafeLedger] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    for ledger in list(_live):
        if not ledger.queued:
            continue
        try:
            ledger.flush()
        except Exception:
            _logger.exception("costspan: could not replay the ledger outbox at exit")
        # Unwritten releases only free holds early (leases free them anyway); commits are spend.
        commits = [p for p in ledger._outbox if not p.release]  # pyright: ignore[reportPrivateUsage]
        if commits:
            lost = sum(p.usd_micros for p in commits)
            _logger.error(
                "costspan: %d ledger commit(s) totalling $%s could not be written to %r before "
                "exit; the spend is on the spans and in the cost metric, not in the ledger",
                len(commits),
                Decimal(lost) / 1_000_000,
                ledger.engine,
            )
