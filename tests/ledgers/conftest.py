"""Every engine, raw (no fail-safe wrapper), fresh and empty for each test: memory, SQLite, one
Redis server, a Redis Cluster (one slot), and the spread layout on that cluster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from costspan.ledgers import Ledger, MemoryLedger, RedisLedger, SQLiteLedger
from costspan.ledgers._redis_cluster import RedisClusterLedger
from costspan.ledgers._spread import SpreadLedger
from tests.conftest import ENGINES
from tests.redis_cluster import LocalCluster
from tests.redis_server import RedisServer


def raw_engine(engine: str, request: pytest.FixtureRequest, tmp_path: Path) -> Ledger:
    if engine == "memory":
        return MemoryLedger()
    if engine == "sqlite":
        return SQLiteLedger(tmp_path / "ledger.db")
    if engine in ("redis-cluster", "redis-spread"):
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        cluster.flush()
        if engine == "redis-cluster":
            return RedisClusterLedger(cluster.url)
        return SpreadLedger(RedisClusterLedger(cluster.url))
    server: RedisServer = request.getfixturevalue("redis_server")
    server.flushed()
    return RedisLedger(server.url)


@pytest.fixture(name="engine", params=ENGINES)
def _engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    ledger = raw_engine(str(request.param), request, tmp_path)
    yield ledger
    ledger.close()
