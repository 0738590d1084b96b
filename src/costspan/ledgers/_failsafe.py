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
from typing import Final, Protocol

from costspan._money import usd
from costspan.ledgers._memory import MemoryLedger
from costspan.ledgers._outbox import Entry, Outbox
from costspan.ledgers._protocol import (
    FAIL_MODES,
    CommitCode,
    FailMode,
    Ledger,
    LedgerUnavailable,
    Reservation,
    ScopeLimit,
    ScopeState,
)

_logger = logging.getLogger(__name__)

_SEEN_SCOPES: Final = 10_000  # scopes whose last shared state is remembered for the fallback


class Engine(Ledger, Protocol):
    """A ledger whose store can be unreachable, and can be asked whether it is back."""

    def ping(self) -> None: ...


def _send(entry: Entry, engine: Engine) -> CommitCode:
    if entry.release:
        return engine.release(entry.rid, entry.scopes)
    return engine.commit(entry.rid, entry.usd_micros, entry.tokens, entry.scopes)


async def _asend(entry: Entry, engine: Engine) -> CommitCode:
    if entry.release:
        return await engine.arelease(entry.rid, entry.scopes)
    return await engine.acommit(entry.rid, entry.usd_micros, entry.tokens, entry.scopes)


class FailSafeLedger:
    """A shared engine behind a circuit breaker, a fail mode and an outbox (see module doc).

    Args:
        engine: the shared ledger engine.
        fail_mode: ``closed``, ``open`` or ``local``.
        outbox: where unacknowledged commits and releases wait, durably (see
            :mod:`costspan.ledgers._outbox`); None keeps them in memory only.
        probe_interval_s: first wait before asking a dead store again; doubles up to
            ``max_probe_interval_s`` while it stays dead.
    """

    def __init__(
        self,
        engine: Engine,
        fail_mode: FailMode = "local",
        *,
        outbox: Outbox | None = None,
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
        self._outbox: deque[Entry] = deque()  # in memory: no outbox file, or it failed
        self.disk = outbox
        self._on_disk = False  # entries may wait in the outbox file
        self._local = MemoryLedger()
        # Where each reservation decided without the store lives (None: granted unmetered).
        self._degraded: dict[str, MemoryLedger | None] = {}
        self._seen: OrderedDict[str, ScopeState] = OrderedDict()
        self._prober: threading.Thread | None = None
        self.outages = 0
        self._rejections: set[str] = set()  # error types already logged with a traceback
        _live.add(self)
        if outbox is not None:
            try:
                self._on_disk = outbox.counts()[0] > 0
            except Exception:
                _logger.exception("costspan: cannot read the ledger outbox %s", outbox.path)
            if self._on_disk:
                # A previous process left spend behind (killed during an outage): replay it.
                self._ensure_prober()

    def __repr__(self) -> str:
        return f"FailSafeLedger({self.engine!r}, fail_mode={self.fail_mode!r})"

    @property
    def available(self) -> bool:
        """False while the circuit is open (the store was found unreachable)."""
        return not self._open

    @property
    def queued(self) -> int:
        """Commits and releases waiting in the outbox (memory and file)."""
        waiting = len(self._outbox)
        if self.disk is not None and self._on_disk:
            try:
                waiting += self.disk.counts()[0]
            except Exception:
                _logger.exception("costspan: cannot read the ledger outbox %s", self.disk.path)
        return waiting

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
                self._queue(Entry(rid, 0, 0, tuple(scopes), release=True))
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
            self._queue(Entry(rid, 0, 0, tuple(scopes), release=True))
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

    def _send(self, pending: Entry | None) -> CommitCode:
        """Write to the store now, or queue for the outbox (None: nothing to write)."""
        if pending is None:
            return CommitCode.DUPLICATE
        if not self._open:
            try:
                return _send(pending, self.engine)
            except LedgerUnavailable as exc:
                self._trip(exc)
            except Exception as exc:
                # Not unreachable, but not written either: keep it, never drop spend.
                self._rejected(exc)
        return self._queue(pending)

    async def _asend(self, pending: Entry | None) -> CommitCode:
        if pending is None:
            return CommitCode.DUPLICATE
        if not self._open:
            try:
                return await _asend(pending, self.engine)
            except LedgerUnavailable as exc:
                self._trip(exc)
            except Exception as exc:
                self._rejected(exc)
        return self._queue(pending)

    def _rejected(self, exc: Exception) -> None:
        """Log a settlement the store refused: with a traceback the first time for each kind of
        error, at debug level after that (a store refusing every write must not flood the log)."""
        kind = type(exc).__name__
        with self._lock:
            first = kind not in self._rejections
            self._rejections.add(kind)
        if first:
            _logger.error("costspan: the ledger rejected a settlement; it is kept", exc_info=exc)
        else:
            _logger.debug("costspan: the ledger rejected a settlement (%s); it is kept", kind)

    def _settle_locally(
        self,
        rid: str,
        usd_micros: int,
        tokens: int,
        scopes: Sequence[ScopeLimit],
        *,
        release: bool,
    ) -> Entry | None:
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
        return Entry(rid, usd_micros, tokens, tuple(scopes), release)

    def _queue(self, pending: Entry) -> CommitCode:
        """Keep an entry until the store takes it: on disk before the call returns (a killed
        process loses nothing), in memory if there is no outbox file or it cannot be written."""
        written = False
        if self.disk is not None:
            try:
                self.disk.put(pending)
                written = self._on_disk = True
            except Exception as exc:
                if once_per_outbox(self.disk):
                    _logger.error(
                        "costspan: cannot write the ledger outbox %s (%s); settlements wait in "
                        "memory and are lost if this process dies before the ledger is back",
                        self.disk.path,
                        exc,
                    )
        if not written:
            with self._lock:
                self._outbox.append(pending)
        self._ensure_prober()
        return CommitCode.QUEUED

    def extend(self, rid: str, scopes: Sequence[ScopeLimit], lease_s: float) -> bool:
        """Renew a live hold: in the fallback that holds it, or in the store. Never raises: a
        hold that cannot be renewed expires, and its late commit is still charged once."""
        with self._lock:
            degraded = rid in self._degraded
            local = self._degraded.get(rid)
        if degraded:
            return local.extend(rid, scopes, lease_s) if local is not None else True
        if self._open:
            return False
        try:
            return self.engine.extend(rid, scopes, lease_s)
        except LedgerUnavailable as exc:
            self._trip(exc)
        except Exception:
            _logger.exception("costspan could not renew a budget hold")
        return False

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
            if not self._open and not self._outbox and not self._on_disk:
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
                    if not self._outbox and not self._on_disk:  # nothing arrived meanwhile
                        self._prober = None
                        return

    def flush(self) -> bool:
        """Replay the outbox in order (memory, then the file); True when it is empty."""
        while True:
            with self._lock:
                if not self._outbox:
                    break
                pending = self._outbox[0]
            try:
                _send(pending, self.engine)
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
        return self._flush_disk()

    def _flush_disk(self) -> bool:
        disk = self.disk
        if disk is None or not self._on_disk:
            return True
        while True:
            try:
                claimed = disk.claim()
            except Exception:
                _logger.exception("costspan: cannot read the ledger outbox %s", disk.path)
                return False
            if claimed is None:
                self._on_disk = False
                return True
            ident, entry = claimed
            try:
                _send(entry, self.engine)
            except LedgerUnavailable:
                disk.unclaim(ident)
                return False
            except Exception as exc:
                # Rejected, not unreachable: retried a bounded number of times, then kept as
                # dead for `costspan doctor`, never silently dropped.
                disk.failed(ident, f"{type(exc).__name__}: {exc}")
                continue
            disk.done(ident)


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
                "exit and there is no outbox file to keep them; the spend is on the spans and "
                "in the cost metric, not in the ledger",
                len(commits),
                usd(lost),
                ledger.engine,
            )
        disk = ledger.disk
        if disk is not None:
            try:
                live, _, micros = disk.counts()
            except Exception:
                continue
            if live:
                _logger.warning(
                    "costspan: %d ledger settlement(s) ($%s of spend) wait in %s; the next "
                    "process that opens %s replays them",
                    live,
                    usd(micros),
                    disk.path,
                    ledger.engine,
                )


_warned_outboxes: weakref.WeakSet[Outbox] = weakref.WeakSet()


def once_per_outbox(outbox: Outbox) -> bool:
    if outbox in _warned_outboxes:
        return False
    _warned_outboxes.add(outbox)
    return True
