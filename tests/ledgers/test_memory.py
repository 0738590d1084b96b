"""The ledger protocol on the in-memory engine: all-or-nothing, idempotent, leases, bounds."""

from __future__ import annotations

import threading

import pytest

from costspan.ledgers import CommitCode, Ledger, MemoryLedger, ScopeLimit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(name="clock")
def _clock() -> Clock:
    return Clock()


@pytest.fixture(name="ledger")
def _ledger(clock: Clock) -> MemoryLedger:
    return MemoryLedger(clock=clock)


def test_is_a_ledger(ledger: MemoryLedger) -> None:
    """The engine satisfies the runtime-checkable protocol."""
    assert isinstance(ledger, Ledger)


def test_reserve_is_all_or_nothing(ledger: MemoryLedger) -> None:
    """A reservation that fails one scope writes nothing to the others."""
    user = ScopeLimit("user", cap_micros=1000)
    team = ScopeLimit("team", cap_micros=100)
    result = ledger.reserve("r1", [user, team], 500, 10, 60)
    assert not result.granted
    assert result.failed_scope == "team"
    assert result.room_micros == 100
    assert ledger.snapshot("user").held_micros == 0


def test_exact_fit_is_granted(ledger: MemoryLedger) -> None:
    """A hold equal to the room fits; one micro-dollar more does not."""
    scope = ScopeLimit("s", cap_micros=1000)
    assert ledger.reserve("a", [scope], 1000, 0, 60).granted
    assert not ledger.reserve("b", [scope], 1, 0, 60).granted


def test_token_dimension(ledger: MemoryLedger) -> None:
    """Token caps are checked like USD caps."""
    scope = ScopeLimit("s", cap_tokens=100)
    assert ledger.reserve("a", [scope], 0, 60, 60).granted
    refused = ledger.reserve("b", [scope], 0, 41, 60)
    assert not refused.granted
    assert refused.room_tokens == 40


def test_commit_moves_hold_to_spend_once(ledger: MemoryLedger) -> None:
    """Commit charges the actual amount; a duplicate commit changes nothing."""
    scope = ScopeLimit("s", cap_micros=1000)
    ledger.reserve("r", [scope], 800, 50, 60)
    assert ledger.commit("r", 300, 20) is CommitCode.COMMITTED
    assert ledger.commit("r", 300, 20) is CommitCode.DUPLICATE
    state = ledger.snapshot("s")
    assert (state.spent_micros, state.held_micros, state.spent_tokens, state.calls) == (
        300,
        0,
        20,
        1,
    )


def test_retried_reserve_is_a_duplicate(ledger: MemoryLedger) -> None:
    """A client retrying a reserve with the same id holds once."""
    scope = ScopeLimit("s", cap_micros=1000)
    assert ledger.reserve("r", [scope], 400, 0, 60).granted
    second = ledger.reserve("r", [scope], 400, 0, 60)
    assert second.duplicate
    assert ledger.snapshot("s").held_micros == 400


def test_release_frees_the_hold(ledger: MemoryLedger) -> None:
    """A released reservation charges nothing and counts no call."""
    scope = ScopeLimit("s", cap_micros=1000)
    ledger.reserve("r", [scope], 900, 0, 60)
    assert ledger.release("r") is CommitCode.COMMITTED
    state = ledger.snapshot("s")
    assert (state.spent_micros, state.held_micros, state.calls) == (0, 0, 0)


def test_expired_lease_frees_room_and_late_commit_charges_once(
    ledger: MemoryLedger, clock: Clock
) -> None:
    """A crashed holder's reservation expires; its late commit is still charged, once."""
    scope = ScopeLimit("s", cap_micros=1000)
    ledger.reserve("dead", [scope], 900, 0, 5)
    assert not ledger.reserve("x", [scope], 500, 0, 5).granted
    clock.now += 6
    assert ledger.reserve("y", [scope], 500, 0, 5).granted
    assert ledger.commit("dead", 300, 0) is CommitCode.LATE
    assert ledger.commit("dead", 300, 0) is CommitCode.DUPLICATE
    assert ledger.snapshot("s").spent_micros == 300


def test_post_hoc_commit(ledger: MemoryLedger) -> None:
    """A commit without a reservation charges the given scopes and remembers the id."""
    scope = ScopeLimit("s", cap_micros=10)
    assert ledger.commit("p", 50, 5, [scope]) is CommitCode.POST_HOC
    assert ledger.commit("p", 50, 5, [scope]) is CommitCode.DUPLICATE
    assert ledger.snapshot("s").spent_micros == 50


def test_caps_only_tighten(ledger: MemoryLedger) -> None:
    """A later reservation with a bigger cap cannot loosen a scope; a smaller one tightens it."""
    ledger.reserve("a", [ScopeLimit("s", cap_micros=100)], 10, 0, 60)
    assert not ledger.reserve("b", [ScopeLimit("s", cap_micros=10**9)], 500, 0, 60).granted
    ledger.reserve("c", [ScopeLimit("s", cap_micros=20)], 0, 0, 60)
    assert ledger.snapshot("s").cap_micros == 20


def test_negative_amounts_are_rejected(ledger: MemoryLedger) -> None:
    """Amounts are never negative: that would be a way to reset spend."""
    with pytest.raises(ValueError, match=">= 0"):
        ledger.reserve("r", [ScopeLimit("s")], -1, 0, 60)
    with pytest.raises(ValueError, match=">= 0"):
        ledger.commit("r", -5, 0)


def test_idle_scopes_and_old_records_are_purged(clock: Clock) -> None:
    """Memory stays bounded: idle scopes and finished records go after their time."""
    ledger = MemoryLedger(clock=clock, record_ttl_s=10, scope_ttl_s=10)
    for i in range(50):
        ledger.reserve(f"r{i}", [ScopeLimit(f"s{i}", cap_micros=100)], 1, 0, 1)
        ledger.commit(f"r{i}", 1, 0)
    clock.now += 100
    ledger.reserve("fresh", [ScopeLimit("new", cap_micros=100)], 1, 0, 60)
    assert len(ledger._counters) == 1
    assert len(ledger._records) == 1


def test_concurrent_reservations_never_exceed_the_cap(ledger: MemoryLedger) -> None:
    """32 threads x 200 cycles on shared and private scopes: spend <= cap, nothing left held."""
    shared = ScopeLimit("global", cap_micros=2_000_000)
    granted: list[int] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        mine = ScopeLimit(f"user{n % 8}", cap_micros=400_000)
        for i in range(200):
            rid = f"{n}-{i}"
            if ledger.reserve(rid, [shared, mine], 5_000, 0, 60).granted:
                actual = 1_000 + (i * 37 % 4_000)
                ledger.commit(rid, actual, 0)
                with lock:
                    granted.append(actual)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    state = ledger.snapshot("global")
    assert state.spent_micros == sum(granted)
    assert state.spent_micros <= 2_000_000
    assert state.held_micros == 0
    for n in range(8):
        assert ledger.snapshot(f"user{n}").spent_micros <= 400_000
