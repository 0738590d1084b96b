"""CostSpanProcessor: attribution from baggage, and cost for spans of other instrumentations."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from genai_prices import Usage, calc_price
from opentelemetry import baggage, context
from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor as OfficialInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import costspan
from costspan import CostSpanProcessor
from tests.conftest import USER, attrs, only_span


@pytest.fixture(name="priced_exporter")
def _priced_exporter() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(CostSpanProcessor(SimpleSpanProcessor(exporter)))
    yield provider, exporter
    provider.shutdown()


def test_official_instrumentation_spans_leave_priced(
    priced_exporter: tuple[TracerProvider, InMemorySpanExporter], client: openai.OpenAI
) -> None:
    """A span from opentelemetry-instrumentation-genai-openai is exported with cost."""
    provider, exporter = priced_exporter
    official = OfficialInstrumentor()
    official.instrument(tracer_provider=provider)
    try:
        result = client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    finally:
        official.uninstrument()
    span = only_span(exporter)
    recorded = attrs(span)
    assert span.instrumentation_scope is not None
    assert "costspan" not in span.instrumentation_scope.name
    assert result.usage is not None
    expected = calc_price(
        Usage(
            input_tokens=result.usage.prompt_tokens, output_tokens=result.usage.completion_tokens
        ),
        result.model,
        provider_id="openai",
    )
    assert recorded["gen_ai.usage.cost.amount"] == pytest.approx(
        float(expected.total_price), abs=1e-12
    )
    assert recorded["gen_ai.usage.cost.source"] == "local"
    assert recorded["gen_ai.usage.input_tokens"] == result.usage.prompt_tokens
    # Its spend is in the records too, so reports cover every instrumentation.
    (record,) = costspan.report().records
    assert record.usd == expected.total_price
    assert record.response_model == result.model
    assert record.span_id == f"{span.context.span_id:016x}"  # pyright: ignore[reportOptionalMemberAccess]


def test_baggage_attribution_lands_on_every_span(
    priced_exporter: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """Configured baggage keys are copied onto spans; others and oversized values are not."""
    provider, exporter = priced_exporter
    ctx = baggage.set_baggage("user.id", "u-42")
    ctx = baggage.set_baggage("feature", "search", context=ctx)
    ctx = baggage.set_baggage("secret.token", "nope", context=ctx)
    ctx = baggage.set_baggage("tenant.id", "t" * 1000, context=ctx)
    token = context.attach(ctx)
    try:
        with provider.get_tracer("app").start_as_current_span("handler"):
            pass
    finally:
        context.detach(token)
    recorded = attrs(only_span(exporter))
    assert recorded == {"user.id": "u-42", "feature": "search"}


def test_attribution_keys_are_configurable(
    priced_exporter: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """COSTSPAN_ATTRIBUTION_KEYS / attribution_keys choose which entries are copied."""
    costspan.configure(attribution_keys=["team"])
    provider, exporter = priced_exporter
    token = context.attach(baggage.set_baggage("team", "core", baggage.set_baggage("user.id", "u")))
    try:
        with provider.get_tracer("app").start_as_current_span("handler"):
            pass
    finally:
        context.detach(token)
    assert attrs(only_span(exporter)) == {"team": "core"}


def test_non_genai_spans_pass_through_untouched() -> None:
    """An ordinary span reaches the exporter as the very same object."""
    seen: list[ReadableSpan] = []

    class Recorder(SpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            seen.append(span)

    processor = CostSpanProcessor(Recorder())
    span = ReadableSpan("db query", attributes={"db.system": "postgresql"})
    processor.on_end(span)
    assert seen == [span]
    assert seen[0] is span


def test_genai_span_without_usage_is_not_priced() -> None:
    """A failed GenAI span (no usage) is forwarded without cost attributes."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(CostSpanProcessor(SimpleSpanProcessor(exporter)))
    with provider.get_tracer("other").start_as_current_span(
        "chat gpt-4o",
        attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"},
    ):
        pass
    assert "gen_ai.usage.cost.amount" not in attrs(only_span(exporter))


def test_foreign_span_with_cache_write_name_from_the_genai_repo() -> None:
    """gen_ai.usage.cache_write.input_tokens (the unreleased name) is priced as a cache write."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(CostSpanProcessor(SimpleSpanProcessor(exporter)))
    with provider.get_tracer("other").start_as_current_span(
        "chat claude-sonnet-4-5",
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": "claude-sonnet-4-5",
            "gen_ai.usage.input_tokens": 2000,
            "gen_ai.usage.cache_write.input_tokens": 1500,
            "gen_ai.usage.output_tokens": 100,
        },
    ):
        pass
    expected = calc_price(
        Usage(input_tokens=2000, cache_write_tokens=1500, output_tokens=100),
        "claude-sonnet-4-5",
        provider_id="anthropic",
    )
    assert attrs(only_span(exporter))["gen_ai.usage.cost.amount"] == pytest.approx(
        float(expected.total_price), abs=1e-12
    )


class Exploding(SpanProcessor):
    def on_start(self, span: Span, parent_context: context.Context | None = None) -> None:
        raise RuntimeError("boom")

    def on_end(self, span: ReadableSpan) -> None:
        raise RuntimeError("boom")


def test_processor_never_raises_into_user_code(caplog: pytest.LogCaptureFixture) -> None:
    """Even a failing processor behind it cannot break the caller's span block."""
    provider = TracerProvider()
    provider.add_span_processor(CostSpanProcessor(Exploding()))
    with provider.get_tracer("app").start_as_current_span("work"):
        pass
    assert "failed in on_start" in caplog.text
    assert "failed in on_end" in caplog.text


def test_instrument_installs_one_processor_per_provider(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter, client: openai.OpenAI
) -> None:
    """costspan.instrument() adds attribution to the provider it is given, once."""
    costspan.instrument(tracer_provider=tracer_provider)
    costspan.uninstrument()
    costspan.instrument(tracer_provider=tracer_provider)
    token = context.attach(baggage.set_baggage("user.id", "u-7"))
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    finally:
        context.detach(token)
        costspan.uninstrument()
    processors = tracer_provider._active_span_processor._span_processors
    assert sum(isinstance(p, CostSpanProcessor) for p in processors) == 1
    assert attrs(only_span(span_exporter))["user.id"] == "u-7"
