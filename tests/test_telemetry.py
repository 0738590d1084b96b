"""costspan's metrics: its own counters and the semantic-convention histograms, SDK instruments
recorded in batches, complete at every collection."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from decimal import Decimal

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from opentelemetry.sdk.metrics import Counter, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    InMemoryMetricReader,
    NumberDataPoint,
    Sum,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costspan._pricing import Cost
from costspan._telemetry import BATCH, MOST_WAITING, CostMeter, Deferred, Telemetry
from costspan._usage import TokenUsage
from tests.conftest import counter_points, histogram_points

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello there"}]

pytestmark = pytest.mark.usefixtures("instrumented")


def _metric(reader: InMemoryMetricReader, name: str) -> object:
    data = reader.get_metrics_data()
    assert data is not None
    (metric,) = [
        m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
        if m.name == name
    ]  # fmt: skip
    return metric.data


def test_the_cost_counter_is_a_monotonic_sum_read_at_collection(
    client: openai.OpenAI, metric_reader: InMemoryMetricReader
) -> None:
    """costspan.cost is exported as the SDK's monotonic cumulative Sum: a second collection
    after more calls reports the running total, not the calls since the last one."""
    client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    (first,) = counter_points(metric_reader, "costspan.cost")
    client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    data = _metric(metric_reader, "costspan.cost")
    assert isinstance(data, Sum)
    assert data.is_monotonic
    (second,) = data.data_points
    assert isinstance(second, NumberDataPoint)
    assert second.value == pytest.approx(2 * first.value, rel=1e-9)


def test_a_delta_reader_bounds_the_cost_counters_sets_per_collection() -> None:
    """The cost counter is the SDK's own, so its attribute sets are bounded as the SDK bounds
    them: under a delta reader, per collection. Metric tags that rotate (a user id) then keep
    their own sets for as long as one collection sees fewer than 2,000 of them (kept for the
    process's life, the 2,001st user ever would have been summed as overflow)."""
    reader = InMemoryMetricReader(preferred_temporality={Counter: AggregationTemporality.DELTA})
    costs = CostMeter(MeterProvider(metric_readers=[reader]).get_meter("costspan-test"))
    usage = TokenUsage(10, 5)
    for cycle in range(3):
        for user in range(700):
            dims = {"gen_ai.request.model": "gpt-4o-mini", "user.id": f"{cycle}-{user}"}
            costs.record(usage, Cost(total=Decimal("0.25")), dims)
        points = counter_points(reader, "costspan.cost")
        assert len(points) == 700, cycle
        assert all("otel.metric.overflow" not in (p.attributes or {}) for p in points)
        assert sum(p.value for p in points) == 700 * 0.25


def test_every_instrumentation_of_one_meter_shares_its_counters(
    metric_reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    """The SDK registers an instrument name once per meter and ignores a second registration's
    callbacks: two CostMeters of one meter add to the same sums, so nothing goes unreported."""
    meter = meter_provider.get_meter("costspan-test")
    one, two = CostMeter(meter), CostMeter(meter)
    usage = TokenUsage(10, 5)
    one.record(usage, Cost(total=Decimal("0.5")), {"k": "v"})
    two.record(usage, Cost(total=Decimal("0.25")), {"k": "v"})
    two.record(usage, None, {"k": "v"})
    points = counter_points(metric_reader, "costspan.cost")
    assert [p.value for p in points] == [0.75]
    (unpriced,) = counter_points(metric_reader, "costspan.calls.unpriced")
    assert unpriced.value == 1


def test_histograms_are_complete_at_every_collection(
    client: openai.OpenAI, metric_reader: InMemoryMetricReader
) -> None:
    """Calls fewer than a batch wait to be recorded; a collection records them first, so a
    reader sees every call that ended before it collected."""
    for _ in range(3):
        client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    (duration,) = histogram_points(metric_reader, "gen_ai.client.operation.duration")
    assert duration.count == 3
    tokens = histogram_points(metric_reader, "gen_ai.client.token.usage")
    assert sorted(p.count for p in tokens) == [3, 3]
    client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    (duration,) = histogram_points(metric_reader, "gen_ai.client.operation.duration")
    assert duration.count == 4


def test_a_full_batch_is_recorded_without_waiting_for_a_collection(
    meter_provider: MeterProvider, tracer_provider: TracerProvider
) -> None:
    """What waits is bounded: the call that fills a batch records it."""
    telemetry = Telemetry(tracer_provider, meter_provider)
    deferred = telemetry.deferred
    assert deferred is not None
    for i in range(BATCH * 5):
        telemetry.record_call({"gen_ai.operation.name": "chat"}, 0.1, TokenUsage(i, i))
        assert len(deferred) < BATCH * 4


def test_what_waits_stays_bounded_when_the_drain_falls_behind(
    meter_provider: MeterProvider,
    tracer_provider: TracerProvider,
    metric_reader: InMemoryMetricReader,
) -> None:
    """A drain that does not keep up (a slow SDK, a process busy forking: each fork makes the
    parent's memory copy-on-write) must not let the waiting measurements grow without bound:
    past MOST_WAITING a call records its own at once, and none is lost."""
    telemetry = Telemetry(tracer_provider, meter_provider)
    deferred = telemetry.deferred
    assert deferred is not None
    calls = MOST_WAITING  # three measurements each: well past the bound
    with deferred._drain_lock:  # a drain under way that does not end meanwhile
        for _ in range(calls):
            telemetry.record_call({"gen_ai.operation.name": "chat"}, 0.1, TokenUsage(1, 1))
            assert len(deferred) <= MOST_WAITING
    (duration,) = histogram_points(metric_reader, "gen_ai.client.operation.duration")
    assert duration.count == calls
    tokens = histogram_points(metric_reader, "gen_ai.client.token.usage")
    assert sorted(p.count for p in tokens) == [calls, calls]


def test_histograms_keep_the_calls_trace_for_exemplars(
    client: openai.OpenAI, metric_reader: InMemoryMetricReader, tracer_provider: TracerProvider
) -> None:
    """A measurement recorded later carries the context of the call it measured: exemplars
    still point at the span the call was made in."""
    tracer = tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("handler") as handler:
        client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    (duration,) = histogram_points(metric_reader, "gen_ai.client.operation.duration")
    assert duration.exemplars
    assert {e.trace_id for e in duration.exemplars} == {handler.get_span_context().trace_id}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_exemplars_link_to_the_calls_own_span(
    client: openai.OpenAI,
    metric_reader: InMemoryMetricReader,
    span_exporter: InMemorySpanExporter,
    stream: bool,
) -> None:
    """Every histogram of a call (duration, token usage, time to first chunk) has an exemplar
    that names the call's own GenAI span, even with no span around the call: the measurements
    are recorded after the span stopped being current, with its context kept."""
    if stream:
        chunks = client.chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    (span,) = span_exporter.get_finished_spans()
    context = span.get_span_context()
    assert context is not None
    names = ["gen_ai.client.operation.duration", "gen_ai.client.token.usage"]
    if stream:
        names.append("gen_ai.client.operation.time_to_first_chunk")
    # One collection: the SDK hands each exemplar to the first collection after it was taken.
    data = metric_reader.get_metrics_data()
    assert data is not None
    points = {
        m.name: list(m.data.data_points)
        for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }  # fmt: skip
    for name in names:
        assert points.get(name), name
        for point in points[name]:
            assert [(e.trace_id, e.span_id) for e in point.exemplars] == [
                (context.trace_id, context.span_id)
            ], name


def test_a_failing_measurement_is_logged_and_the_others_recorded(
    meter_provider: MeterProvider,
    tracer_provider: TracerProvider,
    metric_reader: InMemoryMetricReader,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A measurement the SDK rejects with an exception costs only itself."""
    telemetry = Telemetry(tracer_provider, meter_provider)

    class Broken:
        def record(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("broken instrument")

    assert telemetry.deferred is not None
    telemetry.deferred.add(Broken().record, 1.0, {}, None)  # pyright: ignore[reportArgumentType]
    telemetry.record_call({"gen_ai.operation.name": "chat"}, 0.2, None)
    (duration,) = histogram_points(metric_reader, "gen_ai.client.operation.duration")
    assert duration.count == 1
    assert any("broken instrument" in str(r.exc_info) for r in caplog.records if r.exc_info)


def _draining_elsewhere(batches: list[Deferred], until: Callable[[], object]) -> threading.Thread:
    """A thread that holds the batches' drain locks, as a drain does while it records into the
    SDK, until ``until()`` returns; it holds them when this returns."""
    holding = threading.Event()

    def drain() -> None:
        with contextlib.ExitStack() as held:
            for batch in batches:
                held.enter_context(batch._drain_lock)
            holding.set()
            until()

    thread = threading.Thread(target=drain)
    thread.start()
    assert holding.wait(10)
    return thread


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_child_forked_while_a_batch_is_recorded_still_collects(
    meter_provider: MeterProvider, tracer_provider: TracerProvider
) -> None:
    """A drain records a whole batch under its lock; a process forked meanwhile (a pre-forking
    server, multiprocessing) inherits that lock held, with no thread left to release it. The
    child must still collect (it waited for good), and it does not record the parent's waiting
    measurements as its own."""
    telemetry = Telemetry(tracer_provider, meter_provider)
    deferred = telemetry.deferred
    assert deferred is not None
    telemetry.record_call({"gen_ai.operation.name": "chat"}, 0.1, None)
    reader = InMemoryMetricReader()
    child_meters = MeterProvider(metric_readers=[reader])
    child = Telemetry(tracer_provider, child_meters)
    child.record_call({"gen_ai.operation.name": "chat"}, 0.1, None)
    waiting = child.deferred
    assert waiting is not None
    release = threading.Event()
    holder = _draining_elsewhere([deferred, waiting], release.wait)
    pid = os.fork()
    if pid == 0:  # the child: collect within 5 s, and only its own calls
        code = 3
        try:
            done: list[int] = []

            def collect() -> None:
                child.record_call({"gen_ai.operation.name": "chat"}, 0.2, None)
                points = histogram_points(reader, "gen_ai.client.operation.duration")
                done.append(sum(p.count for p in points))

            collector = threading.Thread(target=collect, daemon=True)
            collector.start()
            collector.join(5)
            code = 0 if done == [1] else (1 if not done else 2)
        finally:
            os._exit(code)
    release.set()
    holder.join()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "1: the child hung; 2: wrong count"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_fork_waits_for_a_batch_being_recorded(
    meter_provider: MeterProvider, tracer_provider: TracerProvider
) -> None:
    """A fork made while another thread records a batch waits for that batch to end, so the
    child is not made while the batch holds the SDK's locks (which the child could never
    take)."""
    deferred = Telemetry(tracer_provider, meter_provider).deferred
    assert deferred is not None
    holder = _draining_elsewhere([deferred], lambda: time.sleep(0.4))
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    waited = time.monotonic() - started
    holder.join()
    os.waitpid(pid, 0)
    assert waited >= 0.3, f"the fork did not wait for the batch ({waited:.3f} s)"
