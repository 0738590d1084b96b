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
import os
import threading
import weakref
from collections.abc import Sequence
from typing import Final, NamedTuple

from costspan.ledgers._protocol import Ledger, ScopeLimit

_logger = logging.getLogger(__name__)


class _Live(NamedTuple):
    ledger: Ledger
    scopes: tuple[ScopeLimit, ...]
    lease_s: float


IDLE_S: Final = 60.0
"""How long the thread waits with nothing to renew before it stops. Calls come and go: a thread
that stopped whenever the table emptied would be started again for the next call, and starting
a thread costs a call more than all the rest of its budget check."""


class Renewer:
    """The process's live holds and the one thread that renews them."""

    def __init__(self) -> None:
        self._live: dict[str, _Live] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._idle = False
        _renewers.add(self)

    def watch(self, rid: str, ledger: Ledger, scopes: Sequence[ScopeLimit], lease_s: float) -> None:
        """Keep ``rid``'s holds alive until :meth:`forget`."""
        live = _Live(ledger, tuple(scopes), lease_s)
        with self._lock:
            self._live[rid] = live
            # The thread clears this when it stops (and a forked child starts without it), so
            # there is no need to ask the thread whether it lives on every call.
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="costspan-lease-renewer", daemon=True
                )
                self._thread.start()
            elif self._idle:  # waiting with nothing to renew: it must time this hold now
                self._idle = False
                self._wake.set()

    def forget(self, rid: str) -> None:
        # One dict operation (atomic): the thread reads the table under the lock.
        self._live.pop(rid, None)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = None  # not copied into the child: the next watch() starts one
        self._idle = False

    def __len__(self) -> int:
        return len(self._live)

    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    self._wake.clear()
                    live = dict(self._live)
                    if not live:
                        if self._idle:  # a whole IDLE_S with nothing to renew: stop
                            self._idle = False
                            self._thread = None
                            return
                        self._idle = True
                if not live:
                    self._wake.wait(IDLE_S)
                    continue
                interval = max(min(entry.lease_s for entry in live.values()) / 3, 0.05)
                self._wake.wait(interval)
                self.renew_now()
        finally:
            with self._lock:
                if self._thread is threading.current_thread():
                    self._thread = None  # it stopped unexpectedly: the next watch() restarts it
                    self._idle = False

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


_renewers: weakref.WeakSet[Renewer] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for renewer in list(_renewers):
        renewer._after_fork()  # pyright: ignore[reportPrivateUsage]


os.register_at_fork(after_in_child=_after_fork_in_child)
