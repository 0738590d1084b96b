"""The bundled OpenAI-compatible server answers like OpenAI does, to the real openai client."""

from __future__ import annotations

import socket

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from costspan.testing import OpenAICompatibleServer
from tests.conftest import USER


def test_binds_loopback_on_a_free_port_and_releases_it() -> None:
    """The server listens on 127.0.0.1 only, and stop() frees its port."""
    server = OpenAICompatibleServer().start()
    port = server.port
    assert server.base_url == f"http://127.0.0.1:{port}/v1"
    server.stop()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # would raise if the server still held it


def test_chat_usage_is_consistent(client: openai.OpenAI) -> None:
    """total = prompt + completion, and the dated model id is reported."""
    result = client.chat.completions.create(model="gpt-4o", messages=USER)
    assert result.model == "gpt-4o-2024-08-06"
    assert result.usage is not None
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens
    assert result.choices[0].finish_reason == "stop"


def test_reasoning_tokens_count_inside_output(client: openai.OpenAI) -> None:
    """Reasoning models report reasoning tokens as a subset of completion tokens."""
    result = client.chat.completions.create(model="gpt-5-mini", messages=USER)
    assert result.usage is not None
    details = result.usage.completion_tokens_details
    assert details is not None
    assert details.reasoning_tokens
    assert 0 < details.reasoning_tokens < result.usage.completion_tokens


def test_output_cap_cuts_the_reply(client: openai.OpenAI) -> None:
    """max_completion_tokens bounds completion tokens; the finish reason becomes length."""
    result = client.chat.completions.create(
        model="gpt-4o-mini", messages=USER, max_completion_tokens=4
    )
    assert result.usage is not None
    assert result.usage.completion_tokens == 4
    assert result.choices[0].finish_reason == "length"


def test_prompt_cache_needs_a_repeated_long_prompt(client: openai.OpenAI) -> None:
    """Short or first-seen prompts read nothing from cache; a repeat of 1024+ tokens does."""
    long_prompt: list[ChatCompletionMessageParam] = [{"role": "user", "content": "token " * 1100}]
    first = client.chat.completions.create(model="gpt-4o-mini", messages=long_prompt)
    second = client.chat.completions.create(model="gpt-4o-mini", messages=long_prompt)
    assert first.usage is not None
    assert second.usage is not None
    assert first.usage.prompt_tokens_details is not None
    assert second.usage.prompt_tokens_details is not None
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached is not None
    assert cached % 128 == 0
    assert 1024 <= cached <= second.usage.prompt_tokens


def test_rate_limit_has_openai_shape(client: openai.OpenAI, server: OpenAICompatibleServer) -> None:
    """429 carries retry-after and OpenAI's error body."""
    server.fail_next(429)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert caught.value.response.headers["retry-after"] == "1"
    assert caught.value.code == "rate_limit_exceeded"


def test_strict_mode_rejects_stream_options() -> None:
    """reject_stream_options=True answers 400 like strict OpenAI-compatible servers."""
    with OpenAICompatibleServer(reject_stream_options=True) as strict:
        client = openai.OpenAI(base_url=strict.base_url, api_key="k", max_retries=0)
        with pytest.raises(openai.BadRequestError, match="stream_options"):
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=USER,
                stream=True,
                stream_options={"include_usage": True},
            )


def test_bad_requests_are_400(client: openai.OpenAI) -> None:
    """Missing messages or model are invalid_request_error 400s."""
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model="gpt-4o-mini", messages=[])
    with pytest.raises(openai.BadRequestError, match="model"):
        client.chat.completions.create(model="", messages=USER)


def test_embeddings_base64_is_decoded_by_the_client(client: openai.OpenAI) -> None:
    """The client asks for base64 by default; the server's vectors decode to floats."""
    result = client.embeddings.create(model="text-embedding-3-small", input="hello")
    vector = result.data[0].embedding
    assert len(vector) == 1536
    assert all(-1.0 <= x <= 1.0 for x in vector)
    again = client.embeddings.create(
        model="text-embedding-3-small", input="hello", encoding_format="float"
    )
    assert again.data[0].embedding == pytest.approx(vector, abs=1e-6)


def test_models_are_listed(client: openai.OpenAI) -> None:
    """GET /v1/models lists the models the server dates."""
    ids = {m.id for m in client.models.list()}
    assert {"gpt-4o-mini", "o3", "gpt-5"} <= ids


def test_requests_are_recorded(client: openai.OpenAI, server: OpenAICompatibleServer) -> None:
    """Tests can see exactly what went over the wire."""
    client.chat.completions.create(model="gpt-4o-mini", messages=USER, temperature=0.3)
    (request,) = server.requests
    assert request.path == "/v1/chat/completions"
    assert request.body["temperature"] == 0.3
    assert request.headers["authorization"] == "Bearer test-key"


@pytest.mark.parametrize(
    ("status", "exception"),
    [
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (529, openai.InternalServerError),
        (400, openai.BadRequestError),
    ],
)
def test_error_header_answers_in_openais_shape(
    client: openai.OpenAI, status: int, exception: type[openai.APIStatusError]
) -> None:
    """x-costspan-test-error fails one call with OpenAI's error body; the next call succeeds."""
    with pytest.raises(exception) as caught:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=USER, extra_headers={"x-costspan-test-error": str(status)}
        )
    assert caught.value.status_code == status
    assert isinstance(caught.value.body, dict)
    assert "message" in caught.value.body
    assert client.chat.completions.create(model="gpt-4o-mini", messages=USER).choices


@pytest.mark.parametrize(
    "header",
    [
        "x-costspan-test-reasoning-tokens",
        "x-costspan-test-output-tokens",
        "x-costspan-test-cut-after",
        "x-costspan-test-delay-ms",
        "x-costspan-test-extra-input-tokens",
        "x-costspan-test-cost",
    ],
)
def test_malformed_test_headers_are_a_400_naming_them(client: openai.OpenAI, header: str) -> None:
    """A test header that is not a number fails the call clearly instead of dropping it."""
    with pytest.raises(openai.BadRequestError, match=header):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=USER, extra_headers={header: "plenty"}
        )


def test_junk_tools_and_messages_do_not_break_the_server(client: openai.OpenAI) -> None:
    """Entries of the wrong type are ignored, as a lenient parser would; the call still answers."""
    result = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[*USER, "not a message", {"role": "user", "content": 42}],  # pyright: ignore[reportArgumentType]
        tools=["nope", {"type": "function", "function": "bad"}, {"type": "function"}],  # pyright: ignore[reportArgumentType]
    )
    assert result.usage is not None
    assert result.usage.prompt_tokens > 0
