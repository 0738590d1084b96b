"""The bundled server bills input and output as OpenAI does, seen through the real openai client.

Each test compares a request with and without one feature (tools, a schema, an image, ...): the
usage must grow by exactly what the billing rule says.
"""

from __future__ import annotations

import json
import math
from typing import Any

import openai
import pytest

from costspan._tokens import count_text
from costspan.testing import _media as media
from tests.testing.images import data_url, png_url, wav_bytes

QUESTION: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name"},
                "unit": {"type": "string", "enum": ["c", "f"]},
            },
            "required": ["city"],
        },
    },
}
# What OpenAI renders WEATHER into (the community's reverse-engineered form), written by hand.
WEATHER_RENDERED = """namespace functions {

// Get the weather
type get_weather = (_: {
// City name
city: string,
unit?: "c" | "f",
}) => any;

} // namespace functions"""
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current time in a time zone",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string"}},
            "required": ["zone"],
        },
    },
}


def chat_input(client: openai.OpenAI, model: str = "gpt-4o", **kwargs: Any) -> int:
    kwargs.setdefault("messages", QUESTION)
    result = client.chat.completions.create(model=model, **kwargs)
    assert result.usage is not None
    return result.usage.prompt_tokens


def tokens(text: str) -> int:
    return count_text(text, "gpt-4o")


def test_plain_text_is_billed_as_the_cookbook_counts_it(client: openai.OpenAI) -> None:
    """3 to prime the reply, then 3 + role + content per message (+ name and 1 when named)."""
    messages: list[Any] = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hello there", "name": "alice"},
    ]
    expected = 3 + (3 + tokens("system") + tokens("You are terse."))
    expected += 3 + tokens("user") + tokens("Hello there") + tokens("alice") + 1
    assert chat_input(client, messages=messages) == expected


def test_tools_bill_their_rendered_definitions(client: openai.OpenAI) -> None:
    """One tool adds its TypeScript-like rendering + 9; a second tool adds more."""
    bare = chat_input(client)
    one = chat_input(client, tools=[WEATHER])
    two = chat_input(client, tools=[WEATHER, TIME])
    assert one - bare == tokens(WEATHER_RENDERED) + 9
    assert two > one
    # Not a per-definition constant: the second tool costs what its own text costs.
    assert two - one != one - bare


def test_tools_with_a_system_message_reuse_it(client: openai.OpenAI) -> None:
    """With a system message of its own the tools section costs 4 tokens fewer."""
    system: list[Any] = [{"role": "system", "content": "Be brief."}, *QUESTION]
    bare = chat_input(client, messages=system)
    assert chat_input(client, messages=system, tools=[WEATHER]) - bare == (
        tokens(WEATHER_RENDERED) + 9 - 4
    )


def test_legacy_functions_and_responses_tools_bill_like_chat_tools(client: openai.OpenAI) -> None:
    """functions= and Responses' flat function tools render the same definitions."""
    with_tools = chat_input(client, tools=[WEATHER])
    assert chat_input(client, functions=[WEATHER["function"]]) == with_tools
    flat = {"type": "function", **WEATHER["function"]}
    bare = client.responses.create(model="gpt-4o", input=QUESTION)
    tooled = client.responses.create(model="gpt-4o", input=QUESTION, tools=[flat])  # pyright: ignore[reportArgumentType]
    assert bare.usage is not None
    assert tooled.usage is not None
    assert tooled.usage.input_tokens - bare.usage.input_tokens == tokens(WEATHER_RENDERED) + 9


def test_tool_choice_costs_little(client: openai.OpenAI) -> None:
    """Naming a function adds 4 + its name; "none" adds 1; auto and parallel_tool_calls nothing."""
    auto = chat_input(client, tools=[WEATHER], tool_choice="auto", parallel_tool_calls=False)
    assert auto == chat_input(client, tools=[WEATHER])
    assert chat_input(client, tools=[WEATHER], tool_choice="none") == auto + 1
    named = {"type": "function", "function": {"name": "get_weather"}}
    assert chat_input(client, tools=[WEATHER], tool_choice=named) == (
        auto + 4 + tokens("get_weather")
    )


