"""What only the in-memory engine does: bounded memory, lazy purging, seeding for fallbacks."""

from __future__ import annotations

from costspan.ledgers import CommitCode, MemoryLedger, ScopeLimit, ScopeState


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_idle_scopes_and_settled_records_are_bounded() -> None:
    """Memory stays bounded: idle scopes go after their time; settled reservations are kept
    only among the most recent (enough to recognise a repeated commit), held ones until their
    lease is long over."""
    clock = Clock()
    ledger = MemoryLedger(clock=clock, settled_kept=5, scope_ttl_s=10)
    for i in range(50):
        ledger.reserve(f"r{i}", [ScopeLimit(f"s{i}", cap_micros=100)], 1, 0, 1)
        ledger.commit(f"r{i}", 1, 0)
    assert len(ledger._settled) == 5
    assert ledger.commit("r49", 1, 0) == CommitCode.DUPLICATE
    ledger.reserve("crashed", [ScopeLimit("c", cap_micros=100)], 1, 0, 1)  # never settled
    clock.now += 4000
    ledger.reserve("fresh", [ScopeLimit("new", cap_micros=100)], 1, 0, 60)
    assert set(ledger._counters) == {"new"}
    assert set(ledger._records) == {"fresh"}


def test_a_retired_scope_leaves_once_nothing_is_held() -> None:
    """An ended budget's scope goes at once when idle, or when its last hold settles; the final
    counters are handed over first."""
    ledger = MemoryLedger()
    final: list[ScopeState] = []
    ledger.reserve("a", [ScopeLimit("idle", cap_micros=100)], 10, 0, 60)
    ledger.commit("a", 7, 3)
    ledger.retire("idle", final.append)
    assert "idle" not in ledger._counters
    assert final[-1].spent_micros == 7
    ledger.reserve("b", [ScopeLimit("busy", cap_micros=100)], 10, 0, 60)
    ledger.retire("busy", final.append)
    assert "busy" in ledger._counters  # a hold is live: it stays
    ledger.commit("b", 4, 1)
    assert "busy" not in ledger._counters
    assert final[-1].spent_micros == 4
    assert final[-1].held_micros == 0


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


def test_a_flood_of_new_scopes_cannot_make_it_forget_a_spender() -> None:
    """A user near their cap, then a flood of scopes a client invents (each call refused or
    tiny): the ledger forgets the flood, not the user's spend (it used to forget the least
    recently used, resetting the user's cap)."""
    clock = Clock()
    ledger = MemoryLedger(clock=clock, max_scopes=50)
    victim = ScopeLimit("limit:user.id=victim:d1", cap_micros=1000)
    assert ledger.reserve("v", [victim], 900, 0, 60).granted
    ledger.commit("v", 900, 0)
    for i in range(500):
        clock.now += 1
        flood = ScopeLimit(f"limit:user.id=x{i}:d1", cap_micros=1)
        ledger.reserve(f"f{i}", [flood], 5, 0, 60)  # refused: nothing spent
        ledger.commit(f"t{i}", 1, 0, [ScopeLimit(f"budget:{i:016x}")])  # a tiny spender
    assert not ledger.reserve("again", [victim], 900, 0, 60).granted
    assert ledger.snapshot(victim.key).spent_micros == 900


def test_seed_starts_a_new_scope_from_known_spend_only_once() -> None:
    """The fail-safe fallback seeds a scope with the shared ledger's last answer; a scope that
    already exists here keeps its own counters."""
    ledger = MemoryLedger()
    ledger.seed(ScopeState("s", spent_micros=900, spent_tokens=5, calls=3))
    ledger.seed(ScopeState("s", spent_micros=0))
    assert not ledger.reserve("r", [ScopeLimit("s", cap_micros=1000)], 200, 0, 60).granted
    assert ledger.snapshot("s").spent_micros == 900
