"""The ledger protocol, one suite run against every engine: memory, SQLite and Redis.

Same calls, same answers: all-or-nothing holds, exact fits, token caps, idempotent reserve,
commit and release, leases that expire, late and post-hoc commits, sticky and configured caps,
and the async twins. Engine-specific storage (purging, key expiry) is tested per engine.
"""

from __future__ import annotations

import time

import pytest

from costspan.ledgers import CommitCode, Ledger, ScopeLimit


def test_is_a_ledger(engine: Ledger) -> None:
    """Every engine satisfies the runtime-checkable protocol."""
    assert isinstance(engine, Ledger)


def test_reserve_is_all_or_nothing(engine: Ledger) -> None:
    """A reservation that fails one scope writes nothing to the others, and says why."""
    user = ScopeLimit("user", cap_micros=1000)
    team = ScopeLimit("team", cap_micros=100)
    result = engine.reserve("r1", [user, team], 500, 10, 60)
    assert not result.granted
    assert result.failed_scope == "team"
    assert result.room_micros == 100
    assert [s.key for s in result.states] == ["user", "team"]
    assert engine.snapshot("user").held_micros == 0


def test_grant_reports_every_scope_after_the_hold(engine: Ledger) -> None:
    """A grant answers with each scope's counters including the new hold (no second trip)."""
    a, b = ScopeLimit("a", cap_micros=1000), ScopeLimit("b", cap_tokens=500)
    result = engine.reserve("r", [a, b], 300, 40, 60)
    assert result.granted
    assert [(s.key, s.held_micros, s.held_tokens) for s in result.states] == [
        ("a", 300, 40),
        ("b", 300, 40),
    ]
    assert result.states[0].room_micros == 700
    assert result.states[1].room_tokens == 460


def test_exact_fit_is_granted(engine: Ledger) -> None:
    """A hold equal to the room fits; one micro-dollar more does not."""
    scope = ScopeLimit("s", cap_micros=1000)
    assert engine.reserve("a", [scope], 1000, 0, 60).granted
    assert not engine.reserve("b", [scope], 1, 0, 60).granted


def test_token_dimension(engine: Ledger) -> None:
    """Token caps are checked like USD caps."""
    scope = ScopeLimit("s", cap_tokens=100)
    assert engine.reserve("a", [scope], 0, 60, 60).granted
    refused = engine.reserve("b", [scope], 0, 41, 60)
    assert not refused.granted
    assert refused.room_tokens == 40


def test_commit_moves_hold_to_spend_once(engine: Ledger) -> None:
    """Commit charges the actual amount; a duplicate commit changes nothing."""
    scope = ScopeLimit("s", cap_micros=1000)
    engine.reserve("r", [scope], 800, 50, 60)
    assert engine.commit("r", 300, 20, [scope]) is CommitCode.COMMITTED
    assert engine.commit("r", 300, 20, [scope]) is CommitCode.DUPLICATE
    state = engine.snapshot("s")
    assert (state.spent_micros, state.held_micros, state.spent_tokens, state.calls) == (
        300,
        0,
        20,
        1,
    )


def test_retried_reserve_is_a_duplicate(engine: Ledger) -> None:
    """A client retrying a reserve with the same id holds once."""
    scope = ScopeLimit("s", cap_micros=1000)
    assert engine.reserve("r", [scope], 400, 0, 60).granted
    second = engine.reserve("r", [scope], 400, 0, 60)
    assert second.duplicate
    assert engine.snapshot("s").held_micros == 400


def test_release_frees_the_hold(engine: Ledger) -> None:
    """A released reservation charges nothing and counts no call; a second release is a no-op."""
    scope = ScopeLimit("s", cap_micros=1000)
    engine.reserve("r", [scope], 900, 0, 60)
    assert engine.release("r", [scope]) is CommitCode.COMMITTED
    assert engine.release("r", [scope]) is CommitCode.DUPLICATE
    state = engine.snapshot("s")
    assert (state.spent_micros, state.held_micros, state.calls) == (0, 0, 0)


def test_zero_amounts(engine: Ledger) -> None:
    """A zero hold and a zero commit are valid (never a '-0' write that a script rejects)."""
    scope = ScopeLimit("s", cap_micros=10)
    assert engine.reserve("r", [scope], 0, 0, 60).granted
    assert engine.commit("r", 0, 0, [scope]) is CommitCode.COMMITTED
    assert engine.snapshot("s").calls == 1


