"""Enforcement fails safe: a ledger error of any kind is decided by the fail mode.

Each error class a ledger can raise at reserve time (unreachable, a Redis error reply, an
overflow, a locked SQLite file, a plain bug) under each fail mode: ``closed`` sends nothing
(``BudgetUnavailable``), ``open`` sends and says so on the span, ``local`` keeps the caps with this
process's own counters (the same calls go out as with a healthy ledger). Then the same against a
real Redis whose counter key was corrupted (a real ``WRONGTYPE`` from the real script).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import openai
import pytest
import redis.exceptions
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import costspan
from costspan import BudgetExceeded, BudgetUnavailable
from costspan._runtime import set_ledger
from costspan.ledgers import (
    FailSafeLedger,
    LedgerUnavailable,
    Reservation,
    ScopeLimit,
    SQLiteLedger,
)
from costspan.ledgers._failsafe import FailMode
from costspan.testing import OpenAICompatibleServer
from tests.conftest import USER, attrs
from tests.redis_server import RedisServer

pytestmark = pytest.mark.usefixtures("instrumented")

ERRORS: dict[str, BaseException] = {
    "unreachable": LedgerUnavailable("connection refused"),
    "redis error reply": redis.exceptions.ResponseError(
        "WRONGTYPE Operation against a key holding the wrong kind of value"
    ),
    "overflow": OverflowError("Python int too large to convert to SQLite INTEGER"),
    "locked sqlite": sqlite3.OperationalError("database is locked"),
    "a bug": RuntimeError("something costspan did not expect"),
}


class Broken(SQLiteLedger):
    """A real SQLite engine whose reserve fails with the error under test."""

    error: BaseException = RuntimeError()

    def reserve(
        self,
        rid: str,
        scopes: Sequence[ScopeLimit],
        usd_micros: int,
        tokens: int,
        lease_s: float,
    ) -> Reservation:
        raise self.error


def _calls(client: openai.OpenAI, n: int = 4) -> tuple[int, int]:
    """(calls that went out, calls refused) of n calls under the budget in force."""
    sent = refused = 0
    for _ in range(n):
        try:
            client.chat.completions.create(
                model="gpt-4o-mini", messages=USER, max_completion_tokens=150
            )
            sent += 1
        except BudgetExceeded:
            refused += 1
    return sent, refused


@pytest.fixture(name="healthy")
def _healthy(client: openai.OpenAI, tmp_path: Path) -> tuple[int, int]:
    """What the same calls do with a ledger that works."""
    ledger = FailSafeLedger(SQLiteLedger(tmp_path / "healthy.db"), "local")
    set_ledger(ledger)
    try:
        with costspan.budget(usd="0.0001"):
            return _calls(client)
    finally:
        set_ledger(None)
        ledger.close()


@pytest.fixture(name="broken")
def _broken(
    request: pytest.FixtureRequest, tmp_path: Path, healthy: tuple[int, int]
) -> Iterator[FailSafeLedger]:
    # After `healthy` (which uses its own ledger): this one is in force for the test.
    mode, error = request.param
    engine = Broken(tmp_path / "broken.db")
    engine.error = ERRORS[error]
    ledger = FailSafeLedger(engine, mode, probe_interval_s=60)
    set_ledger(ledger)
    yield ledger
    set_ledger(None)
    ledger.engine.close()


CASES = [(mode, error) for mode in ("closed", "open", "local") for error in ERRORS]


@pytest.mark.parametrize("broken", CASES, indirect=True, ids=[f"{m}-{e}" for m, e in CASES])
def test_every_ledger_error_is_decided_by_the_fail_mode(
    broken: FailSafeLedger,
    healthy: tuple[int, int],
    client: openai.OpenAI,
    server: OpenAICompatibleServer,
    span_exporter: InMemorySpanExporter,
) -> None:
    """Nothing unmetered in closed; sent and marked in open; caps held in local."""
    before = len(server.requests)
    span_exporter.clear()
    with costspan.budget(usd="0.0001"):
        sent, refused = _calls(client)
    assert len(server.requests) - before == sent
    spans = span_exporter.get_finished_spans()
    assert len(spans) == 4
    mode: FailMode = broken.fail_mode
    if mode == "closed":
        assert (sent, refused) == (0, 4)
        assert all(attrs(s)["error.type"] == "BudgetUnavailable" for s in spans)
    elif mode == "open":
        assert (sent, refused) == (4, 0)
        assert all(attrs(s)["costspan.ledger.fail_mode"] == "open" for s in spans)
    else:
        assert (sent, refused) == healthy
        assert refused >= 1
        assert all(attrs(s)["costspan.ledger.fail_mode"] == "local" for s in spans)


@pytest.mark.parametrize("mode", ["closed", "local"])
def test_a_corrupted_redis_key_never_switches_a_limit_off(
    mode: str,
    redis_server: RedisServer,
    client: openai.OpenAI,
    server: OpenAICompatibleServer,
) -> None:
    """A real WRONGTYPE from the real reserve script (a counter key overwritten with a string):
    closed refuses every call, local still holds the per-user cap."""
    redis_server.flushed()
    costspan.configure(
        ledger=redis_server.url, fail_mode=mode, limits="user.id $0.0001/day", outbox="off"
    )
    day = time.strftime("d%Y%m%d", time.gmtime())
    with redis_server.client() as r:
        r.set(f"costspan:{{ledger}}:c:limit:user.id=alice:{day}", "not a hash")
    with costspan.tags({"user.id": "alice"}):
        if mode == "closed":
            with pytest.raises(BudgetUnavailable, match="WRONGTYPE"):
                client.chat.completions.create(model="gpt-4o-mini", messages=USER)
            assert _calls(client, 3) == (0, 3)
            assert server.requests == []
        else:
            assert _calls(client, 4) == (1, 3)  # what the cap allows, as with a healthy key
