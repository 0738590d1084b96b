"""CostSpanProcessor as the budget gate for other instrumentations.

The official OpenAI instrumentation (opentelemetry-instrumentation-genai-openai, costspan's own
instrumentor off) and the official Anthropic one with the anthropic SDK (whose own span nests
under the instrumentation's), real clients over HTTP against the local server: under a block
budget, a configured per-user limit on a real Redis, and a 20-thread fan-out. Calls stop when
the room is gone and nothing is sent past it; a budget's spend is exactly the sum of the counted
spans' costs (each rounded up to the micro-dollar, as the ledger charges); one span per call
carries cost.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from opentelemetry.instrumentation.genai.anthropic import AnthropicInstrumentor
from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor as OfficialOpenAI
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

import costspan
from costspan import BudgetExceeded, BudgetUnavailable, CostSpanProcessor
from costspan import _gate as gate
from costspan._money import micros, usd
from costspan._runtime import set_ledger, settings
from costspan.ledgers import FailSafeLedger, Reservation, ScopeLimit, SQLiteLedger
from costspan.testing import OpenAICompatibleServer
from tests.conftest import USER, attrs, open_engine
from tests.redis_server import RedisServer

MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5"}
# Room for several calls, but not for many: the cap binds within a few calls of each kind.
CAPS = {"openai": Decimal("0.002"), "anthropic": Decimal("0.01")}
MAX_TOKENS = 200
# Each reply is as long as its cap allows: actual costs come close to the cap's share.
LONG = {"x-costspan-test-output-tokens": "5000"}
KINDS = ["openai", "anthropic"]


@dataclass
class Pipeline:
    provider: TracerProvider
    exporter: InMemorySpanExporter

    def spans(self) -> Sequence[ReadableSpan]:
        return self.exporter.get_finished_spans()

    def counted(self) -> list[ReadableSpan]:
        """The spans that carry a call's cost."""
        return [s for s in self.spans() if "gen_ai.usage.cost.amount" in attrs(s)]

    def marked(self) -> list[ReadableSpan]:
        """The spans counted on another span of their call."""
        return [s for s in self.spans() if "costspan.cost.counted_on" in attrs(s)]

    def refused(self) -> list[ReadableSpan]:
        return [s for s in self.spans() if attrs(s).get("costspan.budget.decision") == "refuse"]

    def charged(self, spans: Sequence[ReadableSpan] | None = None) -> Decimal:
        """What the ledger charged for the counted spans: each cost rounded up to the µ$."""
        chosen = self.counted() if spans is None else spans
        return sum(
            (usd(micros(Decimal(repr(attrs(s)["gen_ai.usage.cost.amount"])))) for s in chosen),
            Decimal(0),
        )