def test_expired_lease_frees_room_and_late_commit_charges_once(engine: Ledger) -> None:
    """A crashed holder's reservation expires; its late commit is still charged, once."""
    scope = ScopeLimit("s", cap_micros=1000)
    engine.reserve("dead", [scope], 900, 0, 0.3)
    assert not engine.reserve("x", [scope], 500, 0, 60).granted
    time.sleep(0.4)
    assert engine.reserve("y", [scope], 500, 0, 60).granted
    assert engine.commit("dead", 300, 0, [scope]) is CommitCode.LATE
    assert engine.commit("dead", 300, 0, [scope]) is CommitCode.DUPLICATE
    state = engine.snapshot("s")
    assert (state.spent_micros, state.held_micros) == (300, 500)


def test_a_renewed_hold_outlives_its_first_lease(engine: Ledger) -> None:
    """extend() gives a live hold a new lease: renewed before it ends, it is still held after
    the first lease; a settled hold cannot be renewed, nor one already swept."""
    scope = ScopeLimit("s", cap_micros=1000)
    assert engine.reserve("live", [scope], 900, 0, 0.5).granted
    for _ in range(3):
        time.sleep(0.25)
        assert engine.extend("live", [scope], 0.5)
    assert not engine.reserve("x", [scope], 500, 0, 60).granted  # still held after ~0.75 s
    assert engine.commit("live", 100, 0, [scope]) is CommitCode.COMMITTED
    assert not engine.extend("live", [scope], 0.5)
    assert engine.reserve("gone", [scope], 100, 0, 0.2).granted
    time.sleep(0.3)
    assert engine.reserve("other", [scope], 800, 0, 60).granted  # the sweep took "gone"
    assert not engine.extend("gone", [scope], 60)


def test_post_hoc_commit(engine: Ledger) -> None:
    """A commit without a reservation charges the given scopes and remembers the id."""
    scope = ScopeLimit("s", cap_micros=10)
    assert engine.commit("p", 50, 5, [scope]) is CommitCode.POST_HOC
    assert engine.commit("p", 50, 5, [scope]) is CommitCode.DUPLICATE
    state = engine.snapshot("s")
    assert (state.spent_micros, state.spent_tokens, state.cap_micros) == (50, 5, 10)


def test_sticky_caps_only_tighten(engine: Ledger) -> None:
    """A later reservation with a bigger cap cannot loosen a scope; a smaller one tightens it,
    even when that reservation itself is refused."""
    engine.reserve("a", [ScopeLimit("s", cap_micros=100)], 10, 0, 60)
    assert not engine.reserve("b", [ScopeLimit("s", cap_micros=10**9)], 500, 0, 60).granted
    assert not engine.reserve("c", [ScopeLimit("s", cap_micros=5)], 50, 0, 60).granted
    assert engine.snapshot("s").cap_micros == 5


def test_configured_caps_follow_the_configuration(engine: Ledger) -> None:
    """A non-sticky (configured) cap is whatever the caller gives now: raising it takes effect."""
    low = ScopeLimit("limit", cap_micros=100, sticky=False)
    high = ScopeLimit("limit", cap_micros=1000, sticky=False)
    assert engine.reserve("a", [low], 80, 0, 60).granted
    assert not engine.reserve("b", [low], 80, 0, 60).granted
    assert engine.reserve("c", [high], 80, 0, 60).granted
    assert engine.snapshot("limit").cap_micros == 1000


def test_negative_amounts_are_rejected(engine: Ledger) -> None:
    """Amounts are never negative: that would be a way to reset spend."""
    with pytest.raises(ValueError, match=">= 0"):
        engine.reserve("r", [ScopeLimit("s")], -1, 0, 60)
    with pytest.raises(ValueError, match=">= 0"):
        engine.commit("r", -5, 0, [ScopeLimit("s")])


def test_awkward_scope_keys(engine: Ledger) -> None:
    """Keys with spaces, braces and unicode are separate scopes, stored and read back intact."""
    keys = ["limit:user.id=a b:d20261122", "limit:user.id={x}:d20261122", "budget:ünï"]
    for i, key in enumerate(keys):
        engine.commit(f"p{i}", 10 + i, 0, [ScopeLimit(key)])
    assert [engine.snapshot(k).spent_micros for k in keys] == [10, 11, 12]


async def test_async_twins_share_state_with_sync_calls(engine: Ledger) -> None:
    """areserve/acommit/arelease act on the same counters as their sync twins."""
    scope = ScopeLimit("s", cap_micros=1000)
    granted = await engine.areserve("a", [scope], 600, 0, 60)
    assert granted.granted
    assert not engine.reserve("b", [scope], 600, 0, 60).granted
    assert await engine.acommit("a", 200, 3, [scope]) is CommitCode.COMMITTED
    assert (await engine.areserve("c", [scope], 600, 0, 60)).granted
    assert await engine.arelease("c", [scope]) is CommitCode.COMMITTED
    state = engine.snapshot("s")
    assert (state.spent_micros, state.held_micros, state.spent_tokens) == (200, 0, 3)
