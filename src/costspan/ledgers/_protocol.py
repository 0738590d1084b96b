"""The ledger protocol: reserve, then commit or release; idempotent by reservation id.

Amounts are integers: micro-USD (µ$) and tokens. Floats never touch a ledger.

- ``reserve(rid, scopes, usd_micros, tokens, lease_s)`` holds the amounts in *every* scope or in
  none: every cap is checked before anything is written. A retried reserve with the same ``rid``
  is a duplicate and holds nothing more. A hold expires after its lease unless committed, so a
  crashed process cannot pin a budget forever.
- ``commit(rid, usd_micros, tokens)`` turns the hold into spend (the actual amounts, which may
  be larger or smaller than the hold) and returns a :class:`CommitCode`. A second commit of the
  same ``rid`` is a no-op. A commit whose hold was swept (late) is still charged, once.
  ``scopes`` charges a call that never held (a post-hoc charge).
- ``release(rid)`` is a commit of nothing (the request was never sent or never billed).
- ``snapshot(scope)`` reads a scope's counters.

A scope's cap is the *smallest* cap any reservation ever gave it: a later caller can tighten a
scope, never loosen it. That is what keeps untrusted inbound baggage from raising a budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class ScopeLimit:
    """A scope a reservation must fit: its key and its caps (None: no cap on that dimension)."""

    key: str
    cap_micros: int | None = None
    cap_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class ScopeState:
    """A scope's counters at one moment."""

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


@dataclass(frozen=True, slots=True)
class Reservation:
    """The answer to a reserve: granted (or a duplicate of a grant), or the scope that refused."""

    granted: bool
    duplicate: bool = False
    failed_scope: str | None = None
    room_micros: int | None = None
    room_tokens: int | None = None


class CommitCode(IntEnum):
    """What a commit or release did."""

    COMMITTED = 1
    DUPLICATE = 2  # already committed or released: nothing changed
    POST_HOC = 3  # no reservation existed: charged now, remembered so a retry is a duplicate
    LATE = 4  # the hold had expired and was swept: charged once anyway


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

    def release(self, rid: str) -> CommitCode: ...

    def snapshot(self, scope: str) -> ScopeState: ...