def test_nested_and_referenced_parameters_render_and_grow(client: openai.OpenAI) -> None:
    """Objects, arrays, unions, $ref and recursion render (a deeper schema costs more)."""
    node = {
        "type": "function",
        "function": {
            "name": "plan",
            "parameters": {
                "type": "object",
                "$defs": {
                    "Step": {
                        "type": "object",
                        "properties": {
                            "title": {"type": ["string", "null"]},
                            "children": {"type": "array", "items": {"$ref": "#/$defs/Step"}},
                        },
                    }
                },
                "properties": {
                    "steps": {"type": "array", "items": {"$ref": "#/$defs/Step"}},
                    "mode": {"anyOf": [{"type": "integer"}, {"const": "auto"}], "default": "auto"},
                },
            },
        },
    }
    shallow = {
        "type": "function",
        "function": {"name": "plan", "parameters": {"type": "object", "properties": {}}},
    }
    assert chat_input(client, tools=[node]) > chat_input(client, tools=[shallow])


def test_structured_output_bills_its_schema(client: openai.OpenAI) -> None:
    """A json_schema response format adds its JSON text under a small header, in both APIs."""
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "celsius": {"type": "number"}},
        "required": ["city", "celsius"],
        "additionalProperties": False,
    }
    added = tokens(f"# Response Formats\n\n## weather\n\n{json.dumps(schema)}")
    fmt = {"type": "json_schema", "json_schema": {"name": "weather", "schema": schema}}
    assert chat_input(client, response_format=fmt) - chat_input(client) == added
    bare = client.responses.create(model="gpt-4o", input=QUESTION)
    shaped = client.responses.create(
        model="gpt-4o",
        input=QUESTION,
        text={"format": {"type": "json_schema", "name": "weather", "schema": schema}},
    )
    assert bare.usage is not None
    assert shaped.usage is not None
    assert shaped.usage.input_tokens - bare.usage.input_tokens == added
    assert set(json.loads(shaped.output_text)) == {"city", "celsius"}


def _with_image(url: str, detail: str | None = None) -> list[Any]:
    image: dict[str, Any] = {"url": url, **({"detail": detail} if detail else {})}
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": image},
            ],
        }
    ]


TEXT_ONLY: list[Any] = [{"role": "user", "content": [{"type": "text", "text": "What is this?"}]}]
TALL = png_url(2048, 4096)


@pytest.mark.parametrize(
    ("model", "detail", "expected"),
    [
        ("gpt-4o", "high", 85 + 170 * 6),  # 2048x4096 -> 768x1536 -> 2x3 tiles = 1105
        ("gpt-4o", None, 85 + 170 * 6),  # auto is high
        ("gpt-4o", "low", 85),
        ("gpt-4o-mini", "high", 2833 + 5667 * 6),
        ("gpt-4o-mini", "low", 2833),
        ("gpt-4.1-mini", "high", round(27 * 54 * 1.62)),  # 1458 patches after the shrink
        ("gpt-5-mini", "high", round(27 * 54 * 1.62)),
        ("o4-mini", "high", round(27 * 54 * 1.72)),
    ],
)
def test_a_2048x4096_png_costs_what_the_formula_says(
    client: openai.OpenAI, model: str, detail: str | None, expected: int
) -> None:
    """The image's tokens are added on top of the text, per OpenAI's tile or patch formula."""
    bare = chat_input(client, model, messages=TEXT_ONLY)
    assert chat_input(client, model, messages=_with_image(TALL, detail)) - bare == expected


def test_responses_input_image_is_billed_too(client: openai.OpenAI) -> None:
    """input_image parts of Responses bill like image_url parts of chat."""
    text = {"type": "input_text", "text": "What is this?"}
    image = {"type": "input_image", "image_url": TALL, "detail": "high"}
    bare = client.responses.create(model="gpt-4o", input=[{"role": "user", "content": [text]}])  # pyright: ignore[reportArgumentType]
    seen = client.responses.create(
        model="gpt-4o",
        input=[{"role": "user", "content": [text, image]}],  # pyright: ignore[reportArgumentType]
    )
    assert bare.usage is not None
    assert seen.usage is not None
    assert seen.usage.input_tokens - bare.usage.input_tokens == 1105


