"""Ledgers: where budget scopes keep their spend, held in reservations and settled by commits.

One protocol (:class:`Ledger`), several engines. The in-memory engine keeps one process's
counters; shared engines let several processes and hosts hold one cap between them.
"""

from costspan.ledgers._memory import MemoryLedger
from costspan.ledgers._protocol import (
    CommitCode,
    Ledger,
    Reservation,
    ScopeLimit,
    ScopeState,
)

__all__ = ["CommitCode", "Ledger", "MemoryLedger", "Reservation", "ScopeLimit", "ScopeState"]
