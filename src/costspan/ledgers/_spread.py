"""The spread layout (``?layout=spread``): every scope in a hash slot of its own, so that a
Redis Cluster's shards share the ledger's load, and quota leases for the hot global scope.

In the default layout every key carries the ``{ledger}`` hash tag: one script checks and writes
all of a call's scopes at once, on the one shard that owns that slot. That shard then serves
the whole fleet. Here each scope's keys carry a tag of their own (a short hash of the scope),
and a call is admitted scope by scope:

- **reserve**: one reserve script per scope, in the order given, each on its scope's slot and
  idempotent by reservation id (every scope keeps its own record of the reservation). When a
  scope refuses, the holds already taken are undone (``lua/undo.lua``) and the call is refused.
  Between the hold and the undo, another call may be refused by a hold that is about to go: a
  spurious refusal, never an overspend, because every scope only ever holds what fits its cap.
- **commit / release**: one settle script per scope; each scope's record makes a retried or
  replayed settle a duplicate, so a commit cut off half way is completed by its replay (the
  outbox) without charging the scopes that already had it.
- **leased scopes** (by default the ``*`` rules with hour, day and month windows, which every
  call passes): admitted against this process's slice of the cap, without a round trip
  (``_leases``).

A call costs one script per unleased scope to reserve and one per scope to settle, each on the
shard of that scope; the global scope costs a lease script a few times a second per process.
Scopes that were in one slot's keys are not in these (and the other way round): switching a
running fleet's layout starts its counters afresh.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import deque
from collections.abc import Sequence
from typing import Final

from costspan.ledgers._leases import (
    FLUSH_S,
    SLICE_CALLS,
    SLICE_LEASE_S,
    LeaseBook,
    Settled,
    Taken,
)
from costspan.ledgers._protocol import (
    CommitCode,
    LedgerUnavailable,
    Reservation,
    ScopeLimit,
    ScopeState,
    check_amounts,
    refusal,
)
from costspan.ledgers._redis import (
    CHECK_SCOPE,
    SWEEP_LIMIT,
    RedisLedger,
    reservation_from,
    specs,
    state_from,
)
from costspan.ledgers._redis_errors import redacted

_logger = logging.getLogger(__name__)

LEASED: Final = ("limit:*:h", "limit:*:d", "limit:*:m")
"""Scopes admitted against quota leases by default: the ``*`` rules' hourly, daily and monthly
windows (a ``*`` per-request rule has one scope per trace: nothing to share, so not leased)."""
_SWEEP: Final = str(SWEEP_LIMIT)
_UNDO_LATER: Final = 10_000  # holds to undo once the store answers again (their leases also end)


def scope_keys(prefix: str, rid: str, key: str) -> list[str]:
    """A scope's record (for ``rid``), counter and lease set: their hash tag is a short hash of
    the scope, so each scope has a slot of its own and scopes spread over a cluster's shards."""
    tag = hashlib.blake2b(key.encode(), digest_size=6).hexdigest()
    base = f"{prefix}:{{{tag}}}"
    return [f"{base}:r:{rid}", f"{base}:c:{key}", f"{base}:l:{key}"]


def combine(codes: Sequence[CommitCode]) -> CommitCode:
    """One code for a settle made of one settle per scope."""
    if all(code is CommitCode.DUPLICATE for code in codes):
        return CommitCode.DUPLICATE
    if CommitCode.LATE in codes:
        return CommitCode.LATE
    if all(code in (CommitCode.POST_HOC, CommitCode.DUPLICATE) for code in codes):
        return CommitCode.POST_HOC
    return CommitCode.COMMITTED