def test_a_linked_image_is_billed_as_2048_square(client: openai.OpenAI) -> None:
    """The server cannot fetch URLs: an http(s) image is billed as 2048x2048 (768x768: 4 tiles)."""
    bare = chat_input(client, messages=TEXT_ONLY)
    linked = _with_image("https://example.com/cat.png")
    assert chat_input(client, messages=linked) - bare == 85 + 4 * 170
    low = _with_image("https://example.com/cat.png", "low")
    assert chat_input(client, messages=low) - bare == 85


def test_jpeg_and_webp_data_urls_are_measured(client: openai.OpenAI) -> None:
    """The size comes from the bytes whatever the format: a 512x512 JPEG or WebP is one tile."""
    from tests.testing.images import image_bytes

    bare = chat_input(client, messages=TEXT_ONLY)
    for fmt, mime in (("JPEG", "image/jpeg"), ("WEBP", "image/webp"), ("GIF", "image/gif")):
        url = data_url(image_bytes(512, 512, fmt), mime)
        assert chat_input(client, messages=_with_image(url, "high")) - bare == 85 + 170


def test_a_data_url_without_an_image_is_a_400(client: openai.OpenAI) -> None:
    """Bytes that are no image are refused the way OpenAI refuses them, and nothing is billed."""
    with pytest.raises(openai.BadRequestError, match="unsupported image"):
        chat_input(client, messages=_with_image(data_url(b"plain text, not a picture")))
    with pytest.raises(openai.BadRequestError, match="unsupported image"):
        chat_input(client, messages=_with_image("data:image/png;base64,%%%"))


def test_audio_bills_ten_tokens_a_second_and_reports_them(client: openai.OpenAI) -> None:
    """A 3 s WAV adds 30 tokens, reported as audio_tokens; an mp3 is billed as 60 s."""
    import base64

    def audio(data: bytes, fmt: str) -> list[Any]:
        part = {
            "type": "input_audio",
            "input_audio": {"data": base64.b64encode(data).decode(), "format": fmt},
        }
        return [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, part]}]

    bare = chat_input(client, "gpt-4o-audio-preview", messages=TEXT_ONLY)
    result = client.chat.completions.create(
        model="gpt-4o-audio-preview", messages=audio(wav_bytes(3), "wav")
    )
    assert result.usage is not None
    assert result.usage.prompt_tokens - bare == 30
    assert result.usage.prompt_tokens_details is not None
    assert result.usage.prompt_tokens_details.audio_tokens == 30
    mp3 = chat_input(client, "gpt-4o-audio-preview", messages=audio(b"ID3\x03fake", "mp3"))
    assert mp3 - bare == media.UNREADABLE_AUDIO_SECONDS * 10


def test_files_bill_a_fixed_amount(client: openai.OpenAI) -> None:
    """A file part costs FILE_TOKENS (1000) whatever it holds."""
    from costspan.testing._billing import FILE_TOKENS

    part = {"type": "file", "file": {"file_id": "file-abc"}}
    with_file = [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, part]}]
    assert chat_input(client, messages=with_file) - chat_input(client, messages=TEXT_ONLY) == (
        FILE_TOKENS
    )
    response = client.responses.create(
        model="gpt-4o",
        input=[{"role": "user", "content": [{"type": "input_file", "file_id": "file-abc"}]}],
    )
    assert response.usage is not None
    assert response.usage.input_tokens >= FILE_TOKENS


def test_tool_call_history_is_billed(client: openai.OpenAI) -> None:
    """An assistant's tool call bills 3 + name + arguments; the tool's answer is a message."""
    arguments = '{"city": "Paris"}'
    history: list[Any] = [
        *QUESTION,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C and sunny"},
    ]
    expected = (3 + tokens("assistant") + 3 + tokens("get_weather") + tokens(arguments)) + (
        3 + tokens("tool") + tokens("18 C and sunny")
    )
    assert chat_input(client, messages=history) - chat_input(client) == expected


