"""Quota leases: a process admits calls against its own slice of a hot scope's cap.

Every call of a fleet passes the global rule (``* $5000/day``): in the spread layout that one
counter would still take a script per call on one shard. Instead each process *leases* a slice
of that cap - a hold in the scope's counter, like a reservation's, with a lease - and admits
calls against the slice locally, with no round trip. What its calls spend inside the slice is
flushed to the counter (moved from held to spent, so spent + held does not move) at least every
``flush_s`` seconds, which also renews the lease and resizes the slice: the same one script
(``lua/lease.lua``), on the counter's slot, a few times a second per process instead of twice
per call.

Why no cap is overspent: a slice is granted by the server only out of room (cap - spent -
everybody's holds), so the sum of all slices and holds never passes the cap; a process admits a
call only if it fits what is left of its own slice. Near the cap the server grants at most a
quarter of the remaining room beyond what a process needs right now, so slices shrink and no
process sits on the last of the cap (a call may then be refused while another process's slice
still has room: spurious, never an overspend; idle slices come back within ~2 ``flush_s``).

Failure cases:

- **A process dies** (SIGKILL) holding a slice: the slice's hold expires with its lease
  (``lease_s``) and the room comes back, like any crashed reservation. What its calls had spent
  since its last flush (at most ``flush_s`` of its spend, and never more than its slice) was
  never written: the per-user and per-tenant counters have it, the global one is short of it.
- **A process is cut off** from the counter's shard: it stops admitting against its slice
  ``(1 - VALID_FRACTION) * lease_s`` before the server can expire it (its own monotonic clock,
  started before the request that granted it), so it never uses a slice the server has given
  back; new calls then need the ledger and the fail mode decides. Its unflushed spend is written
  when it reaches the shard again (a late flush is still charged, once).
- **A failover** of the counter's shard can lose the last writes (replication is asynchronous):
  a slice granted just before may be unknown to the new primary while the process uses it.
  The exposure is one slice per process; ``CLUSTER FAILOVER`` (manual) loses nothing.
- **A flush whose reply is lost** is retried with the same sequence number: a duplicate, never a
  second charge.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import secrets
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final

from costspan.ledgers._protocol import LedgerUnavailable, ScopeLimit, ScopeState
from costspan.ledgers._redis import SWEEP_LIMIT, specs, state_from

_logger = logging.getLogger(__name__)

SLICE_LEASE_S: Final = 10.0
"""How long a slice lives on the server without a flush renewing it."""
FLUSH_S: Final = 1.0
"""Spend inside a slice is written at least this often (and the slice renewed)."""
SLICE_CALLS: Final = 32
"""A slice is sized for about this many calls like the largest recent one."""
VALID_FRACTION: Final = 0.8
"""A process uses a slice for at most this fraction of its lease after the flush that granted it."""
_SETTLED: Final = 65_536  # settled reservation ids remembered, so a repeated commit is a no-op


class Settled(Enum):
    """What :meth:`LeaseBook.settle` did with a reservation."""

    LOCAL = 1  # it held in this process's slice: settled there
    DUPLICATE = 2  # it was settled here before
    NOT_OURS = 3  # not admitted through a slice of this process
    LATE = 4  # its hold had expired: settled there anyway (charged once)


@dataclass(slots=True, eq=False)
class _Slice:
    key: str
    rid: str
    scope: ScopeLimit
    lock: threading.Lock = field(default_factory=threading.Lock)
    seq: int = 0
    size_usd: int = 0
    size_tok: int = 0
    inflight_usd: int = 0
    inflight_tok: int = 0
    unflushed_usd: int = 0
    unflushed_tok: int = 0
    unflushed_calls: int = 0
    pending: tuple[int, int, int, int] | None = None  # seq, usd, tokens, calls: sent, unacked
    valid_until: float = 0.0
    used_at: float = 0.0
    unit_usd: int = 0
    unit_tok: int = 0
    server: ScopeState | None = None
    retired: bool = False  # taken out of the book (idle and empty): callers get a fresh one
    holds: dict[str, tuple[int, int, float]] = field(
        default_factory=dict[str, tuple[int, int, float]]
    )
    """Calls in flight: (usd, tokens, expiry on the monotonic clock)."""
    expired: OrderedDict[str, None] = field(default_factory=OrderedDict[str, None])
    """Calls whose hold expired before they settled (a late settle is still charged, once)."""

    def fits(self, usd: int, tokens: int, now: float) -> bool:
        if now >= self.valid_until:
            return False
        usd_ok = (
            self.scope.cap_micros is None
            or usd <= self.size_usd - self.inflight_usd - self.unflushed_usd
        )
        tok_ok = (
            self.scope.cap_tokens is None
            or tokens <= self.size_tok - self.inflight_tok - self.unflushed_tok
        )
        return usd_ok and tok_ok

    def sweep(self, now: float) -> None:
        """Drop the holds of calls whose lease ran out (a crashed or abandoned call), as the
        server does for holds in its counters."""
        for rid, (usd, tokens, expiry) in list(self.holds.items()):
            if expiry <= now:
                del self.holds[rid]
                self.inflight_usd -= usd
                self.inflight_tok -= tokens
                self.expired[rid] = None
                while len(self.expired) > _SETTLED:
                    self.expired.popitem(last=False)

    def view(self) -> ScopeState:
        """The scope as this process sees it: the counter at the last flush, plus what its own
        calls spent since (still held in the slice there)."""
        base = self.server or ScopeState(self.key)
        return base._replace(
            spent_micros=base.spent_micros + self.unflushed_usd,
            held_micros=max(base.held_micros - self.unflushed_usd, 0),
            spent_tokens=base.spent_tokens + self.unflushed_tok,
            held_tokens=max(base.held_tokens - self.unflushed_tok, 0),
            calls=base.calls + self.unflushed_calls,
            cap_micros=self.scope.cap_micros if base.cap_micros is None else base.cap_micros,
            cap_tokens=self.scope.cap_tokens if base.cap_tokens is None else base.cap_tokens,
        )

    def refusal_view(self) -> ScopeState:
        """The view that counts only this process's calls in flight as its holds (its unused
        slice is room a call could have, once given back)."""
        state = self.view()
        return state._replace(
            held_micros=max(state.held_micros - self.size_usd + self.unflushed_usd, 0)
            + self.inflight_usd,
            held_tokens=max(state.held_tokens - self.size_tok + self.unflushed_tok, 0)
            + self.inflight_tok,
        )


Taken = tuple[bool, bool, ScopeState]
"""(granted, duplicate, the scope's state as this process sees it)."""
Keys = Callable[[str, str], list[str]]
"""(reservation id, scope key) -> [record, counter, lease set] keys of one scope's slot."""
Runner = Callable[[str, Sequence[str], Sequence[str]], Any]


class LeaseBook:
    """This process's slices of the leased scopes (see the module doc)."""

    def __init__(
        self,
        run_script: Runner,
        keys: Keys,
        prefixes: Sequence[str],
        *,
        record_ms: str,
        idle_ms: str,
        slice_calls: int = SLICE_CALLS,
        lease_s: float = SLICE_LEASE_S,
        flush_s: float = FLUSH_S,
    ) -> None:
        self._run = run_script
        self._keys = keys
        self.prefixes = tuple(prefixes)
        self._record_ms = record_ms
        self._idle_ms = idle_ms
        self.slice_calls = slice_calls
        self.lease_s = lease_s
        self.flush_s = flush_s
        self._lock = threading.Lock()
        self._reset()
        _books.add(self)

    def _reset(self) -> None:
        """Forget every slice (a fresh book; also in a forked child, which owns none of them)."""
        self._lock = threading.Lock()
        self._slices: dict[str, _Slice] = {}
        self._settled: OrderedDict[str, None] = OrderedDict()
        self._token = secrets.token_hex(8)
        self._numbers = itertools.count(1)
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None
        self.closed = False

    def covers(self, key: str) -> bool:
        """Whether calls on this scope are admitted against a slice."""
        return key.startswith(self.prefixes)

    def _slice(self, scope: ScopeLimit) -> _Slice:
        with self._lock:
            found = self._slices.get(scope.key)
            if found is None:
                if self.closed:
                    raise LedgerUnavailable("the ledger is closed")
                rid = f"lease:{self._token}:{next(self._numbers)}"
                found = self._slices[scope.key] = _Slice(scope.key, rid, scope)
                self._ensure_keeper()
            return found

    # -- admission ---------------------------------------------------------------------------
    def take(self, rid: str, scope: ScopeLimit, usd: int, tokens: int, lease_s: float) -> Taken:
        """Hold a call in this process's slice of ``scope``, taking or growing the slice when
        it is too small (one round trip). Returns (granted, duplicate, the scope's state)."""
        sl = self._slice(scope)
        with sl.lock:
            if sl.retired:  # the keeper gave it back while this thread waited for it
                return self.take(rid, scope, usd, tokens, lease_s)
            sl.scope = scope  # configured caps follow the configuration
            if rid in sl.holds:
                return True, True, sl.view()
            now = time.monotonic()
            if not sl.fits(usd, tokens, now):
                sl.sweep(now)
                self._grow(sl, usd, tokens)
                if not sl.fits(usd, tokens, time.monotonic()):
                    return False, False, sl.refusal_view()
            self._admit(sl, rid, usd, tokens, lease_s)
            return True, False, sl.view()

    def take_now(
        self, rid: str, scope: ScopeLimit, usd: int, tokens: int, lease_s: float
    ) -> Taken | None:
        """:meth:`take` when it needs neither a round trip nor a wait for the slice's lock
        (an event loop must not block); None otherwise."""
        sl = self._slice(scope)
        if not sl.lock.acquire(blocking=False):
            return None
        try:
            if sl.retired:
                return None
            sl.scope = scope
            if rid in sl.holds:
                return True, True, sl.view()
            if not sl.fits(usd, tokens, time.monotonic()):
                return None
            self._admit(sl, rid, usd, tokens, lease_s)
            return True, False, sl.view()
        finally:
            sl.lock.release()

    @staticmethod
    def _admit(sl: _Slice, rid: str, usd: int, tokens: int, lease_s: float) -> None:
        now = time.monotonic()
        sl.holds[rid] = (usd, tokens, now + lease_s)
        sl.inflight_usd += usd
        sl.inflight_tok += tokens
        sl.unit_usd = max(sl.unit_usd, usd)
        sl.unit_tok = max(sl.unit_tok, tokens)
        sl.used_at = now

    def extend(self, rid: str, key: str, lease_s: float) -> bool:
        """Give a call's hold in this process's slice a new lease; False when it is gone."""
        sl = self._slices.get(key)
        if sl is None:
            return False
        with sl.lock:
            hold = sl.holds.get(rid)
            if hold is None:
                return False
            sl.holds[rid] = (hold[0], hold[1], time.monotonic() + lease_s)
            return True

    def give_back(self, rid: str, key: str) -> None:
        """Undo a take (another scope of the call refused it)."""
        sl = self._slices.get(key)
        if sl is None:
            return
        with sl.lock:
            hold = sl.holds.pop(rid, None)
            if hold is not None:
                sl.inflight_usd -= hold[0]
                sl.inflight_tok -= hold[1]

    def settle(
        self, rid: str, key: str, usd: int, tokens: int, *, release: bool, wait: bool = True
    ) -> Settled | None:
        """Settle a call admitted through this process's slice of ``key``. With ``wait``
        false, None when the slice's lock is busy (a flush in progress)."""
        sl = self._slices.get(key)
        if sl is not None:
            if not sl.lock.acquire(blocking=wait):
                return None
            try:
                hold = sl.holds.pop(rid, None)
                late = hold is None and rid in sl.expired
                sl.expired.pop(rid, None)
                if hold is not None:
                    sl.inflight_usd -= hold[0]
                    sl.inflight_tok -= hold[1]
                if hold is not None or late:
                    if not release:
                        sl.unflushed_usd += usd
                        sl.unflushed_tok += tokens
                        sl.unflushed_calls += 1
                    sl.used_at = time.monotonic()
                    self._remember(rid, key)
                    return Settled.LATE if late else Settled.LOCAL
            finally:
                sl.lock.release()
        with self._lock:
            if f"{key}\x00{rid}" in self._settled:
                return Settled.DUPLICATE
        return Settled.NOT_OURS

    def _remember(self, rid: str, key: str) -> None:
        with self._lock:
            self._settled[f"{key}\x00{rid}"] = None
            while len(self._settled) > _SETTLED:
                self._settled.popitem(last=False)

    def view(self, key: str, server: ScopeState) -> ScopeState:
        """A snapshot of ``key`` corrected by this process's unflushed spend."""
        sl = self._slices.get(key)
        if sl is None:
            return server
        with sl.lock:
            return server._replace(
                spent_micros=server.spent_micros + sl.unflushed_usd,
                held_micros=max(server.held_micros - sl.unflushed_usd, 0),
                spent_tokens=server.spent_tokens + sl.unflushed_tok,
                held_tokens=max(server.held_tokens - sl.unflushed_tok, 0),
                calls=server.calls + sl.unflushed_calls,
            )

    # -- talking to the counter --------------------------------------------------------------
    def _target(self, sl: _Slice, usd: int, tokens: int) -> tuple[int, int, int, int]:
        """(need usd, need tokens, want usd, want tokens) for a slice that must fit a call of
        ``usd``/``tokens`` on top of the calls in flight. A dimension without a cap is never
        held (its spend is still written)."""
        has_usd, has_tok = sl.scope.cap_micros is not None, sl.scope.cap_tokens is not None
        need_u = sl.inflight_usd + usd if has_usd else 0
        need_t = sl.inflight_tok + tokens if has_tok else 0
        want_u = need_u + max(sl.unit_usd, usd) * self.slice_calls if has_usd else 0
        want_t = need_t + max(sl.unit_tok, tokens) * self.slice_calls if has_tok else 0
        return need_u, need_t, want_u, want_t

    def _grow(self, sl: _Slice, usd: int, tokens: int) -> None:
        need_u, need_t, want_u, want_t = self._target(sl, usd, tokens)
        for _ in range(2):  # a duplicate (an earlier flush's lost reply) did not resize
            if self._flush(sl, need_u, need_t, want_u, want_t) != 2:
                return

    def _flush(self, sl: _Slice, need_u: int, need_t: int, want_u: int, want_t: int) -> int:
        """One lease script (the slice's lock is held): write the unflushed spend, renew and
        resize. Raises LedgerUnavailable (the spend stays to be flushed, with the same seq)."""
        if sl.pending is None:
            sl.seq += 1
            sl.pending = (sl.seq, sl.unflushed_usd, sl.unflushed_tok, sl.unflushed_calls)
        seq, p_usd, p_tok, p_calls = sl.pending
        sent_at = time.monotonic()
        args = [
            sl.rid,
            str(seq),
            str(p_usd),
            str(p_tok),
            str(p_calls),
            str(need_u),
            str(need_t),
            str(max(want_u, need_u)),
            str(max(want_t, need_t)),
            str(int(self.lease_s * 1000)),
            self._record_ms,
            self._idle_ms,
            str(SWEEP_LIMIT),
            specs([sl.scope]),
        ]
        words = self._run("lease", self._keys(sl.rid, sl.key), args).split()
        code = int(words[0])
        sl.pending = None
        sl.unflushed_usd -= p_usd
        sl.unflushed_tok -= p_tok
        sl.unflushed_calls -= p_calls
        sl.size_usd, sl.size_tok = int(words[1]), int(words[2])
        sl.server = state_from(sl.key, words[3:10])
        if code != 2:
            sl.valid_until = sent_at + self.lease_s * VALID_FRACTION
        return code

    # -- keeping slices fresh ----------------------------------------------------------------
    def _ensure_keeper(self) -> None:
        if self._keeper is not None and self._keeper.is_alive():
            return
        ref = weakref.ref(self)
        stop = self._stop

        def keep() -> None:
            while not stop.wait(self.flush_s):
                book = ref()
                if book is None:
                    return
                book.tick()
                del book

        self._keeper = threading.Thread(target=keep, name="costspan-lease-keeper", daemon=True)
        self._keeper.start()

    def tick(self, *, give_back_all: bool = False) -> None:
        """Flush spend, renew live slices and give back idle ones (the keeper thread calls
        this every ``flush_s``; ``give_back_all`` returns every unused slice now)."""
        now = time.monotonic()
        for sl in list(self._slices.values()):
            if not sl.lock.acquire(blocking=give_back_all):
                continue  # busy on a call's refill: its own flush does the work
            try:
                self._tend(sl, now, give_back_all)
            except LedgerUnavailable as exc:
                _logger.debug("costspan: could not flush a lease: %s", exc)
            except Exception:
                _logger.exception("costspan: unexpected error while flushing a lease")
            finally:
                sl.lock.release()

    def _tend(self, sl: _Slice, now: float, give_back_all: bool) -> None:
        sl.sweep(now)
        idle = give_back_all or (not sl.holds and now - sl.used_at > self.flush_s)
        renew_due = now > sl.valid_until - self.lease_s * 0.5
        busy = sl.unflushed_calls or sl.pending is not None
        if not (busy or (idle and (sl.size_usd or sl.size_tok)) or (renew_due and not idle)):
            if idle and not sl.holds and not sl.size_usd and not sl.size_tok:
                with self._lock:
                    if self._slices.get(sl.key) is sl:
                        del self._slices[sl.key]
                        sl.retired = True
            return
        need_u, need_t, want_u, want_t = self._target(sl, 0, 0)
        if idle:
            want_u, want_t = need_u, need_t  # give back all but the calls in flight
        if sl.unit_usd or sl.unit_tok:
            # The largest recent call decays: a burst long gone does not size slices forever.
            sl.unit_usd, sl.unit_tok = sl.unit_usd * 3 // 4, sl.unit_tok * 3 // 4
        self._flush(sl, need_u, need_t, want_u, want_t)

    def unflushed_micros(self) -> int:
        """Spend of this process's calls not yet written to the counters."""
        return sum(sl.unflushed_usd for sl in self._slices.values())

    def close(self) -> None:
        """Write every slice's spend and give every slice back (best effort, logged)."""
        self.closed = True
        self._stop.set()
        self.tick(give_back_all=True)
        lost = self.unflushed_micros()
        if lost:
            _logger.error(
                "costspan: $%s spent inside quota leases could not be written to the ledger",
                lost / 1_000_000,
            )


_books: weakref.WeakSet[LeaseBook] = weakref.WeakSet()


def _forget_in_child() -> None:
    # A forked child inherits its parent's slices in memory but owns none of them: using them
    # would spend the parent's slice twice.
    for book in list(_books):
        book._reset()  # pyright: ignore[reportPrivateUsage]


os.register_at_fork(after_in_child=_forget_in_child)


@atexit.register
def _give_back_at_exit() -> None:
    for book in list(_books):
        if not book.closed:
            try:
                book.close()
            except Exception:
                _logger.exception("costspan: could not give quota leases back at exit")
