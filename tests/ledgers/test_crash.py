"""A process SIGKILLed while it holds a reservation: the hold expires with its lease and the
budget frees up; the dead call's late commit (its outbox replayed by someone) is charged once."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from costspan.ledgers import CommitCode, ScopeLimit
from tests.ledgers import workload

CHILD = """
import sys, time
from costspan.ledgers import ScopeLimit
from tests.ledgers import workload
ledger = workload.open_ledger(sys.argv[1], sys.argv[2])
scopes = [ScopeLimit("user:crashy", cap_micros=60_000), ScopeLimit("global", cap_micros=10**9)]
result = ledger.reserve("dead-call", scopes, 50_000, 1_000, float(sys.argv[3]))
print("held" if result.granted else "refused", flush=True)
time.sleep(60)
"""
LEASE_S = 1.5


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_a_killed_holder_frees_its_budget_after_the_lease(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """SIGKILL mid-reservation: room comes back after the lease; the late commit counts once."""
    target = workload.shared_target(kind, request, tmp_path)
    root = Path(__file__).resolve().parents[2]
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, kind, target, str(LEASE_S)],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
    )
    ledger = workload.open_ledger(kind, target)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "held"
        held_at = time.monotonic()
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL

        user = ScopeLimit("user:crashy", cap_micros=60_000)
        assert ledger.snapshot("user:crashy").held_micros == 50_000
        refused = ledger.reserve("after-kill", [user], 20_000, 0, 60)
        assert not refused.granted
        assert refused.room_micros == 10_000

        time.sleep(max(0.0, LEASE_S + 0.3 - (time.monotonic() - held_at)))
        assert ledger.reserve("after-lease", [user], 20_000, 0, 60).granted
        state = ledger.snapshot("user:crashy")
        assert (state.spent_micros, state.held_micros) == (0, 20_000)
        assert ledger.snapshot("global").held_micros == 0  # a read sweeps expired holds too

        scopes = [user, ScopeLimit("global", cap_micros=10**9)]
        assert ledger.commit("dead-call", 30_000, 700, scopes) is CommitCode.LATE
        assert ledger.commit("dead-call", 30_000, 700, scopes) is CommitCode.DUPLICATE
        state = ledger.snapshot("user:crashy")
        assert (state.spent_micros, state.held_micros, state.calls) == (30_000, 20_000, 1)
        assert ledger.snapshot("global").spent_micros == 30_000
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()
        ledger.close()
