"""No cap is overspent under concurrency: 32 threads x 200 cycles per engine, and 4 processes
sharing one SQLite file, one Redis server or one Redis Cluster (one slot; and the spread layout
with the global scope on quota leases), against hierarchical caps (user, tenant, global).

A monitor reads every scope while the workload runs; afterwards each counter must equal the sum
of the actual costs committed to it, exactly, with nothing left held.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from costspan.ledgers import Ledger
from tests.ledgers import workload


def test_thirty_two_threads_never_overspend(engine: Ledger) -> None:
    """32 threads x 200 reserve/commit cycles on one ledger object."""
    with workload.Monitor(engine) as monitor:
        tally = workload.run_threads(engine, "threads", threads=32, cycles=200)
    assert monitor.violations == []
    assert monitor.reads > 0
    workload.check(engine, tally)
    # The caps bind at every level, so the test exercises refusals, not just grants.
    assert set(tally.refused_by) == {"user", "tenant", "global"}
    assert len(tally.charges) > 1000


@pytest.mark.parametrize("kind", ["sqlite", "redis", "redis-cluster", "redis-spread"])
def test_four_processes_never_overspend(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """4 processes x 8 threads x 200 cycles sharing one store."""
    target = workload.shared_target(kind, request, tmp_path)
    observer = workload.open_ledger(kind, target)
    context = multiprocessing.get_context("spawn")
    try:
        with workload.Monitor(observer) as monitor, context.Pool(4) as pool:
            tallies = pool.starmap(
                workload.process_main, [(kind, target, f"p{n}", 8, 200) for n in range(4)]
            )
        tally = workload.merge(tallies)
        assert monitor.violations == []
        workload.check(observer, tally)
        assert set(tally.refused_by) == {"user", "tenant", "global"}
    finally:
        observer.close()
