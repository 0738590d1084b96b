"""Embeddings and legacy Completions calls are instrumented."""

from __future__ import annotations

import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.conftest import attrs, only_span

pytestmark = pytest.mark.usefixtures("instrumented")


def test_embeddings_span(client: openai.OpenAI, span_exporter: InMemorySpanExporter) -> None:
    """An embeddings call records input tokens and the vector size; no output tokens."""
    result = client.embeddings.create(
        model="text-embedding-3-small", input=["first text", "second"], dimensions=256
    )
    span = only_span(span_exporter)
    recorded = attrs(span)
    assert span.name == "embeddings text-embedding-3-small"
    assert len(result.data[0].embedding) == 256
    assert recorded["gen_ai.operation.name"] == "embeddings"
    assert recorded["gen_ai.embeddings.dimension.count"] == 256
    assert recorded["gen_ai.usage.input_tokens"] == result.usage.prompt_tokens
    assert recorded["gen_ai.response.model"] == "text-embedding-3-small"
    assert "gen_ai.usage.output_tokens" not in recorded
    assert "openai.api.type" not in recorded


async def test_async_embeddings_with_encoding_format(
    async_client: openai.AsyncOpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """An explicit encoding format is a request attribute."""
    await async_client.embeddings.create(
        model="text-embedding-3-small", input="x", encoding_format="float"
    )
    assert attrs(only_span(span_exporter))["gen_ai.request.encoding_formats"] == ("float",)


def test_legacy_completion_span(client: openai.OpenAI, span_exporter: InMemorySpanExporter) -> None:
    """Legacy completions are text_completion spans with usage."""
    result = client.completions.create(
        model="gpt-3.5-turbo-instruct", prompt="Say hi", max_tokens=5
    )
    span = only_span(span_exporter)
    recorded = attrs(span)
    assert span.name == "text_completion gpt-3.5-turbo-instruct"
    assert result.usage is not None
    assert recorded["gen_ai.request.max_tokens"] == 5
    assert recorded["gen_ai.response.finish_reasons"] == ("length",)
    assert recorded["gen_ai.usage.output_tokens"] == result.usage.completion_tokens


async def test_async_legacy_completion(
    async_client: openai.AsyncOpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """AsyncCompletions.create (legacy) is wrapped."""
    await async_client.completions.create(model="gpt-3.5-turbo-instruct", prompt="hi")
    assert only_span(span_exporter).name == "text_completion gpt-3.5-turbo-instruct"
