"""The in-memory ledger: one process, one lock, bounded memory.

Every operation takes the lock once, so checking all caps and writing all counters is atomic
with respect to every other thread of the process. Expired holds are swept lazily, in the scopes
a reservation touches. A reservation's record lives while it holds; once settled it is kept
among the ``settled_kept`` most recent (so a repeated commit is recognised as a duplicate: in one
process nothing retries later than that), and idle scopes for ``scope_ttl_s`` (or until their
window ends); both are purged as new work arrives, and the number of scopes is capped. A scope
whose budget has ended (:meth:`MemoryLedger.retire`) leaves as soon as nothing is held in it, so
a service that opens a budget per request keeps no memory for requests that are over.

It is also the per-process fallback of the shared engines (``COSTSPAN_FAIL_MODE=local``), which
seed it with the spend they last saw (:meth:`MemoryLedger.seed`).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from costspan.ledgers._protocol import (
    CommitCode,
    InlineAsync,
    Reservation,
    ScopeLimit,
    ScopeState,
    check_amounts,
    refusal,
)


@dataclass(slots=True)
class _Counter:
    spent_micros: int = 0
    held_micros: int = 0
    spent_tokens: int = 0
    held_tokens: int = 0
    calls: int = 0
    cap_micros: int | None = None
    cap_tokens: int | None = None
    # rid -> (held µ$, held tokens, lease expiry)
    holds: dict[str, tuple[int, int, float]] = field(
        default_factory=dict[str, tuple[int, int, float]]
    )
    touched: float = 0.0
    expires_at: float | None = None
    retiring: Callable[[ScopeState], None] | None = None
    """Set by retire() while holds remain: called with the final state when the last one goes."""

    def tighten(self, limit: ScopeLimit) -> None:
        if limit.expires_at is not None:
            self.expires_at = limit.expires_at
        if not limit.sticky:
            # A configured limit: the cap given now is the cap (configuration may change).
            self.cap_micros, self.cap_tokens = limit.cap_micros, limit.cap_tokens
            return
        if limit.cap_micros is not None:
            self.cap_micros = (
                limit.cap_micros
                if self.cap_micros is None
                else min(self.cap_micros, limit.cap_micros)
            )
        if limit.cap_tokens is not None:
            self.cap_tokens = (
                limit.cap_tokens
                if self.cap_tokens is None
                else min(self.cap_tokens, limit.cap_tokens)
            )

    def sweep(self, now: float) -> None:
        expired = [rid for rid, (_, _, expiry) in self.holds.items() if expiry <= now]
        for rid in expired:
            micros, tokens, _ = self.holds.pop(rid)
            self.held_micros -= micros
            self.held_tokens -= tokens

    def fits(self, usd_micros: int, tokens: int) -> bool:
        return (
            self.cap_micros is None
            or usd_micros <= self.cap_micros - self.spent_micros - self.held_micros
        ) and (
            self.cap_tokens is None
            or tokens <= self.cap_tokens - self.spent_tokens - self.held_tokens
        )

    def state(self, key: str) -> ScopeState:
        return ScopeState(
            key,
            spent_micros=self.spent_micros,
            held_micros=self.held_micros,
            spent_tokens=self.spent_tokens,
            held_tokens=self.held_tokens,
            calls=self.calls,
            cap_micros=self.cap_micros,
            cap_tokens=self.cap_tokens,
        )


@dataclass(slots=True)
class _Record:
    scopes: tuple[str, ...]
    state: str  # "held", "committed", "released"
    expires: float  # when a held record may be forgotten (its lease plus an hour)


class MemoryLedger(InlineAsync):
    """The embedded default engine. Thread-safe; per process.

    Args:
        settled_kept: how many settled reservations are remembered (idempotency window).
        scope_ttl_s: how long an idle scope without holds or window is kept.
        max_scopes: the most scopes kept; past it, idle ones go, least spent first.
        clock: seconds since the epoch (UTC); injectable for tests.
    """

    def __init__(
        self,
        *,
        settled_kept: int = 4096,
        scope_ttl_s: float = 3600.0,
        max_scopes: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._counters: dict[str, _Counter] = {}
        self._records: dict[str, _Record] = {}  # reservations that hold
        self._settled: OrderedDict[str, _Record] = OrderedDict()  # the most recent settled
        self._lock = threading.Lock()
        self._settled_kept = settled_kept
        self._scope_ttl = scope_ttl_s
        self._max_scopes = max_scopes
        self._clock = clock
        self._next_purge = 0.0

    # -- protocol ----------------------------------------------------------------------------
    def reserve(
        self,
        rid: str,
        scopes: Sequence[ScopeLimit],
        usd_micros: int,
        tokens: int,
        lease_s: float,
    ) -> Reservation:
        check_amounts(usd_micros, tokens)
        with self._lock:
            now = self._clock()
            if now >= self._next_purge:
                self._maybe_purge(now)
            counters = [self._counter(limit.key, now) for limit in scopes]
            if rid in self._records or rid in self._settled:
                states = (c.state(limit.key) for limit, c in zip(scopes, counters, strict=True))
                return Reservation(granted=True, duplicate=True, states=tuple(states))
            # Check every cap before writing anything: all scopes or none.
            failed: _Counter | None = None
            for limit, counter in zip(scopes, counters, strict=True):
                counter.retiring = None  # in use again (a re-entered budget): it stays
                if (
                    limit.cap_micros != counter.cap_micros
                    or limit.cap_tokens != counter.cap_tokens
                    or limit.expires_at is not None
                ):
                    counter.tighten(limit)
                if counter.holds:
                    counter.sweep(now)
                if failed is None and not counter.fits(usd_micros, tokens):
                    failed = counter
            if failed is not None:
                states = [c.state(limit.key) for limit, c in zip(scopes, counters, strict=True)]
                return refusal(states[counters.index(failed)], states)
            expiry = now + lease_s
            hold = (usd_micros, tokens, expiry)
            for counter in counters:
                counter.held_micros += usd_micros
                counter.held_tokens += tokens
                counter.holds[rid] = hold
            keys = tuple([limit.key for limit in scopes])
            self._records[rid] = _Record(keys, "held", expiry + 3600)
            return Reservation(
                True,
                states=tuple([c.state(key) for key, c in zip(keys, counters, strict=True)]),
            )

    def commit(
        self,
        rid: str,
        usd_micros: int,
        tokens: int,
        scopes: Sequence[ScopeLimit] = (),
    ) -> CommitCode:
        check_amounts(usd_micros, tokens)
        with self._lock:
            return self._settle(rid, usd_micros, tokens, scopes, "committed")

    def release(self, rid: str, scopes: Sequence[ScopeLimit] = ()) -> CommitCode:
        with self._lock:
            return self._settle(rid, 0, 0, (), "released")

    def extend(self, rid: str, scopes: Sequence[ScopeLimit], lease_s: float) -> bool:
        with self._lock:
            record = self._records.get(rid)
            if record is None:
                return False
            now = self._clock()
            expiry = now + lease_s
            alive = False
            for key in record.scopes:
                counter = self._counters.get(key)
                hold = counter.holds.get(rid) if counter is not None else None
                if counter is not None and hold is not None and hold[2] > now:
                    counter.holds[rid] = (hold[0], hold[1], expiry)
                    alive = True
            record.expires = max(record.expires, expiry + 3600)
            return alive

    def snapshot(self, scope: str) -> ScopeState:
        with self._lock:
            counter = self._counters.get(scope)
            if counter is None:
                return ScopeState(scope)
            counter.sweep(self._clock())
            return counter.state(scope)

    def seed(self, state: ScopeState) -> None:
        """Start a scope from known spend (the shared ledger's last answer), if it is new here."""
        with self._lock:
            if state.key not in self._counters:
                self._counters[state.key] = _Counter(
                    spent_micros=state.spent_micros,
                    spent_tokens=state.spent_tokens,
                    calls=state.calls,
                    touched=self._clock(),
                )

    def retire(self, scope: str, on_gone: Callable[[ScopeState], None]) -> None:
        """The scope's budget has ended: forget it once nothing is held in it (now, or when its
        last hold settles), handing its final counters to ``on_gone`` first. A later
        reservation in the scope (a re-entered budget) starts it again."""
        with self._lock:
            counter = self._counters.get(scope)
            if counter is None:
                return
            counter.sweep(self._clock())
            if counter.holds:
                counter.retiring = on_gone
            else:
                self._drop(scope, counter, on_gone)

    # -- internals (lock held) ---------------------------------------------------------------
    def _drop(
        self, key: str, counter: _Counter, on_gone: Callable[[ScopeState], None] | None = None
    ) -> None:
        del self._counters[key]
        callback = on_gone or counter.retiring
        counter.retiring = None
        if callback is not None:
            callback(counter.state(key))

    def _counter(self, key: str, now: float) -> _Counter:
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = _Counter(touched=now)
            if len(self._counters) > self._max_scopes:
                self._trim(keep=key)
        counter.touched = now
        return counter

    def _trim(self, keep: str | None = None) -> None:
        """Drop idle scopes until at most max_scopes remain: those that spent nothing first
        (scopes made by refused calls, or by ids a client invented), then the ones that spent
        least, oldest first. A flood of new scopes can then only make the ledger forget the
        scopes nearest to nothing, never a user close to their cap."""
        by_age = sorted(
            self._counters.items(),
            key=lambda kv: (kv[1].spent_micros, kv[1].spent_tokens, kv[1].touched),
        )
        # Down to 90 % at once: a flood costs one sort per tenth of the table, not per scope.
        excess = len(self._counters) - self._max_scopes * 9 // 10
        for key, counter in by_age:
            if excess <= 0:
                break
            if not counter.holds and key != keep:
                del self._counters[key]
                excess -= 1

    def _settle(
        self,
        rid: str,
        usd_micros: int,
        tokens: int,
        scopes: Sequence[ScopeLimit],
        state: str,
    ) -> CommitCode:
        now = self._clock()
        if rid in self._settled:
            return CommitCode.DUPLICATE
        record = self._records.pop(rid, None)
        if record is None:
            keys = tuple(limit.key for limit in scopes)
            for limit in scopes:
                self._counter(limit.key, now).tighten(limit)
            code = CommitCode.POST_HOC
        else:
            keys = record.scopes
            code = CommitCode.COMMITTED
        for key in keys:
            counter = self._counter(key, now)
            hold = counter.holds.pop(rid, None)
            if hold is not None:
                counter.held_micros -= hold[0]
                counter.held_tokens -= hold[1]
            elif record is not None:
                code = CommitCode.LATE  # the lease ran out and the hold was swept
            if state == "committed":
                counter.spent_micros += usd_micros
                counter.spent_tokens += tokens
                counter.calls += 1
        if record is None:
            record = _Record(keys, state, now)
        else:  # the hold's own record, now settled (its time kept in `expires`)
            record.state, record.expires = state, now
        self._settled[rid] = record
        while len(self._settled) > self._settled_kept:
            self._settled.popitem(last=False)
        for key in keys:
            counter = self._counters.get(key)
            if counter is not None and counter.retiring is not None and not counter.holds:
                self._drop(key, counter)
        return code

    def _maybe_purge(self, now: float) -> None:
        if now < self._next_purge:
            return
        self._next_purge = now + 60.0
        self._records = {rid: r for rid, r in self._records.items() if r.expires > now}
        for counter in self._counters.values():
            if counter.holds:
                counter.sweep(now)  # a crashed caller's hold must not keep its scope forever
        idle = now - self._scope_ttl
        self._counters = {
            k: c
            for k, c in self._counters.items()
            if c.holds or (c.touched > idle and (c.expires_at is None or c.expires_at > now))
        }
        if len(self._counters) > self._max_scopes:
            self._trim()
