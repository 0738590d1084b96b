"""Chat Completions calls through the real openai client become GenAI chat spans."""

from __future__ import annotations

import contextlib
import gc
import json
from typing import Any

import openai
import pytest
from genai_prices import Usage, calc_price
from openai.types.chat import ChatCompletionMessageParam
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import BaseModel

import costspan
from costspan.testing import OpenAICompatibleServer
from tests.conftest import USER, attrs, chat_helpers, histogram_points, only_span

pytestmark = pytest.mark.usefixtures("instrumented")

COST_PREFIXES = ("gen_ai.usage.cost.", "costspan.cost.", "costspan.price.")


def test_plain_call_gives_a_client_span_with_request_response_and_usage(
    client: openai.OpenAI, server: OpenAICompatibleServer, span_exporter: InMemorySpanExporter
) -> None:
    """Every attribute the conventions ask for is present and equals what went over the wire."""
    result = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=USER,
        temperature=0.2,
        top_p=0.9,
        max_completion_tokens=50,
        seed=7,
        stop=["\n\n"],
        frequency_penalty=0.1,
        presence_penalty=0.3,
        n=2,
        service_tier="flex",
    )
    span = only_span(span_exporter)
    assert span.name == "chat gpt-4o-mini"
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    assert result.usage is not None
    assert {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "server.address": "127.0.0.1",
        "server.port": server.port,
        "openai.api.type": "chat_completions",
        "gen_ai.request.temperature": 0.2,
        "gen_ai.request.top_p": 0.9,
        "gen_ai.request.max_tokens": 50,
        "gen_ai.request.seed": 7,
        "gen_ai.request.stop_sequences": ("\n\n",),
        "gen_ai.request.frequency_penalty": 0.1,
        "gen_ai.request.presence_penalty": 0.3,
        "gen_ai.request.choice.count": 2,
        "openai.request.service_tier": "flex",
        "gen_ai.response.id": result.id,
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.response.finish_reasons": ("stop", "stop"),
        "openai.response.service_tier": "flex",
        "openai.response.system_fingerprint": result.system_fingerprint,
        "gen_ai.usage.input_tokens": result.usage.prompt_tokens,
        "gen_ai.usage.output_tokens": result.usage.completion_tokens,
        "gen_ai.usage.cache_read.input_tokens": 0,
        "gen_ai.usage.reasoning.output_tokens": 0,
    } == {k: v for k, v in attrs(span).items() if not k.startswith(COST_PREFIXES)}
    expected = calc_price(
        Usage(
            input_tokens=result.usage.prompt_tokens,
            output_tokens=result.usage.completion_tokens,
        ),
        "gpt-4o-mini",
        provider_id="openai",
        price_context={"service_tier": "flex"},
    )
    assert attrs(span)["gen_ai.usage.cost.amount"] == pytest.approx(
        float(expected.total_price), abs=1e-12
    )
    assert attrs(span)["gen_ai.usage.cost.currency"] == "USD"
    assert attrs(span)["gen_ai.usage.cost.source"] == "local"


