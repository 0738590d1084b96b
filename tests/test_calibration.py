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
    MAX_SCALE,
    OPENAI_FACTOR,
    REFRESH,
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
    """An answer billing far more than any tokenizer or gateway explains is not learned; one
    that is believed is covered by the calibrated count of the same request."""
    assert plausible(counted, billed) is believed
    calibration = Calibration()
    calibration.observe("openai", "gpt-4o", counted, billed)
    if believed:
        assert billed <= calibration.calibrated("openai", "gpt-4o", counted) <= billed + 1
    else:
        assert calibration.calibrated("openai", "gpt-4o", 1000) == 1000


def test_a_gateways_own_prompt_is_reserved_once_not_multiplied() -> None:
    """A gateway adds 2,000 tokens of its own to every request: after short calls, a long
    prompt is reserved its count (scaled at most MAX_SCALE) plus the 2,000, never the short
    calls' ratio (250x) times its count; once long calls are seen, their scale is used."""
    calibration = Calibration()
    for _ in range(20):
        calibration.observe("openai", "gpt-4o", 8, 2008)
    assert calibration.calibrated("openai", "gpt-4o", 8) >= 2008
    long_bound = calibration.calibrated("openai", "gpt-4o", 4000)
    assert 6008 <= long_bound <= 4000 * MAX_SCALE + 2008
    for _ in range(REFRESH + 1):  # a kept bound is worked out again after REFRESH calls
        calibration.observe("openai", "gpt-4o", 4000, 6000)
    assert 6000 <= calibration.calibrated("openai", "gpt-4o", 4000) <= 6000 + 2008


def test_one_hostile_short_answer_adds_at_most_a_fixed_overhead() -> None:
    """A 2-word prompt answered as billed 32,832 input tokens (believable as a gateway's
    prompt): later long prompts are reserved their count plus that overhead, not 4,000 times
    their count."""
    calibration = Calibration()
    calibration.observe("openai", "gpt-4o-mini", 8, 8 * MAX_RATIO + MAX_EXTRA)
    assert (
        calibration.calibrated("openai", "gpt-4o-mini", 2000) <= 2000 * MAX_SCALE + MAX_EXTRA + 64
    )


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
