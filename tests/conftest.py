"""Shared fixtures: a real local OpenAI-compatible server, real openai clients, and in-memory
OpenTelemetry providers that collect what costspan emits."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import costspan
from costspan import _config, _runtime
from costspan._runtime import set_ledger
from costspan.ledgers import Ledger
from costspan.ledgers._open import LedgerSpec, parse_ledger_url
from costspan.testing import OpenAICompatibleServer
from tests.redis_cluster import LocalCluster
from tests.redis_server import RedisServer

# Test modules that need an apt/npm-installed tool, or that start subprocesses: left out of the
# fast developer tier (scripts/dev.sh quick), always in the full suite.
_EXTERNAL_MODULES = frozenset({"test_dashboards", "test_collector_config", "test_cross_service"})
_SLOW_MODULES = frozenset(
    {
        "test_docs",
        "test_examples",
        "test_cli",
        "test_auto_instrument",
        "test_rotel",
        "test_jaeger_trace",
        "test_benchmarks",
        "test_pytest_plugin",
        "test_offline",
        "test_concurrency",
        "test_crash",
        "test_enforcement",
        "test_import",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark what the fast tier leaves out: tests on a real redis-server (by fixture or by an
    engine parameter) or other installed tools (``external``), and subprocess-heavy ``slow``."""
    for item in items:
        module = item.path.stem
        params = getattr(getattr(item, "callspec", None), "params", {})
        if (
            module in _EXTERNAL_MODULES
            or "redis_server" in getattr(item, "fixturenames", ())
            or "redis" in params.values()
        ):
            item.add_marker(pytest.mark.external)
        if module in _SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(name="server")
def _server() -> Iterator[OpenAICompatibleServer]:
    with OpenAICompatibleServer() as server:
        yield server


@pytest.fixture(name="span_exporter")
def _span_exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture(name="metric_reader")
def _metric_reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture(name="tracer_provider")
def _tracer_provider(span_exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    yield provider
    provider.shutdown()


@pytest.fixture(name="meter_provider")
def _meter_provider(metric_reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    provider = MeterProvider(metric_readers=[metric_reader])
    yield provider
    provider.shutdown()


@pytest.fixture(autouse=True)
def _reset_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Every test starts from the environment's settings, with costspan's variables unset, and
    a state directory of its own (the durable outbox goes there, never into the user's)."""
    for name in (
        _config.COSTSPAN_INJECT_STREAM_USAGE,
        _config.COSTSPAN_PROVIDER_HOSTS,
        _config.OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT,
        _config.COSTSPAN_OUTBOX,
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    _runtime.reset()
    yield
    _runtime.reset()


@pytest.fixture(name="instrumented")
def _instrumented(tracer_provider: TracerProvider, meter_provider: MeterProvider) -> Iterator[None]:
    costspan.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    yield
    costspan.uninstrument()


@pytest.fixture(name="client")
def _client(server: OpenAICompatibleServer) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=server.base_url, api_key="test-key", max_retries=0)
    yield client
    client.close()


@pytest.fixture(name="async_client")
async def _async_client(server: OpenAICompatibleServer) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="test-key", max_retries=0)
    yield client
    await client.close()


def _points(reader: InMemoryMetricReader, name: str) -> list[object]:
    data = reader.get_metrics_data()
    assert data is not None
    return [
        point
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


def histogram_points(reader: InMemoryMetricReader, name: str) -> list[HistogramDataPoint]:
    """The data points of one histogram metric collected by ``reader``."""
    return [cast(HistogramDataPoint, p) for p in _points(reader, name)]


def counter_points(reader: InMemoryMetricReader, name: str) -> list[NumberDataPoint]:
    """The data points of one counter collected by ``reader``."""
    return [cast(NumberDataPoint, p) for p in _points(reader, name)]


@pytest.fixture(name="redis_server", scope="session")
def _redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server on loopback for the session's Redis tests (each flushes it)."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(name="redis_cluster", scope="session")
def _redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One real local Redis Cluster (3 primaries) for the session's cluster tests."""
    with LocalCluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


ENGINES = ("memory", "sqlite", "redis", "redis-cluster", "redis-spread")
"""Every engine: ``redis-cluster`` is the one-slot layout on a 3-primary Redis Cluster,
``redis-spread`` the spread layout (a slot per scope, leases for ``*`` rules) on it."""


def open_engine(engine: str, request: pytest.FixtureRequest, tmp_path: Path) -> Ledger:
    """A fresh ledger of ``engine`` as COSTSPAN_LEDGER would open it (shared ones fail-safe)."""
    if engine == "memory":
        return LedgerSpec("memory").open("local")
    if engine == "sqlite":
        return parse_ledger_url("url", f"sqlite:///{tmp_path / 'ledger.db'}").open("local")
    if engine in ("redis-cluster", "redis-spread"):
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        cluster.flush()
        layout = "?layout=spread" if engine == "redis-spread" else ""
        return parse_ledger_url("url", cluster.url + layout).open("local")
    server: RedisServer = request.getfixturevalue("redis_server")
    server.flushed()
    return parse_ledger_url("url", server.url).open("local")


@pytest.fixture(name="fresh_ledger", params=ENGINES)
def _fresh_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    """A new, empty ledger of each engine in turn: the budget suite runs against all three."""
    ledger = open_engine(str(request.param), request, tmp_path)
    set_ledger(ledger)
    yield ledger
    set_ledger(None)
    ledger.close()


def only_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    spans = exporter.get_finished_spans()
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


USER: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is the capital of France?"}
]


def chat_helpers(client: openai.OpenAI | openai.AsyncOpenAI) -> Any:
    """Where this openai keeps the chat ``parse()`` and ``stream()`` helpers: on
    ``chat.completions`` since openai 1.92, on ``beta.chat.completions`` before (1.66 included)."""
    completions = client.chat.completions
    if hasattr(completions, "parse"):
        return completions
    return getattr(client, "beta").chat.completions  # noqa: B009  # gone from openai's types


_CUT_STREAM = """
import openai
from costspan.testing import OpenAICompatibleServer

with OpenAICompatibleServer() as server:
    client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True,
        extra_headers={"x-costspan-test-cut-after": "4"},
    )
    try:
        list(stream)
    except Exception as exc:
        print(f"{type(exc).__module__}:{type(exc).__qualname__}")
"""


@pytest.fixture(name="cut_stream_error", scope="session")
def _cut_stream_error() -> type[BaseException]:
    """What this openai raises, with nothing instrumented (a process of its own), when the
    connection drops in the middle of a chat stream: openai 3 wraps the transport's error in
    APIConnectionError, 1.x and 2.x let httpx's own error through. costspan must re-raise
    exactly that."""
    done = subprocess.run(
        [sys.executable, "-c", _CUT_STREAM], capture_output=True, text=True, timeout=60, check=True
    )
    module, _, name = done.stdout.strip().rpartition(":")
    found = getattr(importlib.import_module(module), name)
    assert isinstance(found, type), done.stdout
    assert issubclass(found, BaseException), done.stdout
    return found
