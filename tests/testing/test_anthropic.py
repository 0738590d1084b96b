"""The bundled server's Anthropic Messages endpoint answers the real anthropic client as Anthropic
does: message shape, streaming events, max_tokens, prompt caching and errors."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from costspan._tokens import count_text
from costspan.testing import OpenAICompatibleServer
from tests.testing.images import image_bytes

# The anthropic client warns about model ids it deprecates; which ones changes with its version.
pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

MODEL = "claude-sonnet-4-5"
HELLO: list[Any] = [{"role": "user", "content": "Hello there"}]
LONG_DOC = "The quarterly report says revenue grew in every region. " * 200  # > 1024 tokens


@pytest.fixture(name="claude")
def _claude(server: OpenAICompatibleServer) -> Iterator[anthropic.Anthropic]:
    client = anthropic.Anthropic(base_url=server.anthropic_base_url, api_key="k", max_retries=0)
    yield client
    client.close()


def claude_tokens(text: str) -> int:
    return math.ceil(count_text(text, MODEL) * 1.25)


def test_anthropic_base_url_is_the_root() -> None:
    """The anthropic client appends /v1/messages, so its base URL has no /v1."""
    with OpenAICompatibleServer() as server:
        assert server.anthropic_base_url == f"http://127.0.0.1:{server.port}"


def test_plain_message_has_anthropics_shape(
    claude: anthropic.Anthropic, server: OpenAICompatibleServer
) -> None:
    """id msg_..., a text block, end_turn, and usage counted with Claude's larger tokenizer."""
    message = claude.messages.create(model=MODEL, max_tokens=200, messages=HELLO)
    assert message.id.startswith("msg_")
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == MODEL
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    (block,) = message.content
    assert block.type == "text"
    assert block.text
    # 4 per request + 3 per message + the text at 1.25 tokens per o200k token.
    assert message.usage.input_tokens == 4 + 3 + claude_tokens("Hello there")
    assert message.usage.output_tokens == claude_tokens(block.text)
    assert message.usage.cache_read_input_tokens == 0
    assert message.usage.cache_creation_input_tokens == 0
    (request,) = server.requests
    assert request.path == "/v1/messages"
    assert request.body["max_tokens"] == 200
    assert "anthropic-version" in request.headers


def test_max_tokens_cuts_the_answer(claude: anthropic.Anthropic) -> None:
    """A small max_tokens bounds output_tokens and stops with max_tokens."""
    message = claude.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
    assert message.usage.output_tokens == 5
    assert message.stop_reason == "max_tokens"


