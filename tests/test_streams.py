"""Streams end their span however they end, and usage injection stays invisible to callers."""

from __future__ import annotations

import gc
import json
from typing import Any

import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import costspan
from costspan.testing import OpenAICompatibleServer
from tests.conftest import USER, attrs, chat_helpers, only_span
from tests.transport import answering, http_package

pytestmark = pytest.mark.usefixtures("instrumented")


def test_consumed_stream_reports_usage_and_outcome(
    client: openai.OpenAI, server: OpenAICompatibleServer, span_exporter: InMemorySpanExporter
) -> None:
    """A fully read chat stream ends its span with the provider's usage and TTFC."""
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    span = only_span(span_exporter)
    recorded = attrs(span)
    assert server.requests[-1].body["stream_options"] == {"include_usage": True}
    assert recorded["gen_ai.request.stream"] is True
    assert recorded["costspan.stream.usage_injected"] is True
    assert recorded["costspan.stream.outcome"] == "completed"
    assert recorded["costspan.stream.output_chars"] == len(text)
    assert recorded["gen_ai.usage.input_tokens"] > 0
    assert recorded["gen_ai.usage.output_tokens"] > 0
    assert recorded["gen_ai.response.finish_reasons"] == ("stop",)
    assert recorded["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert 0 < recorded["gen_ai.response.time_to_first_chunk"] < 5
    assert "costspan.usage.missing" not in recorded
    assert span.status.status_code is StatusCode.UNSET


def test_injected_usage_chunk_is_hidden_from_choices_zero_callers(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """Code written for streams without usage (chunk.choices[0]) keeps working."""
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True)
    chunks = list(stream)
    assert all(chunk.choices for chunk in chunks)
    assert [c.choices[0].delta.content for c in chunks[:1]] == [""]
    assert all(chunk.usage is None for chunk in chunks)
    assert attrs(only_span(span_exporter))["gen_ai.usage.output_tokens"] > 0


def test_caller_who_asked_for_usage_still_sees_the_usage_chunk(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """Nothing is hidden or injected when the caller asked for include_usage themselves."""
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=USER,
        stream=True,
        stream_options={"include_usage": True},
    )
    last = list(stream)[-1]
    assert last.choices == []
    assert last.usage is not None
    recorded = attrs(only_span(span_exporter))
    assert recorded["gen_ai.usage.output_tokens"] == last.usage.completion_tokens
    assert "costspan.stream.usage_injected" not in recorded


def test_injection_can_be_switched_off_for_strict_servers(
    span_exporter: InMemorySpanExporter,
) -> None:
    """With injection off, a server that rejects stream_options works; usage is marked missing."""
    costspan.configure(inject_stream_usage=False)
    with OpenAICompatibleServer(reject_stream_options=True) as strict:
        client = openai.OpenAI(base_url=strict.base_url, api_key="k", max_retries=0)
        chunks = list(
            client.chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True)
        )
        assert "stream_options" not in strict.requests[-1].body
    recorded = attrs(only_span(span_exporter))
    assert chunks
    assert recorded["costspan.usage.missing"] is True
    assert recorded["costspan.stream.output_chars"] > 0
    # Never unaccounted: the tokens are counted offline and the span says they are estimates.
    assert recorded["costspan.usage.estimated"] is True
    assert recorded["gen_ai.usage.input_tokens"] > 0
    assert recorded["gen_ai.usage.cost.amount"] > 0


def test_injection_switch_is_read_from_the_environment(
    client: openai.OpenAI, server: OpenAICompatibleServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """COSTSPAN_INJECT_STREAM_USAGE=false turns injection off without code."""
    monkeypatch.setenv("COSTSPAN_INJECT_STREAM_USAGE", "false")
    costspan.configure()
    list(client.chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True))
    assert "stream_options" not in server.requests[-1].body


def test_stream_without_usage_records_missing_usage_and_text_length(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """A server that ignores include_usage leaves the span marked usage-missing, with text size."""
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=USER,
        stream=True,
        extra_headers={"x-costspan-test-omit-usage": "1"},
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream)
    recorded = attrs(only_span(span_exporter))
    assert recorded["costspan.usage.missing"] is True
    assert recorded["costspan.stream.output_chars"] == len(text) > 0