def test_responses_items_of_every_kind_are_billed(client: openai.OpenAI) -> None:
    """function_call, function_call_output and reasoning items each add their text + 3."""
    arguments = '{"city": "Paris"}'
    items: list[Any] = [
        *QUESTION,
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Look"}]},
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": arguments},
        {"type": "function_call_output", "call_id": "c1", "output": "18 C and sunny"},
    ]
    bare = client.responses.create(model="gpt-4o", input=QUESTION)
    full = client.responses.create(model="gpt-4o", input=items)
    assert bare.usage is not None
    assert full.usage is not None
    expected = (3 + tokens("Look")) + (3 + tokens("get_weather") + tokens(arguments))
    expected += 3 + tokens("18 C and sunny")
    assert full.usage.input_tokens - bare.usage.input_tokens == expected


def test_previous_response_context_is_billed_again(client: openai.OpenAI) -> None:
    """previous_response_id bills the previous input and visible output; an unknown id is a 400."""
    first = client.responses.create(model="gpt-4o", input="Tell me about Paris")
    assert first.usage is not None
    follow = client.responses.create(
        model="gpt-4o", input="And Rome?", previous_response_id=first.id
    )
    alone = client.responses.create(model="gpt-4o", input="And Rome?")
    assert follow.usage is not None
    assert alone.usage is not None
    assert follow.usage.input_tokens - alone.usage.input_tokens == (
        first.usage.input_tokens + first.usage.output_tokens
    )
    with pytest.raises(openai.BadRequestError, match="not found"):
        client.responses.create(model="gpt-4o", input="x", previous_response_id="resp_unknown")


def test_item_reference_bills_the_referenced_message(client: openai.OpenAI) -> None:
    """An item_reference to a message the server produced bills that message; unknown is a 400."""
    first = client.responses.create(model="gpt-4o", input="Tell me about Paris")
    message_id = first.output[-1].id
    assert isinstance(message_id, str)
    assert message_id.startswith("msg_")
    bare = client.responses.create(model="gpt-4o", input=QUESTION)
    reference: list[Any] = [{"type": "item_reference", "id": message_id}, *QUESTION]
    referenced = client.responses.create(model="gpt-4o", input=reference)
    assert bare.usage is not None
    assert referenced.usage is not None
    assert first.usage is not None
    assert referenced.usage.input_tokens - bare.usage.input_tokens == (
        3 + tokens("assistant") + first.usage.output_tokens
    )
    with pytest.raises(openai.BadRequestError, match="not found"):
        client.responses.create(model="gpt-4o", input=[{"type": "item_reference", "id": "msg_x"}])


# -- output -------------------------------------------------------------------------------------
def test_n_choices_multiply_the_output(client: openai.OpenAI) -> None:
    """n=3 returns three choices and bills three completions."""
    one = client.chat.completions.create(model="gpt-4o", messages=QUESTION)
    three = client.chat.completions.create(model="gpt-4o", messages=QUESTION, n=3)
    assert one.usage is not None
    assert three.usage is not None
    assert len(three.choices) == 3
    assert three.usage.completion_tokens == 3 * one.usage.completion_tokens
    assert three.usage.prompt_tokens == one.usage.prompt_tokens


def test_legacy_best_of_bills_every_candidate(client: openai.OpenAI) -> None:
    """best_of=3 with n=1 returns one completion and bills three; best_of < n is a 400."""
    one = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi", max_tokens=50)
    best = client.completions.create(
        model="gpt-3.5-turbo-instruct", prompt="Say hi", max_tokens=50, best_of=3
    )
    assert one.usage is not None
    assert best.usage is not None
    assert len(best.choices) == 1
    assert best.usage.completion_tokens == 3 * one.usage.completion_tokens
    with pytest.raises(openai.BadRequestError, match="best_of"):
        client.completions.create(model="gpt-3.5-turbo-instruct", prompt="x", n=3, best_of=2)


LONG = {"x-costspan-test-output-tokens": "300"}


