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


def test_absent_usage_is_none() -> None:
    """No usage object means no usage, not zero."""
    assert from_openai(None) is None
