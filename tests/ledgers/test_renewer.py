"""The lease renewer: one thread for the process, kept while calls come and go, renewing every
live hold in time - also one watched while the thread had nothing to do."""

from __future__ import annotations

import threading
import time

import pytest

from costspan.ledgers import MemoryLedger, ScopeLimit, _renewer
from costspan.ledgers._renewer import Renewer

SCOPE = [ScopeLimit("budget:renewer", cap_micros=10**9)]


def _threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "costspan-lease-renewer"]


def test_calls_one_after_another_keep_one_thread() -> None:
    """Holds watched and settled one by one, with the thread given time to look at an empty
    table in between, are renewed by the thread started for the first: none is started again."""
    renewer, ledger = Renewer(), MemoryLedger()
    before = set(_threads())
    started: set[threading.Thread] = set()
    for i in range(20):
        renewer.watch(f"r{i}", ledger, SCOPE, 300.0)
        thread = renewer._thread
        assert thread is not None
        started.add(thread)
        renewer.forget(f"r{i}")
        time.sleep(0.01)
    assert len(started) == 1
    assert len(set(_threads()) - before) == 1


def test_the_thread_stops_when_nothing_is_left_to_renew(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a while with nothing to renew the thread ends (a process that stops calling keeps
    no thread); the next hold starts one again."""
    monkeypatch.setattr(_renewer, "IDLE_S", 0.1)
    renewer, ledger = Renewer(), MemoryLedger()
    renewer.watch("a", ledger, SCOPE, 300.0)
    first = renewer._thread
    assert first is not None
    renewer.forget("a")
    first.join(5)
    assert not first.is_alive()
    assert renewer._thread is None
    renewer.watch("b", ledger, SCOPE, 300.0)
    second = renewer._thread
    assert second is not None
    assert second is not first
    assert second.is_alive()
    renewer.forget("b")


def test_a_hold_watched_while_the_thread_idles_is_renewed_in_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The idle thread waits long, but a new hold wakes it: a hold with a 0.4 s lease, watched
    while the thread waited with nothing to do, is still held a second later."""
    monkeypatch.setattr(_renewer, "IDLE_S", 30.0)
    renewer, ledger = Renewer(), MemoryLedger()
    renewer.watch("first", ledger, SCOPE, 300.0)
    renewer.forget("first")
    time.sleep(0.2)  # the thread finds the table empty and waits
    assert ledger.reserve("held", SCOPE, 1_000, 10, 0.4).granted
    renewer.watch("held", ledger, SCOPE, 0.4)
    time.sleep(1.2)
    assert ledger.snapshot("budget:renewer").held_micros == 1_000
    renewer.forget("held")
    ledger.release("held")
    assert ledger.snapshot("budget:renewer").held_micros == 0