def test_stream_left_early_through_with_block_is_closed(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """Breaking out of a with-block ends the span as closed, no usage, no error."""
    with client.chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True) as stream:
        for _ in stream:
            break
    span = only_span(span_exporter)
    assert attrs(span)["costspan.stream.outcome"] == "closed"
    assert attrs(span)["costspan.usage.missing"] is True
    assert span.status.status_code is StatusCode.UNSET


def test_explicitly_closed_stream_is_closed(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """stream.close() ends the span at once."""
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True)
    next(iter(stream))
    assert span_exporter.get_finished_spans() == ()
    stream.close()
    assert attrs(only_span(span_exporter))["costspan.stream.outcome"] == "closed"


def test_abandoned_stream_ends_when_collected(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """A stream dropped half-read is ended as abandoned when garbage-collected."""
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True)
    next(iter(stream))
    del stream
    gc.collect()
    span = only_span(span_exporter)
    assert attrs(span)["costspan.stream.outcome"] == "abandoned"
    assert attrs(span)["error.type"] == "_OTHER"
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "abandoned stream"


def test_exception_inside_with_block_fails_the_span(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """An exception raised by the caller while streaming is recorded and propagates."""

    def read_then_fail() -> None:
        with client.chat.completions.create(
            model="gpt-4o-mini", messages=USER, stream=True
        ) as stream:
            next(iter(stream))
            raise KeyError("caller bug")

    with pytest.raises(KeyError):
        read_then_fail()
    span = only_span(span_exporter)
    assert attrs(span)["error.type"] == "KeyError"
    assert attrs(span)["costspan.stream.outcome"] == "error"


def test_cut_stream_raises_to_caller_and_keeps_partial_facts(
    client: openai.OpenAI,
    span_exporter: InMemorySpanExporter,
    cut_stream_error: type[BaseException],
) -> None:
    """A connection dropped mid-stream re-raises the error this openai raises without costspan;
    the span names it and keeps what arrived."""
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=USER,
        stream=True,
        extra_headers={"x-costspan-test-cut-after": "4"},
    )
    received: list[str] = []
    with pytest.raises(cut_stream_error) as raised:
        received.extend(c.choices[0].delta.content or "" for c in stream)
    assert type(raised.value) is cut_stream_error
    span = only_span(span_exporter)
    recorded = attrs(span)
    assert span.status.status_code is StatusCode.ERROR
    assert recorded["error.type"] == cut_stream_error.__name__
    assert recorded["costspan.usage.missing"] is True
    assert recorded["costspan.stream.chunks"] == 4
    assert recorded["costspan.stream.output_chars"] == len("".join(received))


