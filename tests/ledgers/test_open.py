"""COSTSPAN_LEDGER and COSTSPAN_FAIL_MODE: URLs checked when configured, engines opened lazily,
and what a call does when the configured ledger is unreachable."""

from __future__ import annotations

import asyncio
from pathlib import Path

import openai
import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import costspan
from costspan import _config
from costspan._runtime import runtime, set_ledger
from costspan.ledgers import FailSafeLedger, MemoryLedger, RedisLedger, SQLiteLedger
from costspan.ledgers._open import parse_ledger_url
from costspan.testing import OpenAICompatibleServer
from tests.conftest import USER, attrs, counter_points, only_span
from tests.ledgers.slow_proxy import SlowProxy
from tests.processes import free_port
from tests.redis_server import RedisServer


@pytest.fixture(autouse=True)
def _configured_ledger() -> object:
    """Each test opens the ledger its settings name, and forgets it afterwards."""
    set_ledger(None)
    yield
    set_ledger(None)


@pytest.mark.parametrize(
    ("url", "engine", "shown"),
    [
        ("memory", "memory", "memory"),
        ("sqlite:///var/lib/app/ledger.db", "sqlite", "sqlite:///var/lib/app/ledger.db"),
        ("sqlite:////var/lib/app/ledger.db", "sqlite", "sqlite:///var/lib/app/ledger.db"),
        ("sqlite://ledger.db?busy_timeout=5", "sqlite", "sqlite://ledger.db"),
        ("redis://:s3cret@cache:6379/2?timeout=0.05", "redis", "redis://:***@cache:6379/2"),
        (
            "rediss://user:pw@cache.example:6380/0",
            "redis",
            "rediss://user:***@cache.example:6380/0",
        ),
        ("unix:///run/redis.sock", "redis", "unix:///run/redis.sock"),
    ],
)
def test_ledger_urls(url: str, engine: str, shown: str) -> None:
    """Every accepted form, and how it is shown in logs (passwords never)."""
    spec = parse_ledger_url("COSTSPAN_LEDGER", url)
    assert spec.engine == engine
    assert str(spec) == shown


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgres://db/ledger", "use memory, sqlite:///path"),
        ("sqlite://", "give a file"),
        ("sqlite:///x.db?wal=1", "unknown option 'wal'"),
        ("redis://host/0?timeout=soon", "timeout='soon' is not a float"),
        ("redis://host/0?retries=-1", "retries='-1' is not a int"),
        ("redis:///0", "needs a host"),
        # What redis-py would only find when connecting, found at configure time.
        ("redis://host/0?foo=bar", "unexpected keyword argument 'foo'"),
        ("redis://host:70000/0", "port is not a number in 1-65535"),
        ("redis://host/abc", "database .'abc'. must be a whole number"),
        ("redis://:secret@host/0?foo=1", "redis://:\\*\\*\\*@host"),  # password never shown
        # ASCII digits only: float() would take these, and "inf" would wait forever.
        ("redis://host/0?timeout=inf", "timeout='inf' is not a float"),
        ("redis://host/0?timeout=\u0663", "is not a float"),
        ("sqlite:///x.db?busy_timeout=nan", "busy_timeout='nan' is not a float"),
        ("redis://host/0?timeout=3600", "timeout must be at most 60"),
    ],
)
def test_bad_ledger_urls_are_clear_errors(
    url: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad COSTSPAN_LEDGER fails configure() with the variable's name, not a call later."""
    monkeypatch.setenv(_config.COSTSPAN_LEDGER, url)
    with pytest.raises(ValueError, match=f"COSTSPAN_LEDGER=.*{message}"):
        costspan.configure()


def test_bad_fail_mode_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_config.COSTSPAN_FAIL_MODE, "maybe")
    with pytest.raises(ValueError, match="COSTSPAN_FAIL_MODE='maybe': use closed, open, local"):
        costspan.configure()
    monkeypatch.delenv(_config.COSTSPAN_FAIL_MODE)
    with pytest.raises(ValueError, match="fail_mode must be one of"):
        costspan.configure(fail_mode=3)