def test_missing_max_tokens_is_a_400(server: OpenAICompatibleServer) -> None:
    """Anthropic requires max_tokens: without it the answer is a 400 invalid_request_error."""
    # The anthropic client refuses to send such a request, so it goes out with urllib.
    request = urllib.request.Request(
        f"{server.anthropic_base_url}/v1/messages",
        data=json.dumps({"model": MODEL, "messages": HELLO}).encode(),
        headers={
            "x-api-key": "k",
            "anthropic-version": "2023-06-01",
            "content-type": "application/json",
        },
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 400
    body = json.loads(caught.value.read())
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in body["error"]["message"]


@pytest.mark.parametrize(
    "body",
    [
        {"model": MODEL, "max_tokens": 0, "messages": HELLO},
        {"model": MODEL, "max_tokens": 10, "messages": []},
        {"max_tokens": 10, "messages": HELLO},
    ],
)
def test_invalid_requests_are_400s(claude: anthropic.Anthropic, body: dict[str, Any]) -> None:
    """A zero max_tokens, no messages or no model: BadRequestError from the client."""
    with pytest.raises(anthropic.BadRequestError):
        claude.post("/v1/messages", body=body, cast_to=anthropic.types.Message)


def test_stream_helper_gives_the_same_answer(claude: anthropic.Anthropic) -> None:
    """messages.stream() accumulates the text and the usage of the plain answer."""
    plain = claude.messages.create(model=MODEL, max_tokens=200, messages=HELLO)
    with claude.messages.stream(model=MODEL, max_tokens=200, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert plain.content[0].type == "text"
    assert text == plain.content[0].text
    assert final.usage.input_tokens == plain.usage.input_tokens
    assert final.usage.output_tokens == plain.usage.output_tokens
    assert final.stop_reason == "end_turn"


def test_raw_stream_sends_anthropics_event_sequence(claude: anthropic.Anthropic) -> None:
    """stream=True yields message_start ... message_stop with usage at both ends."""
    events = list(claude.messages.create(model=MODEL, max_tokens=6, messages=HELLO, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert set(kinds[2:-3]) == {"content_block_delta"}
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    start, delta = events[0], events[-2]
    assert start.type == "message_start"
    assert start.message.usage.input_tokens == 4 + 3 + claude_tokens("Hello there")
    assert delta.type == "message_delta"
    assert delta.delta.stop_reason == "max_tokens"
    assert delta.usage.output_tokens == 6


def test_stream_can_be_cut_mid_body(claude: anthropic.Anthropic) -> None:
    """x-costspan-test-cut-after drops the connection: the client sees an error, not a hang."""
    seen: list[str] = []
    stream = claude.messages.create(
        model=MODEL,
        max_tokens=100,
        messages=HELLO,
        stream=True,
        extra_headers={"x-costspan-test-cut-after": "3"},
    )
    with pytest.raises(Exception, match="incomplete chunked read"):  # the transport's own error
        seen.extend(event.type for event in stream)
    assert seen == ["message_start", "content_block_start"]  # the third event was a ping


def _cached_request(claude: anthropic.Anthropic, question: str, model: str = MODEL) -> Any:
    return claude.messages.create(
        model=model,
        max_tokens=20,
        system=[
            {"type": "text", "text": "You answer questions about reports."},
            {"type": "text", "text": LONG_DOC, "cache_control": {"type": "ephemeral"}},
        ],
        messages=[{"role": "user", "content": question}],
    )


def test_cache_is_written_then_read(claude: anthropic.Anthropic) -> None:
    """The first request writes the prefix, the next reads it; input_tokens excludes both."""
    first = _cached_request(claude, "Which region grew most?")
    second = _cached_request(claude, "Summarise it in a line.")
    prefix = 4 + claude_tokens("You answer questions about reports.") + claude_tokens(LONG_DOC)
    assert first.usage.cache_creation_input_tokens == prefix
    assert first.usage.cache_read_input_tokens == 0
    assert first.usage.cache_creation.ephemeral_5m_input_tokens == prefix
    assert second.usage.cache_read_input_tokens == prefix
    assert second.usage.cache_creation_input_tokens == 0
    # Only what follows the breakpoint is input_tokens.
    assert first.usage.input_tokens == 3 + claude_tokens("Which region grew most?")
    assert second.usage.input_tokens == 3 + claude_tokens("Summarise it in a line.")


def test_cache_is_per_model_and_per_prefix(claude: anthropic.Anthropic) -> None:
    """Another model, or a changed prefix, reads nothing."""
    _cached_request(claude, "q1")
    assert _cached_request(claude, "q2", model="claude-opus-4-1").usage.cache_read_input_tokens == 0
    changed = claude.messages.create(
        model=MODEL,
        max_tokens=20,
        system=[
            {"type": "text", "text": "You answer questions about REPORTS."},
            {"type": "text", "text": LONG_DOC, "cache_control": {"type": "ephemeral"}},
        ],
        messages=[{"role": "user", "content": "q3"}],
    )
    assert changed.usage.cache_read_input_tokens == 0
    assert (changed.usage.cache_creation_input_tokens or 0) > 0


def test_short_prefixes_are_not_cached(claude: anthropic.Anthropic) -> None:
    """A prefix below the model's minimum (1024 here) is neither written nor read."""
    system: list[Any] = [{"type": "text", "text": "Short.", "cache_control": {"type": "ephemeral"}}]
    for _ in range(2):
        message = claude.messages.create(model=MODEL, max_tokens=5, system=system, messages=HELLO)
        assert message.usage.cache_creation_input_tokens == 0
        assert message.usage.cache_read_input_tokens == 0


def test_moving_breakpoint_reads_the_earlier_prefix(claude: anthropic.Anthropic) -> None:
    """A conversation that moves its breakpoint to the last turn reads what the last turn wrote."""
    turn1: list[Any] = [
        {
            "role": "user",
            "content": [{"type": "text", "text": LONG_DOC, "cache_control": {"type": "ephemeral"}}],
        },
    ]
    first = claude.messages.create(model=MODEL, max_tokens=5, messages=turn1)
    turn2: list[Any] = [
        {"role": "user", "content": [{"type": "text", "text": LONG_DOC}]},
        {"role": "assistant", "content": "Noted."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "And costs?", "cache_control": {"type": "ephemeral"}}
            ],
        },
    ]
    second = claude.messages.create(model=MODEL, max_tokens=5, messages=turn2)
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert second.usage.cache_creation_input_tokens == (
        3 + claude_tokens("Noted.") + 3 + claude_tokens("And costs?")
    )
    assert second.usage.input_tokens == 0


def test_top_level_cache_control_caches_the_whole_prompt(claude: anthropic.Anthropic) -> None:
    """Automatic caching: a request-level cache_control marks the last block."""
    messages: list[Any] = [{"role": "user", "content": LONG_DOC}]
    body = {
        "model": MODEL,
        "max_tokens": 5,
        "messages": messages,
        "cache_control": {"type": "ephemeral"},
    }
    first = claude.post("/v1/messages", body=body, cast_to=anthropic.types.Message)
    second = claude.post("/v1/messages", body=body, cast_to=anthropic.types.Message)
    assert first.usage.cache_creation_input_tokens == 4 + 3 + claude_tokens(LONG_DOC)
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert second.usage.input_tokens == 0


def test_more_than_four_breakpoints_are_refused(claude: anthropic.Anthropic) -> None:
    """Anthropic allows 4 cache_control blocks per request."""
    system: list[Any] = [
        {"type": "text", "text": f"part {i}", "cache_control": {"type": "ephemeral"}}
        for i in range(5)
    ]
    with pytest.raises(anthropic.BadRequestError, match="maximum of 4"):
        claude.messages.create(model=MODEL, max_tokens=5, system=system, messages=HELLO)


WEATHER_TOOL: dict[str, Any] = {
    "name": "get_weather",
    "description": "Get the weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def test_tools_add_the_hidden_tool_prompt(claude: anthropic.Anthropic) -> None:
    """Tools add Anthropic's tool-use system prompt (346 auto, 313 any) plus their JSON."""
    bare = claude.messages.create(model=MODEL, max_tokens=50, messages=HELLO)
    auto = claude.messages.create(model=MODEL, max_tokens=50, messages=HELLO, tools=[WEATHER_TOOL])  # pyright: ignore[reportArgumentType]
    assert auto.usage.input_tokens - bare.usage.input_tokens == 346 + claude_tokens(
        json.dumps(WEATHER_TOOL)
    )
    forced = claude.messages.create(
        model=MODEL,
        max_tokens=50,
        messages=HELLO,
        tools=[WEATHER_TOOL],  # pyright: ignore[reportArgumentType]
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    assert forced.usage.input_tokens - auto.usage.input_tokens == 313 - 346
    assert forced.stop_reason == "tool_use"
    (call,) = forced.content
    assert call.type == "tool_use"
    assert call.name == "get_weather"
    assert call.id.startswith("toolu_")
    assert isinstance(call.input, dict)
    assert set(call.input) == {"city"}


def test_streamed_tool_use_is_accumulated(claude: anthropic.Anthropic) -> None:
    """The stream helper rebuilds a forced tool_use block from its input_json deltas."""
    with claude.messages.stream(
        model=MODEL,
        max_tokens=50,
        messages=HELLO,
        tools=[WEATHER_TOOL],  # pyright: ignore[reportArgumentType]
        tool_choice={"type": "any"},
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    (call,) = final.content
    assert call.type == "tool_use"
    assert call.input == {"city": "example"}


def test_images_cost_anthropics_formula(claude: anthropic.Anthropic) -> None:
    """A 1092x1092 PNG adds (1092*1092)/750 = 1590 tokens, not scaled by the tokenizer."""
    import base64

    text = {"type": "text", "text": "What is this?"}
    png = base64.b64encode(image_bytes(1092, 1092)).decode()
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}}
    bare = claude.messages.create(
        model=MODEL,
        max_tokens=5,
        messages=[{"role": "user", "content": [text]}],  # pyright: ignore[reportArgumentType]
    )
    seen = claude.messages.create(
        model=MODEL,
        max_tokens=5,
        messages=[{"role": "user", "content": [text, image]}],  # pyright: ignore[reportArgumentType]
    )
    assert seen.usage.input_tokens - bare.usage.input_tokens == 1590


def test_count_tokens_matches_what_create_bills(claude: anthropic.Anthropic) -> None:
    """/v1/messages/count_tokens gives the input a create would bill (and writes no cache)."""
    counted = claude.messages.count_tokens(model=MODEL, messages=HELLO, tools=[WEATHER_TOOL])  # pyright: ignore[reportArgumentType]
    billed = claude.messages.create(model=MODEL, max_tokens=5, messages=HELLO, tools=[WEATHER_TOOL])  # pyright: ignore[reportArgumentType]
    assert counted.input_tokens == billed.usage.input_tokens


@pytest.mark.parametrize(
    ("status", "exception", "kind"),
    [
        (400, anthropic.BadRequestError, "invalid_request_error"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (529, anthropic.InternalServerError, "overloaded_error"),
    ],
)
def test_error_header_gives_anthropics_errors(
    claude: anthropic.Anthropic, status: int, exception: type[Exception], kind: str
) -> None:
    """x-costspan-test-error answers with Anthropic's body and status; the client maps it."""
    with pytest.raises(exception) as caught:
        claude.messages.create(
            model=MODEL,
            max_tokens=5,
            messages=HELLO,
            extra_headers={"x-costspan-test-error": str(status)},
        )
    error = caught.value
    assert isinstance(error, anthropic.APIStatusError)
    assert error.status_code == status
    assert isinstance(error.body, dict)
    assert error.body["type"] == "error"
    assert error.body["error"]["type"] == kind
    if status == 429:
        assert error.response.headers["retry-after"] == "1"


def test_fail_next_speaks_anthropic_on_the_messages_path(
    claude: anthropic.Anthropic, server: OpenAICompatibleServer
) -> None:
    """fail_next(529) makes the next Messages call overloaded; the one after succeeds."""
    server.fail_next(529)
    with pytest.raises(anthropic.InternalServerError) as caught:
        claude.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
    assert caught.value.status_code == 529
    assert claude.messages.create(model=MODEL, max_tokens=5, messages=HELLO).content
    assert [r.path for r in server.requests] == ["/v1/messages", "/v1/messages"]


def test_retries_are_recorded(server: OpenAICompatibleServer) -> None:
    """The client retries a 529; each attempt is a recorded request."""
    client = anthropic.Anthropic(base_url=server.anthropic_base_url, api_key="k", max_retries=1)
    server.fail_next(529)
    message = client.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
    client.close()
    assert message.stop_reason == "max_tokens"
    assert len(server.requests) == 2


def test_claude_through_the_openai_api_counts_like_messages(server: OpenAICompatibleServer) -> None:
    """The same Claude text costs the same tokenizer ratio on both APIs."""
    import openai

    client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    result = client.chat.completions.create(model=MODEL, messages=HELLO)
    client.close()
    assert result.usage is not None
    raw = 3 + 3 + count_text("user", MODEL) + count_text("Hello there", MODEL)
    assert result.usage.prompt_tokens == math.ceil(raw * 1.25)


def test_a_broken_image_is_anthropics_400(claude: anthropic.Anthropic) -> None:
    """Base64 that holds no image is refused in Anthropic's shape."""
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "bm90IGFuIGltYWdl"},
    }
    with pytest.raises(anthropic.BadRequestError, match="Could not process image"):
        claude.messages.create(
            model=MODEL,
            max_tokens=5,
            messages=[{"role": "user", "content": [image]}],  # pyright: ignore[reportArgumentType]
        )


def test_unparsable_body_on_messages_is_anthropic_shaped(server: OpenAICompatibleServer) -> None:
    """Even a body that is not JSON gets Anthropic's error shape on the Messages path."""
    request = urllib.request.Request(
        f"{server.anthropic_base_url}/v1/messages",
        data=b"{not json",
        headers={"content-type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 400
    body = json.loads(caught.value.read())
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
