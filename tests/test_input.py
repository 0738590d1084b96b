"""What a request is billed as input, counted offline, is never less than what the provider bills.

Each request shape goes to the bundled server (which bills tools, schemas, images, audio,
history and items the way OpenAI does, with an implementation of its own) through the real
client, under a budget: the span's reserved worst case must cover what the server billed.
"""

from __future__ import annotations

import base64
import io
import json
import math
import wave
from typing import Any

import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from PIL import Image

import costspan
from costspan import _input
from costspan._media import data_url_size, image_tokens
from costspan.testing import OpenAICompatibleServer
from tests.conftest import attrs, only_span

pytestmark = pytest.mark.usefixtures("instrumented")


def _png(width: int, height: int, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 200)).save(buffer, fmt)
    mime = {"PNG": "png", "JPEG": "jpeg", "GIF": "gif", "WEBP": "webp"}[fmt]
    return f"data:image/{mime};base64," + base64.b64encode(buffer.getvalue()).decode()


def _wav(seconds: float) -> str:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\0\0" * int(8000 * seconds))
    return base64.b64encode(buffer.getvalue()).decode()


def _tool(name: str, words: int) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": "find " * words,
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "the city"},
                    "unit": {"type": "string", "enum": ["c", "f"]},
                    "days": {"type": "integer"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["city"],
            },
        },
    }


def _user(content: Any) -> Any:
    """One user message (typed loosely: the shapes include parts the SDK's types vary on)."""
    return [{"role": "user", "content": content}]


CHAT_SHAPES: dict[str, dict[str, Any]] = {
    "text": {"messages": _user("hello there")},
    "system and name": {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi", "name": "ada"},
        ]
    },
    "one tool": {"messages": _user("weather?"), "tools": [_tool("weather", 5)]},
    "ten tools and a choice": {
        "messages": [{"role": "system", "content": "s"}, *_user("pick")],
        "tools": [_tool(f"t{i}", 40) for i in range(10)],
        "tool_choice": {"type": "function", "function": {"name": "t3"}},
    },
    "legacy functions": {
        "messages": _user("f"),
        "functions": [_tool("f", 10)["function"]],
    },
    "json schema": {
        "messages": _user("form"),
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "form",
                "schema": {
                    "type": "object",
                    "properties": {f"f{i}": {"type": "string"} for i in range(30)},
                },
            },
        },
    },
    "tool-call history": {
        "messages": [
            *_user("look up"),
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": json.dumps({"q": "x" * 300})},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "result " * 200},
        ]
    },
    "images: tall, wide, low, linked": {
        "messages": _user(
            [
                {"type": "text", "text": "see"},
                {"type": "image_url", "image_url": {"url": _png(2048, 4096)}},
                {"type": "image_url", "image_url": {"url": _png(3000, 500, "JPEG")}},
                {"type": "image_url", "image_url": {"url": _png(640, 480), "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}},
                {"type": "image_url", "image_url": {"url": _png(200, 700, "GIF")}},
                {"type": "image_url", "image_url": {"url": _png(1000, 1000, "WEBP")}},
            ]
        )
    },
    "audio": {
        "messages": _user(
            [{"type": "input_audio", "input_audio": {"data": _wav(3.2), "format": "wav"}}]
        )
    },
}
MODELS = ["gpt-4o", "gpt-4o-mini", "gpt-4.1-mini", "o4-mini", "gpt-5", "gpt-4.1-nano"]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("shape", list(CHAT_SHAPES), ids=list(CHAT_SHAPES))
def test_the_reserved_input_covers_what_chat_bills(
    shape: str, model: str, client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """The bound of each chat request shape covers the input the provider billed."""
    kwargs: dict[str, Any] = {**CHAT_SHAPES[shape], "model": model, "max_completion_tokens": 50}
    if shape == "audio" and model != "gpt-4o":
        return  # audio input is a gpt-4o family feature; the others are covered elsewhere
    with costspan.budget(usd=5):
        response = client.chat.completions.create(**kwargs)
    assert response.usage is not None
    span = attrs(only_span(span_exporter))
    assert span["costspan.budget.estimate_usd"] >= span["gen_ai.usage.cost.amount"]
    billed = response.usage.prompt_tokens
    bound = _input.chat(kwargs, model).tokens
    assert bound >= billed, f"{shape} on {model}: counted {bound} < billed {billed}"


RESPONSES_SHAPES: dict[str, dict[str, Any]] = {
    "text and instructions": {"input": "hello", "instructions": "Be brief."},
    "items": {
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "look"},
                    {"type": "input_image", "image_url": _png(1500, 900), "detail": "high"},
                ],
            },
            {
                "type": "function_call",
                "call_id": "c",
                "name": "f",
                "arguments": json.dumps({"a": "b" * 100}),
            },
            {"type": "function_call_output", "call_id": "c", "output": "out " * 120},
            {
                "type": "reasoning",
                "id": "rs_1",
                "summary": [{"type": "summary_text", "text": "thought " * 20}],
                "encrypted_content": "gAAAA" + "x" * 400,
            },
        ]
    },
    "tools and text.format": {
        "input": "go",
        "tools": [
            {
                "type": "function",
                "name": "f",
                "description": "d " * 30,
                "parameters": {"type": "object", "properties": {"a": {"type": "string"}}},
            }
        ],
        "text": {
            "format": {
                "type": "json_schema",
                "name": "out",
                "schema": {"type": "object", "properties": {"x": {"type": "string"}}},
            }
        },
    },
}


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-5", "o4-mini"])
@pytest.mark.parametrize("shape", list(RESPONSES_SHAPES), ids=list(RESPONSES_SHAPES))
def test_the_reserved_input_covers_what_responses_bills(
    shape: str, model: str, client: openai.OpenAI
) -> None:
    """The bound of each Responses request shape covers the input the provider billed."""
    kwargs: dict[str, Any] = {**RESPONSES_SHAPES[shape], "model": model, "max_output_tokens": 50}
    response = client.responses.create(**kwargs)
    assert response.usage is not None
    bound = _input.responses(kwargs, model).tokens
    assert bound >= response.usage.input_tokens