def test_the_configured_engine_is_opened_once_and_reopened_on_change(tmp_path: Path) -> None:
    """runtime().ledger follows the settings: one engine per (URL, fail mode)."""
    assert isinstance(runtime().ledger, MemoryLedger)
    costspan.configure(ledger=f"sqlite:///{tmp_path / 'a.db'}", fail_mode="closed")
    first = runtime().ledger
    assert isinstance(first, FailSafeLedger)
    assert isinstance(first.engine, SQLiteLedger)
    assert first.fail_mode == "closed"
    assert runtime().ledger is first
    costspan.configure(ledger="redis://127.0.0.1:1/0")
    second = runtime().ledger
    assert isinstance(second, FailSafeLedger)
    assert isinstance(second.engine, RedisLedger)
    assert second.fail_mode == "local"
    first.close()


# -- a dead ledger under real calls ---------------------------------------------------------------
@pytest.mark.usefixtures("instrumented")
def test_closed_mode_refuses_before_sending(
    client: openai.OpenAI, server: OpenAICompatibleServer, span_exporter: InMemorySpanExporter
) -> None:
    """fail_mode=closed, Redis unreachable: BudgetUnavailable (a BudgetExceeded), nothing sent."""
    costspan.configure(ledger=f"redis://127.0.0.1:{free_port()}/0", fail_mode="closed")
    with costspan.budget(usd=1), pytest.raises(costspan.BudgetUnavailable) as refused:
        client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert isinstance(refused.value, costspan.BudgetExceeded)
    assert "ledger is unreachable" in str(refused.value)
    assert server.requests == []
    span = attrs(only_span(span_exporter))
    assert span["costspan.ledger.fail_mode"] == "closed"
    assert span["costspan.budget.decision"] == "refuse"
    runtime().ledger.close()


@pytest.mark.usefixtures("instrumented")
def test_open_mode_sends_unmetered_and_says_so(
    client: openai.OpenAI,
    span_exporter: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """fail_mode=open: the call goes out, marked on the span, counted, and warned about once."""
    costspan.configure(ledger=f"redis://127.0.0.1:{free_port()}/0", fail_mode="open")
    with costspan.budget(usd=1):
        for _ in range(3):
            client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    spans = span_exporter.get_finished_spans()
    assert [attrs(s)["costspan.ledger.fail_mode"] for s in spans] == ["open"] * 3
    assert all("gen_ai.usage.cost.amount" in attrs(s) for s in spans)
    points = counter_points(metric_reader, "costspan.ledger.unavailable")
    assert [(p.attributes, p.value) for p in points] == [({"costspan.ledger.fail_mode": "open"}, 3)]
    warnings = [r for r in caplog.records if "ledger is unreachable" in r.getMessage()]
    assert len(warnings) == 1
    ledger = runtime().ledger
    assert isinstance(ledger, FailSafeLedger)
    assert ledger.queued == 3  # their cost waits to be replayed
    ledger._outbox.clear()  # no Redis will ever come back for this test's outbox
    ledger.engine.close()


@pytest.mark.usefixtures("instrumented")
async def test_async_calls_never_block_the_event_loop_on_the_ledger(
    redis_server: RedisServer, async_client: openai.AsyncOpenAI
) -> None:
    """A slow Redis (every script answered after 150 ms) delays the call, not the loop: a
    heartbeat task keeps beating while the call reserves and commits."""
    redis_server.flushed()
    with SlowProxy(redis_server.port, 0.15) as proxy:
        costspan.configure(ledger=f"{proxy.url}?timeout=2")
        beats = 0
        done = asyncio.Event()

        async def heartbeat() -> None:
            nonlocal beats
            while not done.is_set():
                beats += 1
                await asyncio.sleep(0.01)

        beating = asyncio.create_task(heartbeat())
        await asyncio.sleep(0)
        with costspan.budget(usd=1) as budget:
            await async_client.chat.completions.create(model="gpt-4o-mini", messages=USER)
            spent = budget.spent_usd  # the commit has landed when the call returns
        done.set()
        await beating
        assert spent > 0
        # Two scripts at 150 ms each: a blocked loop would have beaten once or twice at most.
        assert beats >= 15
        runtime().ledger.close()
