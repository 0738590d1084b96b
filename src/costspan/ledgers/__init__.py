"""Ledgers: where budget scopes keep their spend, held in reservations and settled by commits.

One protocol (:class:`Ledger`), three engines: :class:`MemoryLedger` keeps one process's
counters; :class:`SQLiteLedger` shares them between the processes of one host and
:class:`RedisLedger` between hosts. Shared engines run behind :class:`FailSafeLedger`, which
decides what happens while their store is unreachable.
"""

import typing as _typing

from costspan.ledgers._memory import MemoryLedger
from costspan.ledgers._protocol import (
    CommitCode,
    Ledger,
    LedgerUnavailable,
    Reservation,
    ScopeLimit,
    ScopeState,
)

if _typing.TYPE_CHECKING:
    from costspan.ledgers._failsafe import FailSafeLedger
    from costspan.ledgers._redis import RedisLedger
    from costspan.ledgers._sqlite import SQLiteLedger

# The shared engines are imported on first use (asyncio, sqlite3, importlib.resources...), so
# that importing costspan does not pay for engines a process may never open.
_LAZY = {
    "FailSafeLedger": "costspan.ledgers._failsafe",
    "RedisLedger": "costspan.ledgers._redis",
    "SQLiteLedger": "costspan.ledgers._sqlite",
}


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


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