@pytest.fixture(name="pipeline")
def _pipeline() -> Iterator[Pipeline]:
    """The official OpenAI and Anthropic instrumentations on a provider whose exporter sits
    behind a CostSpanProcessor; costspan's own instrumentor is not installed."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(CostSpanProcessor(SimpleSpanProcessor(exporter)))
    official = OfficialOpenAI()
    official.instrument(tracer_provider=provider)
    claude = AnthropicInstrumentor()
    claude.instrument(tracer_provider=provider)
    yield Pipeline(provider, exporter)
    official.uninstrument()
    claude.uninstrument()
    provider.shutdown()


Call = Callable[..., object]


@pytest.fixture(name="call")
def _call(server: OpenAICompatibleServer, pipeline: Pipeline) -> Iterator[Call]:
    """``call(kind)`` makes one call of that kind with real clients (the anthropic SDK's own
    spans go to the same provider)."""
    oai = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    claude = anthropic.Anthropic(
        base_url=server.anthropic_base_url,
        api_key="k",
        max_retries=0,
        open_telemetry={"tracer_provider": pipeline.provider},
    )

    def call(kind: str, max_tokens: int = MAX_TOKENS, stream: bool = False) -> object:
        if kind == "openai" and stream:
            chunks = oai.chat.completions.create(
                model=MODELS[kind],
                messages=USER,
                max_completion_tokens=max_tokens,
                extra_headers=LONG,
                stream=True,
                stream_options={"include_usage": True},
            )
            return list(chunks)
        if kind == "openai":
            return oai.chat.completions.create(
                model=MODELS[kind],
                messages=USER,
                max_completion_tokens=max_tokens,
                extra_headers=LONG,
            )
        question: list[anthropic.types.MessageParam] = [
            {"role": "user", "content": "What is the capital of France?"}
        ]
        if stream:
            events = claude.messages.create(
                model=MODELS[kind],
                max_tokens=max_tokens,
                messages=question,
                extra_headers=LONG,
                stream=True,
            )
            return list(events)
        return claude.messages.create(
            model=MODELS[kind], max_tokens=max_tokens, messages=question, extra_headers=LONG
        )

    yield call
    oai.close()
    claude.close()


def _until_refused(call: Call, kind: str, n: int = 40) -> list[str]:
    """Make up to n calls; the outcome of each ("sent" or "refused")."""
    outcomes: list[str] = []
    for _ in range(n):
        try:
            call(kind)
            outcomes.append("sent")
        except BudgetExceeded:
            outcomes.append("refused")
    return outcomes


def _one_counted_span_per_call(kind: str, pipeline: Pipeline, sent: int) -> None:
    """Each call sent has exactly one span with cost; the anthropic SDK's own span of the call
    is marked as counted on it."""
    counted = pipeline.counted()
    assert len(counted) == sent
    assert all(attrs(s)["gen_ai.request.model"] == MODELS[kind] for s in counted)
    if kind == "anthropic":
        marked = pipeline.marked()
        assert len(marked) == sent
        ids = {f"{s.context.span_id:016x}": s for s in counted}  # pyright: ignore[reportOptionalMemberAccess]
        for span in marked:
            assert span.name == "anthropic.messages.create"
            owner = ids[attrs(span)["costspan.cost.counted_on"]]
            assert span.parent is not None
            assert span.parent.span_id == owner.context.span_id  # pyright: ignore[reportOptionalMemberAccess]
            assert "gen_ai.usage.cost.amount" not in attrs(span)
            assert attrs(span)["gen_ai.usage.output_tokens"] > 0  # it had usage, not counted
    else:
        assert pipeline.marked() == []


@pytest.mark.parametrize("kind", KINDS)
def test_a_block_budget_refuses_before_sending_once_its_room_is_gone(
    kind: str, call: Call, server: OpenAICompatibleServer, pipeline: Pipeline
) -> None:
    """Calls go through while the budget has room for their worst case, then every call is
    refused by BudgetExceeded raised from the span's start, and none of those is sent."""
    costspan.configure(default_max_output_tokens=1024)
    cap = CAPS[kind]
    with costspan.budget(usd=cap, name="request") as b:
        outcomes = _until_refused(call, kind)
    sent = outcomes.count("sent")
    assert sent >= 3, outcomes
    assert outcomes == ["sent"] * sent + ["refused"] * (len(outcomes) - sent)
    assert len(server.requests) == sent  # nothing past the room was sent
    assert b.spent_usd == pipeline.charged()
    assert b.spent_usd <= cap
    assert b.remaining_usd == cap - b.spent_usd  # no hold left behind
    _one_counted_span_per_call(kind, pipeline, sent)
    refused = pipeline.refused()
    assert len(refused) == len(outcomes) - sent
    for span in refused:
        assert attrs(span)["error.type"] == "BudgetExceeded"
        assert attrs(span)["costspan.budget.refused_by"] == "request"
        assert attrs(span)["costspan.budget.estimate_usd"] > 0
        assert "gen_ai.usage.cost.amount" not in attrs(span)
    last = pipeline.counted()[-1]
    assert attrs(last)["costspan.budget.ids"] == ("request",)
    assert attrs(last)["costspan.budget.decision"] == "allow"
    assert attrs(last)["costspan.budget.remaining_usd"] == float(cap - b.spent_usd)


