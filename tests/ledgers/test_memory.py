"""What only the in-memory engine does: bounded memory, lazy purging, seeding for fallbacks."""

from __future__ import annotations

from costspan.ledgers import MemoryLedger, ScopeLimit, ScopeState


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_idle_scopes_and_old_records_are_purged() -> None:
    """Memory stays bounded: idle scopes and finished records go after their time."""
    clock = Clock()
    ledger = MemoryLedger(clock=clock, record_ttl_s=10, scope_ttl_s=10)
    for i in range(50):
        ledger.reserve(f"r{i}", [ScopeLimit(f"s{i}", cap_micros=100)], 1, 0, 1)
        ledger.commit(f"r{i}", 1, 0)
    clock.now += 100
    ledger.reserve("fresh", [ScopeLimit("new", cap_micros=100)], 1, 0, 60)
    assert len(ledger._counters) == 1
    assert len(ledger._records) == 1


def test_a_scope_goes_when_its_window_ends() -> None:
    """A windowed scope is purged once its window (plus grace) is over, even if recently used."""
    clock = Clock()
    ledger = MemoryLedger(clock=clock, scope_ttl_s=10_000)
    ledger.commit("p", 5, 0, [ScopeLimit("limit:*:h1", cap_micros=100, expires_at=1050)])
    ledger.commit("q", 5, 0, [ScopeLimit("budget:b", cap_micros=100)])
    clock.now = 1100
    ledger.reserve("r", [ScopeLimit("other")], 0, 0, 60)
    assert set(ledger._counters) == {"budget:b", "other"}


def test_the_number_of_scopes_is_capped() -> None:
    """Past max_scopes, the least recently used idle scopes are dropped."""
    clock = Clock()
    ledger = MemoryLedger(clock=clock, max_scopes=10)
    for i in range(30):
        clock.now += 1
        ledger.commit(f"p{i}", 1, 0, [ScopeLimit(f"s{i}")])
    ledger.reserve("r", [ScopeLimit("last")], 0, 0, 60)
    assert len(ledger._counters) <= 10
    assert "last" in ledger._counters


def test_seed_starts_a_new_scope_from_known_spend_only_once() -> None:
    """The fail-safe fallback seeds a scope with the shared ledger's last answer; a scope that
    already exists here keeps its own counters."""
    ledger = MemoryLedger()
    ledger.seed(ScopeState("s", spent_micros=900, spent_tokens=5, calls=3))
    ledger.seed(ScopeState("s", spent_micros=0))
    assert not ledger.reserve("r", [ScopeLimit("s", cap_micros=1000)], 200, 0, 60).granted
    assert ledger.snapshot("s").spent_micros == 900