def test_legacy_completions_default_to_16_tokens(client: openai.OpenAI) -> None:
    """Without max_tokens the legacy API stops at 16 tokens, as OpenAI's does."""
    result = client.completions.create(
        model="gpt-3.5-turbo-instruct", prompt="Say hi", extra_headers=LONG
    )
    assert result.usage is not None
    assert result.usage.completion_tokens == 16
    assert result.choices[0].finish_reason == "length"


@pytest.mark.parametrize("stream", [False, True])
def test_chat_caps_are_honoured(client: openai.OpenAI, stream: bool) -> None:
    """A long answer stops at max_completion_tokens (and at max_tokens), streamed or not."""
    for cap_name in ("max_completion_tokens", "max_tokens"):
        kwargs: dict[str, Any] = {cap_name: 40, "extra_headers": LONG}
        if stream:
            chunks = list(
                client.chat.completions.create(
                    model="gpt-4o",
                    messages=QUESTION,
                    stream=True,
                    stream_options={"include_usage": True},
                    **kwargs,
                )
            )
            usage = chunks[-1].usage
            reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
            assert usage is not None
            assert usage.completion_tokens == 40
            assert reasons[-1] == "length"
        else:
            result = client.chat.completions.create(model="gpt-4o", messages=QUESTION, **kwargs)
            assert result.usage is not None
            assert result.usage.completion_tokens == 40
            assert result.choices[0].finish_reason == "length"


def test_uncapped_answers_follow_the_length_header(client: openai.OpenAI) -> None:
    """Without a cap the answer is as long as x-costspan-test-output-tokens asks."""
    result = client.chat.completions.create(model="gpt-4o", messages=QUESTION, extra_headers=LONG)
    assert result.usage is not None
    assert result.usage.completion_tokens == 300
    assert result.choices[0].finish_reason == "stop"


def test_reasoning_counts_inside_the_cap(client: openai.OpenAI) -> None:
    """A cap of 100 with 64 reasoning tokens leaves 36 visible; a cap of 10 leaves nothing."""
    roomy = client.chat.completions.create(
        model="o3", messages=QUESTION, max_completion_tokens=100, extra_headers=LONG
    )
    assert roomy.usage is not None
    assert roomy.usage.completion_tokens == 100
    assert roomy.usage.completion_tokens_details is not None
    assert roomy.usage.completion_tokens_details.reasoning_tokens == 64
    assert roomy.choices[0].message.content
    tight = client.chat.completions.create(model="o3", messages=QUESTION, max_completion_tokens=10)
    assert tight.usage is not None
    assert tight.usage.completion_tokens == 10
    assert tight.usage.completion_tokens_details is not None
    assert tight.usage.completion_tokens_details.reasoning_tokens == 10
    assert tight.choices[0].message.content == ""
    assert tight.choices[0].finish_reason == "length"


def test_forced_reasoning_stays_within_the_cap(client: openai.OpenAI) -> None:
    """x-costspan-test-reasoning-tokens cannot push the output past max_completion_tokens."""
    result = client.chat.completions.create(
        model="gpt-5",
        messages=QUESTION,
        max_completion_tokens=50,
        extra_headers={"x-costspan-test-reasoning-tokens": "500"},
    )
    assert result.usage is not None
    assert result.usage.completion_tokens == 50


@pytest.mark.parametrize("stream", [False, True])
def test_responses_reasoning_can_eat_the_whole_cap(client: openai.OpenAI, stream: bool) -> None:
    """max_output_tokens below the reasoning: incomplete, no message, output == the cap."""
    if stream:
        events = list(
            client.responses.create(
                model="gpt-5-mini", input="Think hard", max_output_tokens=30, stream=True
            )
        )
        response = events[-1].response  # pyright: ignore[reportAttributeAccessIssue]
        assert events[-1].type == "response.incomplete"
    else:
        response = client.responses.create(
            model="gpt-5-mini", input="Think hard", max_output_tokens=30
        )
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage is not None
    assert response.usage.output_tokens == 30
    assert response.usage.output_tokens_details.reasoning_tokens == 30
    assert response.output_text == ""
    assert [item.type for item in response.output] == ["reasoning"]


