"""Responses API calls become chat spans with openai.api.type=responses."""

from __future__ import annotations

import inspect
import json

import openai
import pytest
from openai.resources.responses.responses import Responses
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel

import costspan
from costspan.testing import OpenAICompatibleServer
from tests.conftest import attrs, only_span

pytestmark = pytest.mark.usefixtures("instrumented")


def test_plain_response_span(client: openai.OpenAI, span_exporter: InMemorySpanExporter) -> None:
    """responses.create gives usage with reasoning tokens, ids and a finish reason."""
    response = client.responses.create(
        model="gpt-5", input="Summarise the news", max_output_tokens=500, temperature=0.5
    )
    span = only_span(span_exporter)
    recorded = attrs(span)
    assert span.name == "chat gpt-5"
    assert response.usage is not None
    assert recorded["openai.api.type"] == "responses"
    assert recorded["gen_ai.request.max_tokens"] == 500
    assert recorded["gen_ai.request.temperature"] == 0.5
    assert recorded["gen_ai.response.id"] == response.id
    assert recorded["gen_ai.response.model"] == "gpt-5-2025-08-07"
    assert recorded["gen_ai.response.finish_reasons"] == ("stop",)
    assert recorded["gen_ai.usage.input_tokens"] == response.usage.input_tokens
    assert recorded["gen_ai.usage.output_tokens"] == response.usage.output_tokens
    assert recorded["gen_ai.usage.reasoning.output_tokens"] == (
        response.usage.output_tokens_details.reasoning_tokens
    )


def test_incomplete_response_reports_length(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """A response cut by max_output_tokens has finish reason "length"."""
    response = client.responses.create(model="gpt-4o", input="Tell me a story", max_output_tokens=3)
    assert response.status == "incomplete"
    assert attrs(only_span(span_exporter))["gen_ai.response.finish_reasons"] == ("length",)


def test_conversation_id_is_recorded(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter, server: OpenAICompatibleServer
) -> None:
    """A conversation id given on the request lands on gen_ai.conversation.id. An openai
    without the parameter (before 1.101) raises its own TypeError, untouched, and sends
    nothing."""
    if "conversation" not in inspect.signature(Responses.create).parameters:
        with pytest.raises(TypeError, match="unexpected keyword argument 'conversation'"):
            client.responses.create(model="gpt-4o-mini", input="hi", conversation="conv_123")
        assert server.requests == []
        return
    client.responses.create(model="gpt-4o-mini", input="hi", conversation="conv_123")
    assert attrs(only_span(span_exporter))["gen_ai.conversation.id"] == "conv_123"


def test_create_stream_true_reports_usage_from_completed_event(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """Responses streams carry usage in response.completed; no injection is needed."""
    events = list(client.responses.create(model="gpt-4o-mini", input="hi", stream=True))
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.usage is not None
    recorded = attrs(only_span(span_exporter))
    assert "costspan.stream.usage_injected" not in recorded
    assert recorded["gen_ai.usage.output_tokens"] == completed.response.usage.output_tokens
    assert recorded["gen_ai.response.id"] == completed.response.id
    assert recorded["costspan.stream.outcome"] == "completed"


def test_stream_helper_gives_one_span(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """responses.stream() is covered through create(): one span, not two."""
    with client.responses.stream(model="gpt-4o", input="stream me") as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    recorded = attrs(only_span(span_exporter))
    assert final.usage is not None
    assert recorded["gen_ai.usage.input_tokens"] == final.usage.input_tokens
    assert recorded["gen_ai.request.stream"] is True


async def test_async_stream_helper(
    async_client: openai.AsyncOpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """The async stream() helper is covered the same way."""
    async with async_client.responses.stream(model="gpt-4o", input="stream me") as stream:
        async for _ in stream:
            pass
    assert attrs(only_span(span_exporter))["gen_ai.usage.output_tokens"] > 0


class Answer(BaseModel):
    city: str


def test_parse_is_instrumented(client: openai.OpenAI, span_exporter: InMemorySpanExporter) -> None:
    """responses.parse() posts directly and still gives one span marked json output."""
    response = client.responses.parse(model="gpt-4o", input="Where?", text_format=Answer)
    assert isinstance(response.output_parsed, Answer)
    recorded = attrs(only_span(span_exporter))
    assert recorded["gen_ai.output.type"] == "json"
    assert recorded["gen_ai.usage.output_tokens"] > 0


async def test_async_create(
    async_client: openai.AsyncOpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """AsyncResponses.create is wrapped."""
    await async_client.responses.create(model="gpt-4o-mini", input="hi")
    assert only_span(span_exporter).name == "chat gpt-4o-mini"


def test_instructions_are_system_instructions_when_capturing(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """With content capture on, Responses instructions go to gen_ai.system_instructions."""
    costspan.configure(capture_content=True)
    client.responses.create(model="gpt-4o-mini", input="hi", instructions="Be brief.")
    recorded = attrs(only_span(span_exporter))
    assert json.loads(recorded["gen_ai.system_instructions"]) == [
        {"type": "text", "content": "Be brief."}
    ]
    assert json.loads(recorded["gen_ai.input.messages"])[0]["role"] == "user"
    assert json.loads(recorded["gen_ai.output.messages"])[0]["finish_reason"] == "stop"
