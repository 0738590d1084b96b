"""Usage is read from typed objects and dicts of every OpenAI shape, never invented."""

from __future__ import annotations

from openai.types import CompletionUsage
from openai.types.responses import ResponseUsage

from costspan._usage import TokenUsage, from_openai


def test_chat_usage_typed() -> None:
    """Chat usage maps prompt/completion totals and the cached/reasoning details."""
    usage = CompletionUsage.model_validate(
        {
            "prompt_tokens": 1200,
            "completion_tokens": 800,
            "total_tokens": 2000,
            "prompt_tokens_details": {"cached_tokens": 1024, "cache_write_tokens": 100},
            "completion_tokens_details": {"reasoning_tokens": 640},
        }
    )
    assert from_openai(usage) == TokenUsage(1200, 800, 1024, 100, 640)


def test_responses_usage_typed() -> None:
    """Responses usage uses input/output names and *_tokens_details."""
    usage = ResponseUsage.model_validate(
        {
            "input_tokens": 10,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": 5,
            "output_tokens_details": {"reasoning_tokens": 2},
            "total_tokens": 15,
        }
    )
    assert from_openai(usage) == TokenUsage(10, 5, 0, 0, 2)


def test_plain_dict_and_missing_details() -> None:
    """A gateway's dict without detail objects leaves the details unreported (None)."""
    assert from_openai({"prompt_tokens": 3, "total_tokens": 3}) == TokenUsage(input_tokens=3)


def test_nonsense_values_are_ignored() -> None:
    """Negative, boolean or string counts are not counts."""
    assert from_openai({"prompt_tokens": -1, "completion_tokens": True}) is None
    assert from_openai({"prompt_tokens": "12"}) is None


def test_a_usage_with_one_nonsense_count_is_not_believed_at_all() -> None:
    """One valid count next to a nonsense one (a negative output, a boolean input) is no usage:
    pricing the valid half alone would charge a budgeted call less than it held."""
    assert from_openai({"prompt_tokens": 10, "completion_tokens": -(10**9)}) is None
    assert from_openai({"prompt_tokens": True, "completion_tokens": 5}) is None
    assert from_openai({"input_tokens": 10, "output_tokens": "5"}) is None


def test_absent_usage_is_none() -> None:
    """No usage object means no usage, not zero."""
    assert from_openai(None) is None


def test_field_reads_pydantic_fields_extras_and_properties_and_none_for_the_rest() -> None:
    """field() reads a typed openai object without raising for what it lacks: declared fields,
    fields a server added (pydantic extras), properties (Responses' output_text), and None for
    anything else; classes themselves (a response_format model) are read like any object."""
    from openai.types.chat import ChatCompletionChunk
    from openai.types.responses import Response

    from costspan._usage import field

    chunk = ChatCompletionChunk.model_validate(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}],
            "provider_extra": {"cost": 3},
        }
    )
    choice = chunk.choices[0]
    assert field(choice, "delta").content == "hi"
    assert field(choice, "text") is None  # a chat chunk has no legacy `text`
    assert field(chunk, "provider_extra") == {"cost": 3}
    assert field(chunk, "no_such_field") is None
    response = Response.model_validate(
        {
            "id": "r",
            "object": "response",
            "created_at": 1,
            "model": "m",
            "output": [
                {
                    "type": "message",
                    "id": "m1",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": "hello", "annotations": []}],
                }
            ],
            "parallel_tool_calls": False,
            "tool_choice": "auto",
            "tools": [],
        }
    )
    assert field(response, "output_text") == "hello"  # a property, not a field
    assert field(Response, "model_fields") is not None  # a class: read as an object
    assert field({"a": 1}, "a") == 1
    assert field(None, "a") is None
