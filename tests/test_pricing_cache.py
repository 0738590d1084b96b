"""The rate cache gives calc_price's answers: tiers, history, time of day, odd units."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from genai_prices import Usage, calc_price

from costspan._pricing import Pricer
from costspan._usage import TokenUsage


def _ns(when: datetime) -> int:
    return int(when.timestamp()) * 1_000_000_000


def _expected(usage: TokenUsage, model: str, provider_id: str, when: datetime) -> Decimal:
    return calc_price(
        Usage(
            input_tokens=usage.input_tokens,
            cache_read_tokens=usage.cache_read_tokens or 0,
            output_tokens=usage.output_tokens,
        ),
        model,
        provider_id=provider_id,
        genai_request_timestamp=when,
    ).total_price


@pytest.mark.parametrize("input_tokens", [200_000, 200_001, 350_000])
def test_long_context_tier_cliff(input_tokens: int) -> None:
    """Above 200k input tokens every token of claude-sonnet-4-5 is priced at the tier rate."""
    pricer = Pricer()
    now = datetime.now(UTC)
    usage = TokenUsage(input_tokens, 1000, 5000, None, None)
    cost = pricer.price(
        usage, models=("claude-sonnet-4-5",), provider="anthropic", when_ns=_ns(now)
    )
    assert cost is not None
    assert abs(cost.total - _expected(usage, "claude-sonnet-4-5", "anthropic", now)) < Decimal(
        "1e-12"
    )


def test_historic_price_follows_the_request_time() -> None:
    """o3 cost $10/$40 per MTok in April 2025 and $2/$8 later: the request time decides."""
    pricer = Pricer()
    usage = TokenUsage(1_000_000, 1_000_000)
    early = datetime(2025, 4, 20, tzinfo=UTC)
    late = datetime(2025, 6, 20, tzinfo=UTC)
    early_cost = pricer.price(usage, models=("o3",), provider="openai", when_ns=_ns(early))
    late_cost = pricer.price(usage, models=("o3",), provider="openai", when_ns=_ns(late))
    assert early_cost is not None
    assert late_cost is not None
    assert early_cost.total == Decimal(50)
    assert late_cost.total == Decimal(10)


@pytest.mark.parametrize("hour", [3, 12, 20])
def test_time_of_day_prices(hour: int) -> None:
    """DeepSeek's peak and off-peak prices are taken at the request's UTC time."""
    pricer = Pricer()
    when = datetime(2026, 3, 2, hour, 15, tzinfo=UTC)
    usage = TokenUsage(10_000, 2_000, 4_000)
    cost = pricer.price(usage, models=("deepseek-chat",), provider="deepseek", when_ns=_ns(when))
    assert cost is not None
    assert cost.total == _expected(usage, "deepseek-chat", "deepseek", when)


def test_per_request_fees_fall_back_to_exact_pricing() -> None:
    """A price with a unit the probes don't cover (per-request fees) is computed exactly."""
    pricer = Pricer()
    now = datetime.now(UTC)
    usage = TokenUsage(1000, 200)
    cost = pricer.price(usage, models=("sonar",), provider="perplexity", when_ns=_ns(now))
    assert cost is not None
    assert cost.total == _expected(usage, "sonar", "perplexity", now)


def test_models_are_tried_in_order() -> None:
    """An unknown response model falls back to the requested model's price."""
    pricer = Pricer()
    cost = pricer.price(
        TokenUsage(100, 10),
        models=("weird-proxy-label", "gpt-4o-mini"),
        provider="openai",
        when_ns=time.time_ns(),
    )
    assert cost is not None
    assert cost.model == "gpt-4o-mini"


def test_unknown_everywhere_is_none() -> None:
    """No table and no override knows the model: None, never zero."""
    assert (
        Pricer().price(
            TokenUsage(100, 10), models=("nobody-knows",), provider="openai", when_ns=time.time_ns()
        )
        is None
    )


def test_inconsistent_counts_are_clamped_not_negative() -> None:
    """Cache reads larger than the input (a buggy server) cannot make a cost negative."""
    cost = Pricer().price(
        TokenUsage(100, 10, cache_read_tokens=500, reasoning_tokens=50),
        models=("gpt-4o",),
        provider="openai",
        when_ns=time.time_ns(),
    )
    assert cost is not None
    assert cost.total > 0
    assert cost.input == 0
    assert cost.reasoning == cost.output


def test_gateway_provider_names_fall_back_to_all_providers() -> None:
    """A provider genai-prices does not know still finds a model every provider agrees on."""
    cost = Pricer().price(
        TokenUsage(1000, 100), models=("gpt-4o",), provider="my-gateway", when_ns=time.time_ns()
    )
    assert cost is not None
    assert cost.total > 0


def test_the_last_instant_of_a_minute_is_priced_at_that_minute() -> None:
    """The cache keys rates by the UTC minute of the request: the probes that fill it must be
    made at that minute too. A request 500 ns before DeepSeek's 16:30 price change, as a float
    of seconds, rounds to 16:30:00; the whole 16:29 minute would then get the next price."""
    change = _ns(datetime(2026, 1, 5, 16, 30, tzinfo=UTC))
    pricer = Pricer()
    usage = TokenUsage(1_000_000, 1_000_000)
    first = pricer.price(
        usage, models=("deepseek-chat",), provider="deepseek", when_ns=change - 500
    )
    later = pricer.price(
        usage, models=("deepseek-chat",), provider="deepseek", when_ns=change - 30 * 10**9
    )
    assert first is not None
    assert later is not None
    before = datetime(2026, 1, 5, 16, 29, 30, tzinfo=UTC)
    after = datetime(2026, 1, 5, 16, 30, 30, tzinfo=UTC)
    assert _expected(usage, "deepseek-chat", "deepseek", before) != _expected(
        usage, "deepseek-chat", "deepseek", after
    ), "the prices on either side of 16:30 must differ for this test to mean anything"
    assert first.total == later.total == _expected(usage, "deepseek-chat", "deepseek", before)


def test_a_cache_that_starts_over_while_loading_keeps_the_long_context_tier(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When the rate cache is full it starts over, and it can do so while it loads a model's
    first rates: the call that triggers it must still be priced at its long-context tier (it
    was priced at the first tier's rates, and a budget charged that). Every minute of steady
    300k-token traffic adds entries, so the cache fills and starts over in the loop."""
    monkeypatch.setattr("costspan._pricing._CACHE_SIZE", 5)
    pricer = Pricer()
    usage = TokenUsage(300_000, 1_000)
    start = datetime(2026, 3, 2, tzinfo=UTC)
    for minute in range(8):
        when = start.replace(minute=minute)
        cost = pricer.price(
            usage, models=("claude-sonnet-4-5",), provider="anthropic", when_ns=_ns(when)
        )
        assert cost is not None
        assert cost.total == _expected(usage, "claude-sonnet-4-5", "anthropic", when), minute