async def test_async_stream_consumed(
    async_client: openai.AsyncOpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """An async chat stream read to the end reports usage; usage chunk hidden."""
    stream = await async_client.chat.completions.create(
        model="gpt-4o-mini", messages=USER, stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert all(chunk.choices for chunk in chunks)
    recorded = attrs(only_span(span_exporter))
    assert recorded["costspan.stream.outcome"] == "completed"
    assert recorded["gen_ai.usage.output_tokens"] > 0


async def test_async_stream_closed_early(
    async_client: openai.AsyncOpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """Leaving an async with-block early ends the span as closed."""
    stream = await async_client.chat.completions.create(
        model="gpt-4o-mini", messages=USER, stream=True
    )
    async with stream:
        async for _ in stream:
            break
    assert attrs(only_span(span_exporter))["costspan.stream.outcome"] == "closed"


async def test_async_stream_close_method(
    async_client: openai.AsyncOpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """await stream.close() ends the span as closed."""
    stream = await async_client.chat.completions.create(
        model="gpt-4o-mini", messages=USER, stream=True
    )
    await stream.__anext__()
    await stream.close()
    assert attrs(only_span(span_exporter))["costspan.stream.outcome"] == "closed"


def test_chat_stream_helper_gives_one_span_with_usage(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """chat.completions.stream() goes through create(): one span, and its final completion."""
    with chat_helpers(client).stream(model="gpt-4o-mini", messages=USER) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    recorded = attrs(only_span(span_exporter))
    assert final.choices[0].message.content
    assert recorded["gen_ai.usage.output_tokens"] > 0
    assert recorded["costspan.stream.outcome"] == "completed"


def test_chat_stream_helper_left_early_is_closed_not_abandoned(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """Leaving chat.completions.stream() early closes the response: the span says closed."""
    with chat_helpers(client).stream(model="gpt-4o-mini", messages=USER) as stream:
        for _ in stream:
            break
    del stream
    gc.collect()
    span = only_span(span_exporter)
    assert attrs(span)["costspan.stream.outcome"] == "closed"
    assert span.status.status_code is StatusCode.UNSET


def test_raw_response_stream_is_proxied(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """with_raw_response + stream=True: the stream from parse() still ends the span with usage."""
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=USER, stream=True
    )
    assert span_exporter.get_finished_spans() == ()
    chunks = list(raw.parse())
    assert all(chunk.choices for chunk in chunks)
    assert attrs(only_span(span_exporter))["gen_ai.usage.output_tokens"] > 0


def test_isinstance_checks_still_see_an_openai_stream(client: openai.OpenAI) -> None:
    """The proxy is transparent to isinstance and attribute access."""
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True)
    assert isinstance(stream, openai.Stream)
    assert stream.response.status_code == 200
    stream.close()


def test_legacy_completion_stream_gets_usage(
    client: openai.OpenAI, server: OpenAICompatibleServer, span_exporter: InMemorySpanExporter
) -> None:
    """Legacy completions streams get include_usage too, and callers see only text chunks."""
    chunks = list(
        client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi", stream=True)
    )
    assert all(chunk.choices for chunk in chunks)
    assert server.requests[-1].body["stream_options"] == {"include_usage": True}
    recorded = attrs(only_span(span_exporter))
    assert recorded["gen_ai.operation.name"] == "text_completion"
    assert recorded["gen_ai.usage.output_tokens"] > 0


def _deepseek_reasoner_stream(reasoning: str, answer: str) -> bytes:
    """A DeepSeek-style stream (its documented chunk shape): the reasoning arrives as
    ``delta.reasoning_content`` before the answer, and no usage chunk follows."""

    def chunk(delta: dict[str, object], finish: str | None = None) -> str:
        body = {
            "id": "6f0c",
            "object": "chat.completion.chunk",
            "created": 1_760_000_000,
            "model": "deepseek-reasoner",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return f"data: {json.dumps(body)}\n\n"

    parts = [chunk({"role": "assistant", "content": None, "reasoning_content": ""})]
    parts += [chunk({"content": None, "reasoning_content": w}) for w in reasoning.split("|")]
    parts += [chunk({"content": answer, "reasoning_content": None})]
    parts += [chunk({"content": "", "reasoning_content": None}, "stop"), "data: [DONE]\n\n"]
    return "".join(parts).encode()


def test_reasoning_streamed_as_text_is_counted_when_usage_is_missing(
    span_exporter: InMemorySpanExporter,
) -> None:
    """A server that streams its reasoning in ``delta.reasoning_content`` and sends no usage:
    the estimate counts the reasoning as output (it is billed as output), not only the answer."""
    reasoning = "|".join(f"step{i} " for i in range(400))
    body = _deepseek_reasoner_stream(reasoning, "42")

    def answer(request: Any) -> Any:
        return http_package().Response(
            200, headers={"content-type": "text/event-stream"}, content=body
        )

    client = openai.OpenAI(
        base_url="https://api.deepseek.com/v1",
        api_key="test-key",
        max_retries=0,
        http_client=answering(answer),
    )
    stream = client.chat.completions.create(model="deepseek-reasoner", messages=USER, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream)
    assert text == "42"
    recorded = attrs(only_span(span_exporter))
    assert recorded["costspan.usage.missing"] is True
    assert recorded["costspan.stream.output_chars"] == len(reasoning.replace("|", "")) + len(text)
    assert recorded["gen_ai.usage.output_tokens"] >= 400
