"""Holds live as long as their calls: one background renewal for every call in flight.

A hold's lease (``COSTSPAN_LEASE_SECONDS``) is what frees a budget when the process holding it
dies. A call that is still running - a stream read slowly, a long reasoning call - must not lose
its hold to that lease, or a second call could be admitted into room the first is about to use.
The :class:`Renewer` keeps every live hold of the process in one table and, from one daemon
thread, extends them all every third of a lease; a call leaves the table when it settles. A
crashed process renews nothing, so its holds still expire within one lease.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from costspan.ledgers._protocol import Ledger, ScopeLimit

_logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Live:
    ledger: Ledger
    scopes: tuple[ScopeLimit, ...]
    lease_s: float


class Renewer:
    """The process's live holds and the one thread that renews them."""

    def __init__(self) -> None:
        self._live: dict[str, _Live] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, rid: str, ledger: Ledger, scopes: Sequence[ScopeLimit], lease_s: float) -> None:
        """Keep ``rid``'s holds alive until :meth:`forget`."""
        with self._lock:
            self._live[rid] = _Live(ledger, tuple(scopes), lease_s)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="costspan-lease-renewer", daemon=True
                )
                self._thread.start()

    def forget(self, rid: str) -> None:
        with self._lock:
            self._live.pop(rid, None)

    def __len__(self) -> int:
        return len(self._live)

    def _run(self) -> None:
        while True:
            with self._lock:
                live = dict(self._live)
                if not live:
                    self._thread = None
                    return
            interval = max(min(entry.lease_s for entry in live.values()) / 3, 0.05)
            self._wake.wait(interval)
            self.renew_now()

    def renew_now(self) -> None:
        """Extend every live hold once (the thread does this every third of a lease)."""
        with self._lock:
            live = list(self._live.items())
        for rid, entry in live:
            with self._lock:
                if rid not in self._live:
                    continue  # settled meanwhile
            try:
                entry.ledger.extend(rid, entry.scopes, entry.lease_s)
            except Exception:
                _logger.exception("costspan could not renew a budget hold")