def test_start_attributes_are_given_at_span_creation_for_samplers(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """The sampling-relevant attributes come first, in start_span(attributes=...)."""
    client.chat.completions.create(model="gpt-4o", messages=USER)
    first_keys = list(attrs(only_span(span_exporter)))[:5]
    assert set(first_keys) == {
        "gen_ai.operation.name",
        "gen_ai.provider.name",
        "gen_ai.request.model",
        "server.address",
        "server.port",
    }


def test_reasoning_and_cached_tokens_are_recorded(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """A repeated long prompt to a reasoning model reports cache reads and reasoning tokens."""
    long_prompt: list[ChatCompletionMessageParam] = [{"role": "user", "content": "word " * 1500}]
    client.chat.completions.create(model="o4-mini", messages=long_prompt)
    second = client.chat.completions.create(model="o4-mini", messages=long_prompt)
    span = span_exporter.get_finished_spans()[-1]
    assert second.usage is not None
    assert second.usage.prompt_tokens_details is not None
    assert second.usage.completion_tokens_details is not None
    cached = second.usage.prompt_tokens_details.cached_tokens
    reasoning = second.usage.completion_tokens_details.reasoning_tokens
    assert cached is not None
    assert cached >= 1024
    assert reasoning is not None
    assert reasoning > 0
    assert attrs(span)["gen_ai.usage.cache_read.input_tokens"] == cached
    assert attrs(span)["gen_ai.usage.reasoning.output_tokens"] == reasoning
    assert attrs(span)["gen_ai.response.model"] == "o4-mini-2025-04-16"


async def test_async_call_gives_the_same_span(
    async_client: openai.AsyncOpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """AsyncCompletions.create is wrapped like the sync method."""
    result = await async_client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    span = only_span(span_exporter)
    assert span.name == "chat gpt-4o-mini"
    assert result.usage is not None
    assert attrs(span)["gen_ai.usage.output_tokens"] == result.usage.completion_tokens


def test_rate_limit_error_is_reraised_unchanged_and_recorded(
    client: openai.OpenAI, server: OpenAICompatibleServer, span_exporter: InMemorySpanExporter
) -> None:
    """A 429 reaches the caller as openai.RateLimitError; the span is ERROR with error.type."""
    server.fail_next(429)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    span = only_span(span_exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)["error.type"] == "RateLimitError"
    assert caught.value.status_code == 429
    assert [e.name for e in span.events] == ["exception"]


def test_unsupported_parameter_error_is_recorded(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """max_tokens on a reasoning model is a 400 from the server, surfaced unchanged."""
    with pytest.raises(openai.BadRequestError, match="max_completion_tokens"):
        client.chat.completions.create(model="o3", messages=USER, max_tokens=10)
    span = only_span(span_exporter)
    assert attrs(span)["error.type"] == "BadRequestError"
    assert "gen_ai.usage.input_tokens" not in attrs(span)


async def test_async_server_error_is_recorded(
    async_client: openai.AsyncOpenAI,
    server: OpenAICompatibleServer,
    span_exporter: InMemorySpanExporter,
) -> None:
    """A 500 on the async client is re-raised and recorded as InternalServerError."""
    server.fail_next(500)
    with pytest.raises(openai.InternalServerError):
        await async_client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert attrs(only_span(span_exporter))["error.type"] == "InternalServerError"


def test_retried_call_is_one_span_with_the_final_outcome(
    server: OpenAICompatibleServer, span_exporter: InMemorySpanExporter
) -> None:
    """The client's own retries happen inside one logical call: one span, final usage."""
    client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=2)
    server.fail_next(500)
    client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    span = only_span(span_exporter)
    assert len(server.requests) == 2
    assert span.status.status_code is StatusCode.UNSET
    assert attrs(span)["gen_ai.usage.input_tokens"] > 0


class City(BaseModel):
    name: str
    population: int


def test_parse_is_instrumented_and_marks_json_output(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """chat.completions.parse() (beta.chat.completions.parse() before openai 1.92) posts
    directly, and still gives exactly one span."""
    parse = chat_helpers(client).parse
    result = parse(model="gpt-4o-mini", messages=USER, response_format=City)
    span = only_span(span_exporter)
    assert isinstance(result.choices[0].message.parsed, City)
    assert attrs(span)["gen_ai.output.type"] == "json"
    assert result.usage is not None
    assert attrs(span)["gen_ai.usage.input_tokens"] == result.usage.prompt_tokens


async def test_async_parse_is_instrumented(
    async_client: openai.AsyncOpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """AsyncCompletions.parse() gives one span too."""
    await chat_helpers(async_client).parse(model="gpt-4o-mini", messages=USER, response_format=City)
    assert only_span(span_exporter).name == "chat gpt-4o-mini"


def test_with_options_clients_are_instrumented(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """A client copy from with_options() shares the wrapped resource classes."""
    client.with_options(timeout=5, max_retries=0).chat.completions.create(
        model="gpt-4o-mini", messages=USER
    )
    assert only_span(span_exporter).name == "chat gpt-4o-mini"


def test_with_raw_response_records_usage(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """A raw response still reports usage, and the caller's parse() gives the same object."""
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=USER)
    assert raw.headers["x-request-id"].startswith("req_")
    completion = raw.parse()
    span = only_span(span_exporter)
    assert completion.usage is not None
    assert attrs(span)["gen_ai.usage.output_tokens"] == completion.usage.completion_tokens
    assert attrs(span)["gen_ai.response.id"] == completion.id


def test_with_streaming_response_records_usage_on_parse(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """with_streaming_response defers the body; the span ends when the caller parses it."""
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=USER
    ) as response:
        assert span_exporter.get_finished_spans() == ()
        completion = response.parse()
    span = only_span(span_exporter)
    assert completion.usage is not None
    assert attrs(span)["gen_ai.usage.input_tokens"] == completion.usage.prompt_tokens


def test_with_streaming_response_closed_unread_marks_usage_missing(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """A response closed without being parsed was still sent: the span says usage is missing."""
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=USER
    ) as response:
        assert response.status_code == 200
    assert attrs(only_span(span_exporter))["costspan.usage.missing"] is True


async def test_async_with_streaming_response_records_usage(
    async_client: openai.AsyncOpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """The async streaming-response parse() is awaited through the proxy."""
    async with async_client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=USER
    ) as response:
        completion = await response.parse()
    assert completion.usage is not None
    assert attrs(only_span(span_exporter))["gen_ai.usage.input_tokens"] == (
        completion.usage.prompt_tokens
    )


def test_content_is_not_captured_by_default(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """Without the standard opt-in variable, no message text reaches telemetry."""
    client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    recorded = attrs(only_span(span_exporter))
    assert not any(key.endswith("messages") for key in recorded)
    assert "France" not in json.dumps(recorded)


def test_content_is_captured_on_spans_when_asked(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=span_only puts messages on the span."""
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "span_only")
    costspan.configure()
    result = client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    recorded = attrs(only_span(span_exporter))
    assert json.loads(recorded["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": USER[0].get("content")}]}
    ]
    assert json.loads(recorded["gen_ai.output.messages"]) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": result.choices[0].message.content}],
            "finish_reason": "stop",
        }
    ]


def test_metrics_follow_the_conventions(
    client: openai.OpenAI, metric_reader: InMemoryMetricReader
) -> None:
    """Duration and token-usage histograms carry the spec's buckets and bounded attributes."""
    result = client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert result.usage is not None
    (point,) = histogram_points(metric_reader, "gen_ai.client.operation.duration")
    assert point.explicit_bounds[:3] == (0.01, 0.02, 0.04)
    assert dict(point.attributes or {})["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    tokens = histogram_points(metric_reader, "gen_ai.client.token.usage")
    by_type = {dict(p.attributes or {})["gen_ai.token.type"]: p.sum for p in tokens}
    assert by_type == {
        "input": result.usage.prompt_tokens,
        "output": result.usage.completion_tokens,
    }
    for p in tokens:
        assert "gen_ai.response.id" not in dict(p.attributes or {})
        assert p.explicit_bounds[:3] == (1, 4, 16)


def test_error_metrics_carry_error_type(
    client: openai.OpenAI, server: OpenAICompatibleServer, metric_reader: InMemoryMetricReader
) -> None:
    """A failed call is counted in the duration histogram with error.type."""
    server.fail_next(429)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    points = histogram_points(metric_reader, "gen_ai.client.operation.duration")
    assert [dict(p.attributes or {})["error.type"] for p in points] == ["RateLimitError"]


_TOOL = {
    "type": "function",
    "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
}


def _once(items: list[Any]) -> Any:
    """A generator over ``items``: it can be read only once."""
    return (item for item in items)


@pytest.mark.parametrize(
    "shape",
    [
        "messages",
        "tools",
        "content parts",
        "content parts in a tuple of messages",
        "tool calls",
        "embedding input",
        "prompt",
    ],
)
@pytest.mark.parametrize("budgeted", [False, True])
def test_arguments_given_as_generators_are_sent_whole(
    client: openai.OpenAI, server: OpenAICompatibleServer, shape: str, budgeted: bool
) -> None:
    """openai accepts any iterable for messages, tools, content and inputs, a generator among
    them: costspan reads the request to count it (under a budget) and the server still receives
    all of it, as it would without costspan."""
    parts: Any = [{"type": "text", "text": "Translate: bonjour"}]
    messages: Any = [{"role": "user", "content": "hi"}]
    tool_calls: Any = [
        {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    ]
    tool_answer: Any = {"role": "tool", "tool_call_id": "call_1", "content": "found"}
    calls = {
        "messages": lambda: client.chat.completions.create(
            model="gpt-4o-mini", messages=_once(messages), max_completion_tokens=5
        ),
        "tools": lambda: client.chat.completions.create(
            model="gpt-4o-mini",
            messages=messages,
            tools=_once([_TOOL]),
            max_completion_tokens=5,
        ),
        "content parts": lambda: client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": _once(parts)}],
            max_completion_tokens=5,
        ),
        "content parts in a tuple of messages": lambda: client.chat.completions.create(
            model="gpt-4o-mini",
            messages=({"role": "user", "content": _once(parts)},),
            max_completion_tokens=5,
        ),
        "tool calls": lambda: client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[
                *messages,
                {"role": "assistant", "tool_calls": _once(tool_calls)},
                tool_answer,
            ],
            max_completion_tokens=5,
        ),
        "embedding input": lambda: client.embeddings.create(
            model="text-embedding-3-small", input=_once(["one", "two"])
        ),
        "prompt": lambda: client.completions.create(
            model="gpt-3.5-turbo-instruct", prompt=_once(["Say", "hi"]), max_tokens=5
        ),
    }
    expected = {
        "messages": ("messages", messages),
        "tools": ("tools", [_TOOL]),
        "content parts": ("messages", [{"role": "user", "content": parts}]),
        "content parts in a tuple of messages": ("messages", [{"role": "user", "content": parts}]),
        "tool calls": (
            "messages",
            [*messages, {"role": "assistant", "tool_calls": tool_calls}, tool_answer],
        ),
        "embedding input": ("input", ["one", "two"]),
        "prompt": ("prompt", ["Say", "hi"]),
    }
    if budgeted:
        with costspan.budget(usd="1") as b:
            calls[shape]()
        assert b.spent_usd > 0
    else:
        calls[shape]()
    key, value = expected[shape]
    assert server.requests[-1].body[key] == value


@pytest.mark.parametrize("budgeted", [False, True])
def test_a_generator_where_the_client_does_not_list_one_fails_as_without_costspan(
    client: openai.OpenAI, server: OpenAICompatibleServer, budgeted: bool
) -> None:
    """openai lists iterables only where its types accept them (messages, content, tool calls,
    tools); a generator deeper in a tool's JSON schema cannot be sent. costspan does not turn
    that failure into a success: the call raises the client's own TypeError, nothing is sent."""
    tool: Any = {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {"type": "object", "required": _once(["query"])},
        },
    }
    scope = costspan.budget(usd="1") if budgeted else contextlib.nullcontext()
    with scope, pytest.raises(TypeError, match="not JSON serializable"):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=USER, tools=[tool], max_completion_tokens=5
        )
    assert server.requests == []


def test_a_finished_call_leaves_nothing_for_the_cyclic_garbage_collector(
    client: openai.OpenAI,
) -> None:
    """A call's objects (its invocation, its span, the call's closures) are freed by reference
    counting once the caller lets go of the response, plain or streamed, with or without a
    budget: none wait for the cyclic garbage collector, whose collections every call would
    otherwise bring nearer."""
    with costspan.budget(usd=1):
        client.chat.completions.create(model="gpt-4o-mini", messages=USER)  # warm
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=USER)
        with costspan.budget(usd=1):
            client.chat.completions.create(model="gpt-4o-mini", messages=USER)
            stream = client.chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True)
            assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            del stream
        gc.collect()
        left = sorted({_name(o) for o in gc.garbage if _ours(o)})
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert left == []


def _name(obj: object) -> str:
    code = getattr(obj, "__code__", None)
    if code is not None:
        return f"{code.co_filename.rsplit('/', 1)[-1]}:{code.co_name}"
    return type(obj).__qualname__


_CALL_PATH = ("_wrappers", "_invocation", "_admit", "_reservation", "_streams")
"""The modules whose objects a call makes (objects of other tests' ledgers or servers, released
by their threads meanwhile, are not this test's concern)."""


def _ours(obj: object) -> bool:
    """An object a call made: of costspan's call path, or a closure defined there."""
    module = getattr(type(obj), "__module__", "") or ""
    if module.startswith("costspan.") and module.rsplit(".", 1)[-1] in _CALL_PATH:
        return True
    code = getattr(obj, "__code__", None)
    return code is not None and any(
        code.co_filename.endswith(f"/costspan/{name}.py") for name in _CALL_PATH
    )
