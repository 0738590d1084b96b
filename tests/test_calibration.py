"""Tokenizer truth: what the calibration learns from settled calls, and what it refuses to learn
(answers it cannot believe, requests it could not count)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import openai
import pytest

import costspan
from costspan import BudgetExceeded
from costspan._calibration import (
    FOREIGN_FACTOR,
    MAX_EXTRA,
    MAX_RATIO,
    OPENAI_FACTOR,
    Calibration,
    plausible,
)
from costspan._money import MAX_USD
from costspan.testing import OpenAICompatibleServer
from tests.conftest import USER

PROMPT: Any = [{"role": "user", "content": "Summarise this report: " + "Revenue grew. " * 300}]


def test_a_provider_that_bills_more_is_reserved_more() -> None:
    """Believable ratios are learned: the factor is their high quantile, never below 1."""
    calibration = Calibration()
    assert calibration.factor("deepseek", "deepseek-chat") == FOREIGN_FACTOR
    assert calibration.factor("openai", "gpt-4o") == OPENAI_FACTOR
    for _ in range(10):
        calibration.observe("openai", "gpt-4o", 1000, 1360)
    assert calibration.factor("openai", "gpt-4o") == pytest.approx(1.36)
    calibration.observe("deepseek", "deepseek-chat", 1000, 500)
    assert calibration.factor("deepseek", "deepseek-chat") == 1.0


@pytest.mark.parametrize(
    ("counted", "billed", "believed"),
    [
        (1000, 1360, True),
        (10, 10 + MAX_EXTRA, True),  # a gateway's own prompt on a short request
        (1000, 1000 * MAX_RATIO + MAX_EXTRA, True),
        (1000, 1000 * MAX_RATIO + MAX_EXTRA + 1, False),
        (10, 10**30, False),  # a hostile or broken usage
        (0, 100, False),
        (100, -1, False),
    ],
)
def test_only_believable_answers_are_learned(counted: int, billed: int, believed: bool) -> None:
    """An answer billing far more than any tokenizer or gateway explains is not learned."""
    assert plausible(counted, billed) is believed
    calibration = Calibration()
    calibration.observe("openai", "gpt-4o", counted, billed)
    expected = max(1.0, billed / counted) if believed else OPENAI_FACTOR
    assert calibration.factor("openai", "gpt-4o") == pytest.approx(expected)


@pytest.mark.usefixtures("instrumented", "fresh_ledger")
def test_one_absurd_usage_does_not_poison_later_budgets(
    client: openai.OpenAI,
) -> None:
    """A server that once reports 10**24 input tokens: later budgeted calls of that model are
    reserved as before (not refused forever), and the absurd call itself is charged the most a
    ledger holds (its budget is then spent), never a ledger error that loses the charge."""
    before = costspan.estimate("gpt-4o-mini", PROMPT, max_output_tokens=50).usd
    absurd = {"x-costspan-test-extra-input-tokens": str(10**24)}
    with costspan.budget(usd="10") as poisoned:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=USER, max_completion_tokens=50, extra_headers=absurd
        )
        with pytest.raises(BudgetExceeded):
            client.chat.completions.create(
                model="gpt-4o-mini", messages=USER, max_completion_tokens=50
            )
    assert poisoned.spent_usd == MAX_USD
    client.chat.completions.create(  # outside any budget: sampled by the calibration too
        model="gpt-4o-mini", messages=USER, max_completion_tokens=50, extra_headers=absurd
    )
    assert costspan.estimate("gpt-4o-mini", PROMPT, max_output_tokens=50).usd == before
    with costspan.budget(usd="0.01") as b:
        for _ in range(3):
            client.chat.completions.create(
                model="gpt-4o-mini", messages=PROMPT, max_completion_tokens=50
            )
    assert b.calls == 3
    assert b.spent_usd < Decimal("0.01")


@pytest.mark.usefixtures("instrumented")
def test_a_request_with_a_file_teaches_nothing(
    client: openai.OpenAI, server: OpenAICompatibleServer
) -> None:
    """A file's tokens cannot be counted offline: a call that attaches one must not teach the
    calibration that the model bills hundreds of times costspan's count."""
    before = costspan.estimate("gpt-4o-mini", PROMPT, max_output_tokens=50).usd
    with_file: Any = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Summarise the attached report."},
                {"type": "file", "file": {"file_id": "file-abc"}},
            ],
        }
    ]
    headers = {"x-costspan-test-extra-input-tokens": "120000"}  # the file, as billed
    with costspan.budget(usd="1"):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=with_file, max_completion_tokens=50, extra_headers=headers
        )
    client.chat.completions.create(
        model="gpt-4o-mini", messages=with_file, max_completion_tokens=50, extra_headers=headers
    )
    assert len(server.requests) == 2
    assert costspan.estimate("gpt-4o-mini", PROMPT, max_output_tokens=50).usd == before
