"""Ledgers: where budget scopes keep their spend, held in reservations and settled by commits.

One protocol (:class:`Ledger`), three engines: :class:`MemoryLedger` keeps one process's
counters; :class:`SQLiteLedger` shares them between the processes of one host and
:class:`RedisLedger` between hosts. Shared engines run behind :class:`FailSafeLedger`, which
decides what happens while their store is unreachable.
"""

from costspan.ledgers._failsafe import FailSafeLedger
from costspan.ledgers._memory import MemoryLedger
from costspan.ledgers._protocol import (
    CommitCode,
    Ledger,
    LedgerUnavailable,
    Reservation,
    ScopeLimit,
    ScopeState,
)
from costspan.ledgers._redis import RedisLedger  # imports redis-py only when one is made
from costspan.ledgers._sqlite import SQLiteLedger

__all__ = [
    "CommitCode",
    "FailSafeLedger",
    "Ledger",
    "LedgerUnavailable",
    "MemoryLedger",
    "RedisLedger",
    "Reservation",
    "SQLiteLedger",
    "ScopeLimit",
    "ScopeState",
]
