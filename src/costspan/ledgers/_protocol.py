"""The ledger protocol: reserve, then commit or release; idempotent by reservation id.

Amounts are integers: micro-USD (µ$) and tokens. Floats never touch a ledger.

- ``reserve(rid, scopes, usd_micros, tokens, lease_s)`` holds the amounts in *every* scope or in
  none: every cap is checked before anything is written. A retried reserve with the same ``rid``
  is a duplicate and holds nothing more. A hold expires after its lease unless committed, so a
  crashed process cannot pin a budget forever. The answer carries every scope's counters (after
  the grant, or as they were when refused), so callers never need a second round trip.
- ``commit(rid, usd_micros, tokens, scopes)`` turns the hold into spend (the actual amounts,
  which may be larger or smaller than the hold) and returns a :class:`CommitCode`. A second
  commit of the same ``rid`` is a no-op. A commit whose hold was swept (late) is still charged,
  once. When no reservation exists, ``scopes`` are charged (a post-hoc charge, e.g. a replayed
  commit after an outage) and the id is remembered.
- ``release(rid, scopes)`` is a commit of nothing (the request was never sent or never billed).
- ``extend(rid, scopes, lease_s)`` gives a live hold a new lease of ``lease_s`` from now (a call
  still in flight: a stream read slowly, a long reasoning call); False when the hold is gone
  (settled, or already swept).
- ``snapshot(scope)`` reads a scope's counters.

Every operation has an ``async`` twin (``areserve``...) that never blocks the event loop.

A sticky scope's cap is the *smallest* cap any reservation ever gave it: a later caller can
tighten it, never loosen it. That is what keeps untrusted inbound baggage from raising a budget.
Configured limits are not sticky (their caps come from trusted configuration, which may change).

Engines raise :class:`LedgerUnavailable` when they cannot reach their store; anything else is a
bug or bad input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Final, Literal, NamedTuple, Protocol, runtime_checkable

from costspan._money import MAX_MICROS, MAX_TOKENS

FailMode = Literal["closed", "open", "local"]
"""What a budget check does while a shared ledger is unreachable (see ``_failsafe``)."""
FAIL_MODES: Final = ("closed", "open", "local")


class LedgerUnavailable(Exception):
    """The ledger's store cannot be reached (connection refused, timeout, locked database)."""


@dataclass(frozen=True, slots=True)
class ScopeLimit:
    """A scope a reservation must fit: its key and its caps (None: no cap on that dimension).

    ``expires_at`` (UTC epoch seconds) is when the scope's counters may be forgotten: the end of
    its window plus a grace period. None keeps an idle scope for the engine's idle time.
    """

    key: str
    cap_micros: int | None = None
    cap_tokens: int | None = None
    expires_at: float | None = None
    sticky: bool = True


class ScopeState(NamedTuple):
    """A scope's counters at one moment (a named tuple: built on every call, so cheap)."""

    key: str
    spent_micros: int = 0
    held_micros: int = 0
    spent_tokens: int = 0
    held_tokens: int = 0
    calls: int = 0
    cap_micros: int | None = None
    cap_tokens: int | None = None

    @property
    def room_micros(self) -> int | None:
        """What a new reservation may still hold in USD, or None without a USD cap."""
        if self.cap_micros is None:
            return None
        return max(self.cap_micros - self.spent_micros - self.held_micros, 0)

    @property
    def room_tokens(self) -> int | None:
        if self.cap_tokens is None:
            return None
        return max(self.cap_tokens - self.spent_tokens - self.held_tokens, 0)


class Reservation(NamedTuple):
    """The answer to a reserve: granted (or a duplicate of a grant), or the scope that refused.

    ``states`` holds each scope's counters in the order the scopes were given: after the hold
    when granted, as they stood when refused or when the reserve was a duplicate.
    """

    granted: bool
    duplicate: bool = False
    failed_scope: str | None = None
    room_micros: int | None = None
    room_tokens: int | None = None
    states: tuple[ScopeState, ...] = ()
    degraded: str | None = None
    """Decided without the shared ledger, which was unreachable: the fail mode that decided
    (``"open"``: granted unmetered; ``"local"``: by this process's own counters)."""