@pytest.mark.parametrize("kind", KINDS)
def test_a_per_user_limit_on_redis_stops_that_user_only(
    kind: str,
    call: Call,
    server: OpenAICompatibleServer,
    pipeline: Pipeline,
    redis_server: RedisServer,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    """COSTSPAN_LIMITS 'user.id $X/day' on a real Redis: one user's calls stop at the cap
    (nothing sent past it), the ledger holds exactly what their counted spans cost, and
    another user still gets through."""
    ledger = open_engine("redis", request, tmp_path)  # on redis_server, flushed
    assert redis_server.url in repr(ledger)
    set_ledger(ledger)
    try:
        cap = CAPS[kind]
        costspan.configure(limits=f"user.id ${cap}/day", default_max_output_tokens=1024)
        with costspan.tags({"user.id": "u-1"}):
            outcomes = _until_refused(call, kind)
            (applied,) = settings().limits.applied(trace_id=1)
        sent = outcomes.count("sent")
        assert sent >= 3, outcomes
        assert outcomes == ["sent"] * sent + ["refused"] * (len(outcomes) - sent)
        assert len(server.requests) == sent
        state = ledger.snapshot(applied.key)
        assert usd(state.spent_micros) == pipeline.charged()
        assert state.spent_micros <= micros(cap)
        assert state.held_micros == 0
        assert all(attrs(s)["user.id"] == "u-1" for s in pipeline.counted())
        _one_counted_span_per_call(kind, pipeline, sent)
        with costspan.tags({"user.id": "u-2"}):
            call(kind)
        assert len(server.requests) == sent + 1
    finally:
        set_ledger(None)
        ledger.close()


@pytest.mark.parametrize("kind", KINDS)
def test_twenty_threads_never_overspend(
    kind: str, call: Call, server: OpenAICompatibleServer, pipeline: Pipeline
) -> None:
    """20 threads x 5 calls under one block budget: some refused, spend never past the cap and
    exactly the counted spans' costs, one counted span per call sent, no hold left."""
    costspan.configure(default_max_output_tokens=1024)
    cap = CAPS[kind] * 3
    outcomes: list[str] = []

    def worker() -> None:
        outcomes.extend(_until_refused(call, kind, 5))

    with costspan.budget(usd=cap) as b, ThreadPoolExecutor(20) as pool:
        futures = [pool.submit(contextvars.copy_context().run, worker) for _ in range(20)]
        for future in futures:
            future.result()
    sent = outcomes.count("sent")
    assert "refused" in outcomes, "the cap never bound: the test proves nothing"
    assert sent >= 5
    assert len(server.requests) == sent
    assert b.spent_usd == pipeline.charged()
    assert b.spent_usd <= cap
    assert b.spent_usd > cap / 4  # the budget was used, not refused wholesale
    assert b.remaining_usd == cap - b.spent_usd
    _one_counted_span_per_call(kind, pipeline, sent)


@pytest.mark.parametrize("kind", KINDS)
def test_streams_are_gated_and_charged(kind: str, call: Call, pipeline: Pipeline) -> None:
    """A streamed call is charged when its stream ends, like a plain one."""
    with costspan.budget(usd="1") as b:
        call(kind, stream=True)
        call(kind, stream=True)
    assert len(pipeline.counted()) == 2
    assert b.spent_usd == pipeline.charged() > 0
    assert b.remaining_usd == 1 - b.spent_usd


def test_the_sdk_span_tightens_the_hold_to_its_max_tokens(call: Call, pipeline: Pipeline) -> None:
    """The Anthropic instrumentation's span starts without max_tokens (a default cap is held);
    the SDK's own span inside it carries it, and the call's hold is replaced by the tighter one
    before the request is sent."""
    with costspan.budget(usd="1"):
        call("anthropic", max_tokens=50)
    (span,) = pipeline.counted()
    assert attrs(span)["costspan.budget.estimate_basis"] == ("output:max_tokens", "input:start")
    held = Decimal(repr(attrs(span)["costspan.budget.estimate_usd"]))
    # claude-haiku-4-5: $1 / $5 per million tokens; START_INPUT_TOKENS in, 50 out.
    assert held == Decimal(gate.START_INPUT_TOKENS) / 10**6 + Decimal(50 * 5) / 10**6


def test_the_gate_can_be_turned_off_and_spans_are_still_charged(
    call: Call, server: OpenAICompatibleServer, pipeline: Pipeline
) -> None:
    """COSTSPAN_GATE_FOREIGN_SPANS=false: nothing is refused, every call is charged."""
    costspan.configure(gate_foreign_spans=False)
    with costspan.budget(usd="0.0005") as b:
        outcomes = _until_refused(call, "openai", 10)
    assert outcomes == ["sent"] * 10
    assert len(server.requests) == 10
    assert b.spent_usd == pipeline.charged() > Decimal("0.0005")
    assert all("costspan.budget.decision" not in attrs(s) for s in pipeline.counted())


def test_calls_outside_budgets_are_priced_and_charged_to_nothing(
    call: Call, pipeline: Pipeline
) -> None:
    """Without a budget or limit nothing is reserved: the span is priced, recorded and exported."""
    call("openai")
    call("anthropic")
    assert len(pipeline.counted()) == 2
    assert all("costspan.budget.ids" not in attrs(s) for s in pipeline.counted())
    assert len(costspan.report().records) == 2  # the marked SDK span is not a second record
    assert len(gate.CALLS) == 0  # nothing kept once the spans ended


async def test_async_clients_are_refused_and_read_their_spend_on_return(
    server: OpenAICompatibleServer, pipeline: Pipeline, tmp_path: Path
) -> None:
    """Async official OpenAI calls on a SQLite ledger (one that blocks): refused before being
    sent, and the budget's spend includes each call as soon as it returns."""
    ledger = FailSafeLedger(SQLiteLedger(tmp_path / "ledger.db"), "local")
    set_ledger(ledger)
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    try:
        costspan.configure(default_max_output_tokens=1024)
        sent = 0
        with costspan.budget(usd=CAPS["openai"]) as b:
            for _ in range(30):
                try:
                    await client.chat.completions.create(
                        model=MODELS["openai"],
                        messages=USER,
                        max_completion_tokens=MAX_TOKENS,
                        extra_headers=LONG,
                    )
                except BudgetExceeded:
                    break
                sent += 1
                assert b.spent_usd == pipeline.charged()
        assert 3 <= sent < 30
        assert len(server.requests) == sent
    finally:
        await client.close()
        set_ledger(None)
        ledger.close()


@pytest.mark.parametrize("outer", ["official", "costspan"])
def test_two_instrumentations_of_one_client_count_each_call_once(
    outer: str, server: OpenAICompatibleServer, pipeline: Pipeline
) -> None:
    """costspan's instrumentor and the official one on the same client, in either order: two
    spans per call, costspan's carries the cost and is charged; the official one is marked as
    counted on it and holds nothing once costspan's span starts."""
    official = OfficialOpenAI()
    if outer == "official":  # the last to wrap the client is the outermost
        official.uninstrument()
        costspan.instrument(tracer_provider=pipeline.provider)
        official.instrument(tracer_provider=pipeline.provider)
    else:
        costspan.instrument(tracer_provider=pipeline.provider)
    client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    try:
        with costspan.budget(usd="1") as b:
            for _ in range(3):
                client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    finally:
        client.close()
        costspan.uninstrument()
    spans = pipeline.spans()
    assert len(spans) == 6
    counted, marked = pipeline.counted(), pipeline.marked()
    assert len(counted) == 3
    assert len(marked) == 3
    assert all(s.instrumentation_scope.name == "costspan" for s in counted)  # pyright: ignore[reportOptionalMemberAccess]
    ids = {f"{s.context.span_id:016x}" for s in counted}  # pyright: ignore[reportOptionalMemberAccess]
    assert {attrs(s)["costspan.cost.counted_on"] for s in marked} == ids
    assert b.spent_usd == pipeline.charged()
    assert b.remaining_usd == 1 - b.spent_usd
    assert len(costspan.report().records) == 3


def test_a_framework_span_around_two_instrumentations_points_at_the_one_counted_span(
    server: OpenAICompatibleServer, pipeline: Pipeline
) -> None:
    """A framework's own ``chat`` span around a call traced by the official instrumentation
    (outer) and costspan's (inner): three GenAI spans, only costspan's carries cost, and both
    others name it in costspan.cost.counted_on; the framework span's hold is released."""
    official = OfficialOpenAI()
    official.uninstrument()
    costspan.instrument(tracer_provider=pipeline.provider)
    official.instrument(tracer_provider=pipeline.provider)
    client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    framework = pipeline.provider.get_tracer("some.agent.framework")
    start = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
    }
    try:
        with (
            costspan.budget(usd="1") as b,
            framework.start_as_current_span("chat gpt-4o-mini", attributes=start),
        ):
            client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    finally:
        client.close()
        costspan.uninstrument()
    (counted,) = pipeline.counted()
    assert counted.instrumentation_scope is not None
    assert counted.instrumentation_scope.name == "costspan"
    marked = pipeline.marked()
    assert len(marked) == 2
    assert {attrs(s)["costspan.cost.counted_on"] for s in marked} == {
        f"{counted.context.span_id:016x}"  # pyright: ignore[reportOptionalMemberAccess]
    }
    assert b.spent_usd == pipeline.charged()
    assert b.remaining_usd == 1 - b.spent_usd