def test_stored_history_is_bounded_by_the_context_window(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """A previous_response_id brings history costspan cannot see: the reservation is the
    model's whole context window, never zero."""
    first = client.responses.create(model="gpt-4o", input="remember this " * 100)
    span_exporter.clear()
    with costspan.budget(usd=5):
        client.responses.create(
            model="gpt-4o", input="and?", previous_response_id=first.id, max_output_tokens=10
        )
    estimate = costspan.estimate("gpt-4o", "x", operation="responses")
    assert estimate.uncounted == ()
    counted = _input.responses({"input": "and?", "previous_response_id": first.id}, "gpt-4o")
    assert counted.unknown == ("previous_response_id",)
    span = attrs(only_span(span_exporter))
    # 128,000 context tokens at $2.50 per million: the reservation is at least $0.32.
    assert span["costspan.budget.estimate_usd"] >= 0.32


def test_a_file_is_bounded_by_the_context_window_or_the_setting() -> None:
    """A file part cannot be counted: the context window bounds it (genai-prices knows
    gpt-4o's), else COSTSPAN_MAX_INPUT_TOKENS."""
    messages = _user([{"type": "file", "file": {"file_id": "file-abc"}}])
    assert costspan.estimate("gpt-4o", messages).input_tokens == 128_000
    costspan.configure(
        max_input_tokens=12_345, prices={"acme-1": {"input_mtok": 1, "output_mtok": 1}}
    )
    assert costspan.estimate("acme-1", messages).input_tokens == 12_345


@pytest.mark.parametrize(
    ("size", "fmt"),
    [((2048, 4096), "PNG"), ((333, 777), "JPEG"), ((64, 48), "GIF"), ((1, 1), "WEBP")],
)
def test_image_sizes_come_from_the_header(size: tuple[int, int], fmt: str) -> None:
    """Width and height are read from the data URL's image header, for every common format."""
    assert data_url_size(_png(*size, fmt)) == size


def test_images_follow_openais_formulas() -> None:
    """The published worked examples: 2048x4096 high on gpt-4o is 1105 tokens; low detail is
    the base; an unknown size is the model's worst case; patch models count patches."""
    assert image_tokens("gpt-4o", (2048, 4096), "high") == 1105
    assert image_tokens("gpt-4o", (2048, 4096), "low") == 85
    assert image_tokens("gpt-4o", None, "auto") == 85 + 170 * 8
    assert image_tokens("gpt-4.1-mini", (1800, 2400), None) == math.ceil(1536 * 1.62)
    assert image_tokens("gpt-4o-mini", (512, 512), "high") == 2833 + 5667
    assert data_url_size("data:image/png;base64,bm90IGFuIGltYWdl") is None


def test_token_arrays_count_as_their_length() -> None:
    """Embeddings and legacy prompts given as token ids count one token per id."""
    assert _input.prompt([1, 2, 3, 4], "text-embedding-3-small").tokens == 4
    assert _input.prompt([[1, 2], [3, 4, 5]], "text-embedding-3-small").tokens == 5


def test_reasoning_items_count_their_encrypted_content() -> None:
    """An encrypted reasoning item is billed as the reasoning it stands for: bounded by its
    length (the text is shorter than its encryption)."""
    item = {"type": "reasoning", "encrypted_content": "z" * 1000, "summary": []}
    assert _input.responses({"input": [item]}, "o4-mini").tokens >= 1000


@pytest.mark.parametrize(
    ("provider", "parameter"),
    [("openai", "max_completion_tokens"), ("deepseek", "max_tokens")],
)
def test_an_uncapped_budgeted_request_gets_a_cap(
    provider: str,
    parameter: str,
    client: openai.OpenAI,
    server: OpenAICompatibleServer,
    span_exporter: InMemorySpanExporter,
) -> None:
    """Under a budget, a request without an output cap is given one (in the parameter its
    provider takes), reserved and marked on the span; outside budgets nothing changes."""
    costspan.configure(provider_hosts={"127.0.0.1": provider})
    model = "gpt-4o" if provider == "openai" else "deepseek-chat"
    client.chat.completions.create(model=model, messages=_user("hi"))
    assert "max_completion_tokens" not in server.requests[-1].body
    assert "max_tokens" not in server.requests[-1].body
    span_exporter.clear()
    with costspan.budget(usd=5):
        client.chat.completions.create(model=model, messages=_user("hi"))
    assert server.requests[-1].body[parameter] == 4096
    span = attrs(only_span(span_exporter))
    assert span["costspan.budget.output_cap_set"] == 4096
    assert span["gen_ai.request.max_tokens"] == 4096


def test_responses_and_warn_budgets(client: openai.OpenAI, server: OpenAICompatibleServer) -> None:
    """Responses get max_output_tokens; a budget that only warns changes no request."""
    with costspan.budget(usd=5):
        client.responses.create(model="gpt-4o", input="hi")
    assert server.requests[-1].body["max_output_tokens"] == 4096
    with costspan.budget(usd=5, on_exceed="warn"):
        client.responses.create(model="gpt-4o", input="hi")
    assert "max_output_tokens" not in server.requests[-1].body


def test_reserve_mode_reserves_the_context_window_and_changes_nothing(
    client: openai.OpenAI, server: OpenAICompatibleServer, span_exporter: InMemorySpanExporter
) -> None:
    """COSTSPAN_UNCAPPED_OUTPUT=reserve: the request goes as written, and the reservation is
    the most the model can answer (its context window less the input)."""
    costspan.configure(uncapped_output="reserve")
    with costspan.budget(usd=5):
        client.chat.completions.create(model="gpt-4o", messages=_user("hi"))
    assert "max_completion_tokens" not in server.requests[-1].body
    span = attrs(only_span(span_exporter))
    assert span["costspan.budget.estimate_usd"] > 1.2  # ~128k output tokens at $10 a million
    with pytest.raises(costspan.BudgetExceeded), costspan.budget(usd="0.5"):
        client.chat.completions.create(model="gpt-4o", messages=_user("hi"))


def test_a_call_that_costs_more_than_it_held_is_marked(
    client: openai.OpenAI,
    span_exporter: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A gateway adding a large prompt of its own on the first call: the cost past the
    reservation is recorded in full, marked on the span, and warned about once."""
    with costspan.budget(usd=5) as b:
        client.chat.completions.create(
            model="gpt-4o",
            messages=_user("hi"),
            max_completion_tokens=10,
            extra_headers={"x-costspan-test-extra-input-tokens": "20000"},
        )
    span = attrs(only_span(span_exporter))
    assert span["costspan.budget.overrun_usd"] > 0.04
    assert float(b.spent_usd) == pytest.approx(span["gen_ai.usage.cost.amount"], abs=1e-6)
    assert "cost $" in caplog.text
    assert "more than the worst case it reserved" in caplog.text


def test_a_compatible_server_on_an_unknown_host_is_priced_by_its_model(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """An OpenAI-compatible server on a host costspan does not know, serving another
    provider's model: priced as that model (not left unpriced, which a USD budget could not
    bound), and reserved with the starting factor of a tokenizer costspan does not ship."""
    counted = _input.chat({"messages": _user("hi")}, "deepseek-chat").tokens
    cold = costspan.estimate("deepseek-chat", _user("hi"), max_output_tokens=10)
    assert cold.input_tokens >= counted * 1.5  # before any call of it was seen
    with costspan.budget(usd=1):
        client.chat.completions.create(
            model="deepseek-chat", messages=_user("hi"), max_completion_tokens=10
        )
    span = attrs(only_span(span_exporter))
    assert span["gen_ai.provider.name"] == "openai"  # all the host says
    assert span["costspan.price.provider"] == "deepseek"
    assert span["gen_ai.usage.cost.amount"] > 0


def test_token_arrays_are_billed_as_counted(client: openai.OpenAI) -> None:
    """Embeddings and legacy prompts sent as token ids: the bound (one token per id) covers
    what the server bills (one per id, as OpenAI does)."""
    embedded = client.embeddings.create(model="text-embedding-3-small", input=[[1, 2, 3], [4, 5]])
    assert embedded.usage.prompt_tokens == _input.prompt([[1, 2, 3], [4, 5]], "x").tokens == 5
    completed = client.completions.create(
        model="gpt-3.5-turbo-instruct", prompt=[15496, 995, 0], max_tokens=5
    )
    assert completed.usage is not None
    assert completed.usage.prompt_tokens == 3