class SpreadLedger:
    """The Redis ledger with one slot per scope and quota leases (see the module doc).

    Args:
        engine: the connection (a ``RedisClusterLedger``, or a ``RedisLedger`` for one server)
            whose scripts, prefix and timeouts it uses.
        leased: key prefixes of the scopes admitted against quota leases (empty: none).
        slice_calls: a slice holds room for about this many calls like the largest recent one.
        lease_s: how long a slice lives on the server without being renewed.
        flush_s: how often spend inside slices is written (and slices renewed).
    """

    def __init__(
        self,
        engine: RedisLedger,
        *,
        leased: Sequence[str] = LEASED,
        slice_calls: int = SLICE_CALLS,
        lease_s: float = SLICE_LEASE_S,
        flush_s: float = FLUSH_S,
    ) -> None:
        if "{" in engine.prefix or "}" in engine.prefix:
            raise ValueError("the key prefix must not contain { or } (hash tags are the ledger's)")
        self.engine = engine
        self.url = engine.url
        self.leases = LeaseBook(
            engine.run_script,
            self.keys,
            leased,
            record_ms=engine.record_ms,
            idle_ms=engine.idle_ms,
            slice_calls=slice_calls,
            lease_s=lease_s,
            flush_s=flush_s,
        )
        self._undo_later: deque[tuple[str, str]] = deque(maxlen=_UNDO_LATER)

    def __repr__(self) -> str:
        return f"SpreadLedger({redacted(self.url)!r})"

    def keys(self, rid: str, key: str) -> list[str]:
        """A scope's record (for ``rid``), counter and lease set, in the scope's own slot."""
        return scope_keys(self.engine.prefix, rid, key)

    # -- reserve -----------------------------------------------------------------------------
    def _reserve_one(
        self, rid: str, limit: ScopeLimit, usd: int, tokens: int, lease_s: float
    ) -> tuple[list[str], list[str]]:
        args = self.engine.reserve_args(rid, [limit], usd, tokens, lease_s)
        return self.keys(rid, limit.key), [*args, _SWEEP, specs([limit])]

    def reserve(
        self,
        rid: str,
        scopes: Sequence[ScopeLimit],
        usd_micros: int,
        tokens: int,
        lease_s: float,
    ) -> Reservation:
        check_amounts(usd_micros, tokens)
        self._retry_undos()
        states: dict[str, ScopeState] = {}
        taken: list[str] = []
        held: list[str] = []
        duplicates = 0
        try:
            for limit in scopes:
                if self.leases.covers(limit.key):
                    ask = (rid, limit, usd_micros, tokens, lease_s)
                    granted, duplicate, state = self.leases.take(*ask)
                    if granted:
                        taken.append(limit.key)
                else:
                    keys, args = self._reserve_one(rid, limit, usd_micros, tokens, lease_s)
                    reply = self.engine.run_script("reserve", keys, args)
                    granted, duplicate, state = _one(limit, usd_micros, tokens, reply)
                    if granted:
                        held.append(limit.key)
                states[limit.key] = state
                duplicates += duplicate
                if not granted:
                    self._undo(rid, taken, held)
                    return refusal(state, list(states.values()))
        except LedgerUnavailable:
            self._undo(rid, taken, held)
            raise
        return _granted(scopes, states, duplicates)

    async def areserve(
        self,
        rid: str,
        scopes: Sequence[ScopeLimit],
        usd_micros: int,
        tokens: int,
        lease_s: float,
    ) -> Reservation:
        check_amounts(usd_micros, tokens)
        if self._undo_later:
            await asyncio.to_thread(self._retry_undos)
        states: dict[str, ScopeState] = {}
        taken: list[str] = []
        held: list[str] = []
        duplicates = 0
        try:
            for limit in scopes:
                if self.leases.covers(limit.key):
                    ask = (rid, limit, usd_micros, tokens, lease_s)
                    answer: Taken | None = self.leases.take_now(*ask)
                    if answer is None:  # a round trip or a wait: not on the event loop
                        answer = await asyncio.to_thread(self.leases.take, *ask)
                    granted, duplicate, state = answer
                    if granted:
                        taken.append(limit.key)
                else:
                    keys, args = self._reserve_one(rid, limit, usd_micros, tokens, lease_s)
                    reply = await self.engine.arun_script("reserve", keys, args)
                    granted, duplicate, state = _one(limit, usd_micros, tokens, reply)
                    if granted:
                        held.append(limit.key)
                states[limit.key] = state
                duplicates += duplicate
                if not granted:
                    await self._aundo(rid, taken, held)
                    return refusal(state, list(states.values()))
        except LedgerUnavailable:
            await self._aundo(rid, taken, held)
            raise
        return _granted(scopes, states, duplicates)

    def _undo(self, rid: str, taken: Sequence[str], held: Sequence[str]) -> None:
        for key in taken:
            self.leases.give_back(rid, key)
        for key in held:
            try:
                self.engine.run_script("undo", self.keys(rid, key), [rid])
            except LedgerUnavailable:
                # Its lease frees it anyway; until then it only refuses calls, spuriously.
                self._undo_later.append((rid, key))

    async def _aundo(self, rid: str, taken: Sequence[str], held: Sequence[str]) -> None:
        for key in taken:
            self.leases.give_back(rid, key)
        for key in held:
            try:
                await self.engine.arun_script("undo", self.keys(rid, key), [rid])
            except LedgerUnavailable:
                self._undo_later.append((rid, key))

    def _retry_undos(self) -> None:
        for _ in range(len(self._undo_later)):
            try:
                rid, key = self._undo_later.popleft()
            except IndexError:
                return
            try:
                self.engine.run_script("undo", self.keys(rid, key), [rid])
            except LedgerUnavailable:
                self._undo_later.appendleft((rid, key))
                return

    # -- commit and release ------------------------------------------------------------------
    def _settle_one(
        self, rid: str, limit: ScopeLimit, usd: int, tokens: int, final: str
    ) -> tuple[list[str], list[str]]:
        return self.keys(rid, limit.key), self.engine.settle_args(rid, usd, tokens, [limit], final)

    @staticmethod
    def _leased_code(outcome: Settled | None, remote: Sequence[CommitCode]) -> CommitCode | None:
        """The code of a leased scope's settle, or None when the store must settle it."""
        if outcome is Settled.LOCAL:
            return CommitCode.COMMITTED
        if outcome is Settled.LATE:
            return CommitCode.LATE
        if outcome is Settled.DUPLICATE:
            return CommitCode.DUPLICATE
        if remote and all(code is CommitCode.DUPLICATE for code in remote):
            # Every other scope has settled this reservation before: so had this one (in the
            # process that admitted it; if that process died unflushed, the spend is lost there).
            return CommitCode.DUPLICATE
        return None

    def _settle(
        self, rid: str, usd: int, tokens: int, scopes: Sequence[ScopeLimit], final: str
    ) -> CommitCode:
        check_amounts(usd, tokens)
        if not scopes:
            raise ValueError("the Redis ledger settles a reservation with its scopes")
        leased = [s for s in scopes if self.leases.covers(s.key)]
        codes: list[CommitCode] = []
        for limit in scopes:
            if limit not in leased:
                keys, args = self._settle_one(rid, limit, usd, tokens, final)
                codes.append(CommitCode(int(self.engine.run_script("settle", keys, args))))
        remote = list(codes)
        for limit in leased:
            outcome = self.leases.settle(rid, limit.key, usd, tokens, release=final == "R")
            code = self._leased_code(outcome, remote)
            if code is None:  # a post-hoc charge or a replay from elsewhere: on its own record
                keys, args = self._settle_one(rid, limit, usd, tokens, final)
                code = CommitCode(int(self.engine.run_script("settle", keys, args)))
            codes.append(code)
        return combine(codes)

    async def _asettle(
        self, rid: str, usd: int, tokens: int, scopes: Sequence[ScopeLimit], final: str
    ) -> CommitCode:
        check_amounts(usd, tokens)
        if not scopes:
            raise ValueError("the Redis ledger settles a reservation with its scopes")
        leased = [s for s in scopes if self.leases.covers(s.key)]
        codes: list[CommitCode] = []
        for limit in scopes:
            if limit not in leased:
                keys, args = self._settle_one(rid, limit, usd, tokens, final)
                codes.append(CommitCode(int(await self.engine.arun_script("settle", keys, args))))
        remote = list(codes)
        for limit in leased:
            release = final == "R"
            outcome = self.leases.settle(rid, limit.key, usd, tokens, release=release, wait=False)
            if outcome is None:  # the slice is flushing: wait for it off the event loop
                outcome = await asyncio.to_thread(
                    self.leases.settle, rid, limit.key, usd, tokens, release=release
                )
            code = self._leased_code(outcome, remote)
            if code is None:
                keys, args = self._settle_one(rid, limit, usd, tokens, final)
                code = CommitCode(int(await self.engine.arun_script("settle", keys, args)))
            codes.append(code)
        return combine(codes)

    def commit(
        self, rid: str, usd_micros: int, tokens: int, scopes: Sequence[ScopeLimit] = ()
    ) -> CommitCode:
        return self._settle(rid, usd_micros, tokens, scopes, "C")

    def release(self, rid: str, scopes: Sequence[ScopeLimit] = ()) -> CommitCode:
        return self._settle(rid, 0, 0, scopes, "R")

    async def acommit(
        self, rid: str, usd_micros: int, tokens: int, scopes: Sequence[ScopeLimit] = ()
    ) -> CommitCode:
        return await self._asettle(rid, usd_micros, tokens, scopes, "C")

    async def arelease(self, rid: str, scopes: Sequence[ScopeLimit] = ()) -> CommitCode:
        return await self._asettle(rid, 0, 0, scopes, "R")

    # -- reads and housekeeping --------------------------------------------------------------
    def extend(self, rid: str, scopes: Sequence[ScopeLimit], lease_s: float) -> bool:
        """Renew a call's holds scope by scope (each in its own slot); a slice's hold in this
        process's own book."""
        alive = False
        for limit in scopes:
            if self.leases.covers(limit.key):
                alive = self.leases.extend(rid, limit.key, lease_s) or alive
            else:
                args = [rid, str(int(lease_s * 1000)), self.engine.record_ms]
                keys = self.keys(rid, limit.key)
                alive = int(self.engine.run_script("extend", keys, args)) == 1 or alive
        return alive

    def snapshot(self, scope: str) -> ScopeState:
        """A scope's counters; a leased scope's include this process's unflushed spend (other
        processes' arrive within ``flush_s``; their unused slices count as held)."""
        words = self.engine.run_script("snapshot", self.keys("", scope)[1:], [_SWEEP]).split()
        state = state_from(scope, words)
        return self.leases.view(scope, state) if self.leases.covers(scope) else state

    def flush_leases(self) -> None:
        """Write the spend inside this process's slices now and give every unused slice back
        (the keeper thread does both within ``flush_s``; tests and shutdowns do not wait)."""
        self.leases.tick(give_back_all=True)

    def ping(self) -> None:
        """The engine's ping, plus a script on a scope slot of this layout."""
        self.engine.ping()
        self.snapshot(CHECK_SCOPE)

    def check(self) -> list[str]:
        """The engine's check, plus a script on a scope slot of this layout."""
        warnings = self.engine.check()
        self.snapshot(CHECK_SCOPE)
        return warnings

    def close(self) -> None:
        try:
            self.leases.close()
        finally:
            self.engine.close()


def _one(limit: ScopeLimit, usd: int, tokens: int, reply: bytes) -> Taken:
    result = reservation_from([limit], usd, tokens, reply)
    return result.granted, result.duplicate, result.states[0]


def _granted(
    scopes: Sequence[ScopeLimit], states: dict[str, ScopeState], duplicates: int
) -> Reservation:
    ordered = tuple(states[s.key] for s in scopes)
    duplicate = bool(scopes) and duplicates == len(scopes)
    return Reservation(granted=True, duplicate=duplicate, states=ordered)