class CommitCode(IntEnum):
    """What a commit or release did."""

    COMMITTED = 1
    DUPLICATE = 2  # already committed or released: nothing changed
    POST_HOC = 3  # no reservation existed: charged now, remembered so a retry is a duplicate
    LATE = 4  # the hold had expired and was swept: charged once anyway
    QUEUED = 5  # the ledger was unreachable: kept in the outbox, replayed once it is back


def refusal(failed: ScopeState, states: Sequence[ScopeState]) -> Reservation:
    """The Reservation that reports ``failed`` as the scope without room."""
    return Reservation(
        granted=False,
        failed_scope=failed.key,
        room_micros=failed.room_micros,
        room_tokens=failed.room_tokens,
        states=tuple(states),
    )


def fits(state: ScopeState, usd_micros: int, tokens: int) -> bool:
    """Whether a hold of these amounts fits the scope's room on both dimensions."""
    room_usd, room_tokens = state.room_micros, state.room_tokens
    return (room_usd is None or usd_micros <= room_usd) and (
        room_tokens is None or tokens <= room_tokens
    )


def check_amounts(usd_micros: int, tokens: int) -> None:
    """Amounts are never negative: a negative charge would be a way to reset spend."""
    if usd_micros < 0 or tokens < 0:
        raise ValueError("ledger amounts must be >= 0")
    if usd_micros > MAX_MICROS or tokens > MAX_TOKENS:
        raise ValueError("ledger amounts must be at most 10**15 (µ$ or tokens)")


@runtime_checkable
class Ledger(Protocol):
    """What every ledger engine provides (see the module docstring for the semantics)."""

    def reserve(
        self,
        rid: str,
        scopes: Sequence[ScopeLimit],
        usd_micros: int,
        tokens: int,
        lease_s: float,
    ) -> Reservation: ...

    def commit(
        self,
        rid: str,
        usd_micros: int,
        tokens: int,
        scopes: Sequence[ScopeLimit] = (),
    ) -> CommitCode: ...

    def release(self, rid: str, scopes: Sequence[ScopeLimit] = ()) -> CommitCode: ...

    def extend(self, rid: str, scopes: Sequence[ScopeLimit], lease_s: float) -> bool: ...

    def snapshot(self, scope: str) -> ScopeState: ...

    async def areserve(
        self,
        rid: str,
        scopes: Sequence[ScopeLimit],
        usd_micros: int,
        tokens: int,
        lease_s: float,
    ) -> Reservation: ...

    async def acommit(
        self,
        rid: str,
        usd_micros: int,
        tokens: int,
        scopes: Sequence[ScopeLimit] = (),
    ) -> CommitCode: ...

    async def arelease(self, rid: str, scopes: Sequence[ScopeLimit] = ()) -> CommitCode: ...

    def close(self) -> None: ...


class InlineAsync:
    """Async twins for an engine whose operations never wait on I/O (they run inline)."""

    def reserve(
        self,
        rid: str,
        scopes: Sequence[ScopeLimit],
        usd_micros: int,
        tokens: int,
        lease_s: float,
    ) -> Reservation:
        raise NotImplementedError

    def commit(
        self, rid: str, usd_micros: int, tokens: int, scopes: Sequence[ScopeLimit] = ()
    ) -> CommitCode:
        raise NotImplementedError

    def release(self, rid: str, scopes: Sequence[ScopeLimit] = ()) -> CommitCode:
        raise NotImplementedError

    def extend(self, rid: str, scopes: Sequence[ScopeLimit], lease_s: float) -> bool:
        raise NotImplementedError

    async def areserve(
        self,
        rid: str,
        scopes: Sequence[ScopeLimit],
        usd_micros: int,
        tokens: int,
        lease_s: float,
    ) -> Reservation:
        return self.reserve(rid, scopes, usd_micros, tokens, lease_s)

    async def acommit(
        self, rid: str, usd_micros: int, tokens: int, scopes: Sequence[ScopeLimit] = ()
    ) -> CommitCode:
        return self.commit(rid, usd_micros, tokens, scopes)

    async def arelease(self, rid: str, scopes: Sequence[ScopeLimit] = ()) -> CommitCode:
        return self.release(rid, scopes)

    def close(self) -> None:
        """Nothing to close."""