def test_two_cost_processors_on_one_provider_charge_once(server: OpenAICompatibleServer) -> None:
    """Two exporters, each behind its own CostSpanProcessor (as the auto-launch configurator
    builds them): each exports the priced span, the budget is charged once."""
    first, second = InMemorySpanExporter(), InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(CostSpanProcessor(SimpleSpanProcessor(first)))
    provider.add_span_processor(CostSpanProcessor(SimpleSpanProcessor(second)))
    official = OfficialOpenAI()
    official.instrument(tracer_provider=provider)
    client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    try:
        with costspan.budget(usd="1") as b:
            client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    finally:
        client.close()
        official.uninstrument()
        provider.shutdown()
    (a,), (c,) = first.get_finished_spans(), second.get_finished_spans()
    assert attrs(a)["gen_ai.usage.cost.amount"] == attrs(c)["gen_ai.usage.cost.amount"] > 0
    assert b.spent_usd == usd(micros(Decimal(repr(attrs(a)["gen_ai.usage.cost.amount"]))))
    assert len(costspan.report().records) == 1


def test_the_sdk_alone_cannot_be_refused_but_is_charged(
    server: OpenAICompatibleServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The anthropic SDK's own span with no instrumentation around it: the SDK swallows errors
    raised while its span starts, so a call without room cannot be refused; it goes on, is
    charged, is marked ``unenforced``, and costspan says so once."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(CostSpanProcessor(SimpleSpanProcessor(exporter)))
    client = anthropic.Anthropic(
        base_url=server.anthropic_base_url,
        api_key="k",
        max_retries=0,
        open_telemetry={"tracer_provider": provider},
    )
    try:
        with caplog.at_level(logging.WARNING), costspan.budget(usd="0.0001") as b:
            for _ in range(2):
                client.messages.create(
                    model="claude-haiku-4-5",
                    max_tokens=100,
                    messages=[{"role": "user", "content": "hi"}],
                )
    finally:
        client.close()
        provider.shutdown()
    spans = exporter.get_finished_spans()
    assert len(server.requests) == 2
    assert [attrs(s)["costspan.budget.decision"] for s in spans] == ["unenforced"] * 2
    assert b.spent_usd == sum(
        (usd(micros(Decimal(repr(attrs(s)["gen_ai.usage.cost.amount"])))) for s in spans),
        Decimal(0),
    )
    assert caplog.text.count("could not refuse a call traced by com.anthropic.sdk.python") == 1


class Broken(SQLiteLedger):
    """A real SQLite engine whose reserve fails with the error under test."""

    error: BaseException = RuntimeError("something costspan did not expect")

    def reserve(
        self, rid: str, scopes: Sequence[ScopeLimit], usd_micros: int, tokens: int, lease_s: float
    ) -> Reservation:
        raise self.error


@pytest.mark.parametrize("mode", ["closed", "open", "local"])
def test_a_failing_ledger_is_decided_by_the_fail_mode(
    mode: Any, call: Call, server: OpenAICompatibleServer, pipeline: Pipeline, tmp_path: Path
) -> None:
    """A ledger error at span start: closed refuses (BudgetUnavailable, nothing sent), open
    sends unchecked and still charges, local holds the cap in this process's own counters."""
    ledger = FailSafeLedger(Broken(tmp_path / "ledger.db"), mode, probe_interval_s=60)
    set_ledger(ledger)
    try:
        costspan.configure(default_max_output_tokens=1024)
        with costspan.budget(usd=CAPS["openai"]):
            outcomes: list[str] = []
            for _ in range(20):
                try:
                    call("openai")
                    outcomes.append("sent")
                except BudgetUnavailable:
                    outcomes.append("unavailable")
                except BudgetExceeded:
                    outcomes.append("refused")
    finally:
        set_ledger(None)
        ledger.engine.close()
    sent = outcomes.count("sent")
    assert len(server.requests) == sent
    if mode == "closed":
        assert outcomes == ["unavailable"] * 20
        assert all(attrs(s)["costspan.ledger.fail_mode"] == "closed" for s in pipeline.refused())
    elif mode == "open":
        assert outcomes == ["sent"] * 20
        assert {attrs(s)["costspan.budget.decision"] for s in pipeline.counted()} == {"unchecked"}
    else:
        assert 3 <= sent < 20
        assert "refused" in outcomes
        assert {attrs(s)["costspan.ledger.fail_mode"] for s in pipeline.counted()} == {"local"}


def test_what_is_kept_per_span_is_bounded(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Spans that never end do not pile up: past the limit the oldest is forgotten and its hold
    released (the budget gets its room back), with one warning."""
    monkeypatch.setattr(gate.CALLS, "limit", 2)
    tracer = pipeline.provider.get_tracer("some.instrumentation")
    start = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.request.max_tokens": 100,
    }
    with caplog.at_level(logging.WARNING), costspan.budget(usd="1") as b:
        spans = [tracer.start_span("chat gpt-4o-mini", attributes=start)]
        assert b.remaining_usd is not None
        hold = 1 - b.remaining_usd
        assert hold > 0
        spans += [tracer.start_span("chat gpt-4o-mini", attributes=start) for _ in range(2)]
        assert len(gate.CALLS) == 2
        assert b.remaining_usd == 1 - 2 * hold  # the first span's hold went with it
        for span in spans:
            span.set_status(Status(StatusCode.ERROR, "failed"))
            span.end()
    assert "tracks at most 2 open GenAI spans" in caplog.text
    assert b.remaining_usd == 1  # failed without usage: released, nothing charged
    assert len(gate.CALLS) == 0


def test_captured_content_is_the_input_estimate(pipeline: Pipeline) -> None:
    """An instrumentation that puts the messages on the span at start: the hold counts them
    (a long prompt holds more than a short one), not the starting bound."""
    tracer = pipeline.provider.get_tracer("content.instrumentation")

    def held(words: int) -> tuple[float, Any]:
        messages = (
            f'[{{"role": "user", "parts": [{{"type": "text", "content": "{"word " * words}"}}]}}]'
        )
        with costspan.budget(usd="10"):
            tracer.start_span(
                "chat gpt-4o",
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "gpt-4o",
                    "gen_ai.request.max_tokens": 10,
                    "gen_ai.input.messages": messages,
                },
            ).end()
        span = pipeline.spans()[-1]
        return attrs(span).get("costspan.budget.estimate_usd", 0.0), attrs(span)

    short, _ = held(10)
    long, _ = held(20_000)
    assert long > short
    # gpt-4o input is $2.5 per million tokens: 20,000 words are at least 20,000 tokens.
    assert long >= 20_000 * 2.5 / 10**6


def test_an_unrelated_exception_in_the_gate_never_reaches_the_caller(
    call: Call, pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in the gate outside admission is logged; the call and its span go on."""

    def broken(*_: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(gate, "start", broken)
    call("openai")
    assert len(pipeline.spans()) == 1


def test_asyncio_anthropic_refusal(server: OpenAICompatibleServer, pipeline: Pipeline) -> None:
    """The async anthropic client under the official instrumentation: refused before sending."""
    client = anthropic.AsyncAnthropic(
        base_url=server.anthropic_base_url,
        api_key="k",
        max_retries=0,
        open_telemetry={"tracer_provider": pipeline.provider},
    )

    async def run() -> str:
        try:
            await client.messages.create(
                model="claude-haiku-4-5",
                max_tokens=100,
                messages=[{"role": "user", "content": "hi"}],
            )
        except BudgetExceeded:
            return "refused"
        finally:
            await client.close()
        return "sent"

    with costspan.budget(usd="0.0001"):
        assert asyncio.run(run()) == "refused"
    assert server.requests == []


def test_a_call_sent_without_usage_is_charged_what_it_held(pipeline: Pipeline) -> None:
    """A span that ends well but reports no usage was sent and may have been billed: the budget
    is charged its hold (never nothing), and the span says the usage is missing."""
    tracer = pipeline.provider.get_tracer("some.instrumentation")
    start = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.request.max_tokens": 100,
    }
    with costspan.budget(usd="1") as b:
        tracer.start_span("chat gpt-4o-mini", attributes=start).end()
    (span,) = pipeline.spans()
    held = Decimal(repr(attrs(span)["costspan.budget.estimate_usd"]))
    assert attrs(span)["costspan.usage.missing"] is True
    assert "gen_ai.usage.cost.amount" not in attrs(span)
    assert b.spent_usd == usd(micros(held)) > 0


def test_an_unpriced_model_is_refused_when_asked(pipeline: Pipeline) -> None:
    """COSTSPAN_ON_UNPRICED=raise under a budget: a model without a price is refused at span
    start with UnpricedModelError, as costspan's own calls are."""
    costspan.configure(on_unpriced="raise")
    tracer = pipeline.provider.get_tracer("some.instrumentation")
    start = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "acme-support-7b"}
    with costspan.budget(usd="1"), pytest.raises(costspan.UnpricedModelError):
        tracer.start_span("chat acme-support-7b", attributes=start)
    (span,) = pipeline.refused()
    assert attrs(span)["error.type"] == "UnpricedModelError"