def test_a_cap_below_one_is_refused(client: openai.OpenAI) -> None:
    """max_completion_tokens=0 is a 400, as OpenAI answers it."""
    with pytest.raises(openai.BadRequestError, match="max_completion_tokens"):
        client.chat.completions.create(model="gpt-4o", messages=QUESTION, max_completion_tokens=0)


# -- other tokenizers and gateways --------------------------------------------------------------
def test_input_scale_header_scales_text_input(client: openai.OpenAI) -> None:
    """x-costspan-test-input-scale multiplies the billed input, rounded up."""
    base = chat_input(client)
    scaled = chat_input(client, extra_headers={"x-costspan-test-input-scale": "1.37"})
    assert scaled == math.ceil(base * 1.37)


def test_input_scale_leaves_images_alone(client: openai.OpenAI) -> None:
    """A tokenizer changes text tokens, not what an image costs."""
    scale = {"x-costspan-test-input-scale": "2"}
    text = chat_input(client, messages=TEXT_ONLY, extra_headers=scale)
    image = chat_input(client, messages=_with_image(TALL, "high"), extra_headers=scale)
    assert image - text == 1105


def test_extra_input_header_adds_a_gateway_prompt(client: openai.OpenAI) -> None:
    """x-costspan-test-extra-input-tokens adds a fixed amount to every API's input."""
    extra = {"x-costspan-test-extra-input-tokens": "250"}
    assert chat_input(client, extra_headers=extra) == chat_input(client) + 250
    plain = client.responses.create(model="gpt-4o", input="hi")
    more = client.responses.create(model="gpt-4o", input="hi", extra_headers=extra)
    assert plain.usage is not None
    assert more.usage is not None
    assert more.usage.input_tokens == plain.usage.input_tokens + 250


def test_output_scale_header_scales_the_answer(client: openai.OpenAI) -> None:
    """x-costspan-test-output-scale bills the same text at more tokens, still within the cap."""
    plain = client.chat.completions.create(model="gpt-4o", messages=QUESTION)
    doubled = client.chat.completions.create(
        model="gpt-4o", messages=QUESTION, extra_headers={"x-costspan-test-output-scale": "2"}
    )
    assert plain.usage is not None
    assert doubled.usage is not None
    assert doubled.choices[0].message.content == plain.choices[0].message.content
    assert doubled.usage.completion_tokens == 2 * plain.usage.completion_tokens
    capped = client.chat.completions.create(
        model="gpt-4o",
        messages=QUESTION,
        max_completion_tokens=9,
        extra_headers={"x-costspan-test-output-scale": "2"},
    )
    assert capped.usage is not None
    assert capped.usage.completion_tokens == 9


@pytest.mark.parametrize("header", ["x-costspan-test-input-scale", "x-costspan-test-output-scale"])
@pytest.mark.parametrize("value", ["0", "-1", "lots", "nan"])
def test_bad_scale_headers_are_a_clear_400(client: openai.OpenAI, header: str, value: str) -> None:
    """A scale that is not a positive number is refused with the header's name."""
    with pytest.raises(openai.BadRequestError, match=header):
        chat_input(client, extra_headers={header: value})


@pytest.mark.parametrize(
    ("model", "scale"),
    [
        ("claude-sonnet-4-5", 1.25),
        ("mistral-large-latest", 1.25),
        ("deepseek-chat", 1.2),
        ("llama-3.3-70b-versatile", 1.15),
        ("gemini-2.5-flash", 1.15),
        ("acme-support-7b", 1),  # unknown models count like OpenAI's
    ],
)
def test_other_providers_count_text_with_their_own_tokenizer(
    client: openai.OpenAI, model: str, scale: float
) -> None:
    """Models that OpenAI does not serve bill more tokens for the same o200k text."""
    base = chat_input(client, "gpt-4o")
    assert chat_input(client, model) == math.ceil(base * scale)
    header = {"x-costspan-test-input-scale": "1"}
    assert chat_input(client, model, extra_headers=header) == base  # the header overrides
