"""A support bot's test suite that asserts what its LLM calls cost (costspan's pytest plugin).

The fixtures come from the plugin costspan installs: ``costspan_server`` (the local
OpenAI-compatible server) and ``costspan_spend`` (this test's calls and their cost).
"""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

import costspan
from costspan.pytest_plugin import Spend
from costspan.testing import OpenAICompatibleServer


def answer(client: openai.OpenAI, question: str) -> str:
    """The code under test: one cheap model call per question."""
    with costspan.tags(feature="support-answer"):
        reply = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[
                {"role": "system", "content": "Answer in one short sentence."},
                {"role": "user", "content": question},
            ],
            max_completion_tokens=100,
        )
    return reply.choices[0].message.content or ""


@pytest.fixture(name="client")
def _client(costspan_server: OpenAICompatibleServer) -> Iterator[openai.OpenAI]:
    # Closed here, not left to the garbage collector: an unclosed client's socket is a
    # ResourceWarning whenever the collector happens to finalize the socket first.
    with openai.OpenAI(base_url=costspan_server.base_url, api_key="test", max_retries=0) as client:
        yield client


def test_an_answer_costs_under_a_tenth_of_a_cent(
    client: openai.OpenAI, costspan_spend: Spend
) -> None:
    assert answer(client, "Where is my parcel?")
    assert costspan_spend.calls == 1
    costspan_spend.assert_under(usd="0.001", feature="support-answer")


@pytest.mark.costspan_budget(usd="0.005")
def test_a_conversation_of_ten_answers_fits_half_a_cent(client: openai.OpenAI) -> None:
    for i in range(10):
        assert answer(client, f"Question {i}: can I change my delivery address?")
