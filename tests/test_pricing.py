"""Spans carry the USD cost genai-prices gives for their usage, for every provider."""

from __future__ import annotations

import json
import warnings
from decimal import Decimal
from pathlib import Path

import openai
import pytest
from genai_prices import Usage, calc_price
from openai.types.chat import ChatCompletionMessageParam
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import costspan
from costspan import UnpricedModelWarning, _runtime
from costspan.testing import OpenAICompatibleServer
from tests.conftest import USER, attrs, counter_points, only_span
from tests.transport import provider_client

pytestmark = pytest.mark.usefixtures("instrumented")

OPENAI = "https://api.openai.com/v1"
ANTHROPIC = "https://api.anthropic.com/v1"
GEMINI = "https://generativelanguage.googleapis.com/v1beta/openai"
GROQ = "https://api.groq.com/openai/v1"
DEEPSEEK = "https://api.deepseek.com"
MISTRAL = "https://api.mistral.ai/v1"
XAI = "https://api.x.ai/v1"

# (base URL, gen_ai.provider.name, genai-prices provider id, model)
MATRIX = [
    (OPENAI, "openai", "openai", "gpt-4o"),
    (OPENAI, "openai", "openai", "gpt-4o-mini"),
    (OPENAI, "openai", "openai", "gpt-4.1"),
    (OPENAI, "openai", "openai", "gpt-4.1-mini"),
    (OPENAI, "openai", "openai", "o1"),
    (OPENAI, "openai", "openai", "o3"),
    (OPENAI, "openai", "openai", "o4-mini"),
    (OPENAI, "openai", "openai", "gpt-5"),
    (OPENAI, "openai", "openai", "gpt-5-mini"),
    (ANTHROPIC, "anthropic", "anthropic", "claude-sonnet-4-5"),
    (ANTHROPIC, "anthropic", "anthropic", "claude-opus-4-5"),
    (ANTHROPIC, "anthropic", "anthropic", "claude-haiku-4-5"),
    (GEMINI, "gcp.gemini", "google", "gemini-2.5-pro"),
    (GEMINI, "gcp.gemini", "google", "gemini-2.5-flash"),
    (GROQ, "groq", "groq", "llama-3.3-70b-versatile"),
    (GROQ, "groq", "groq", "llama-3.1-8b-instant"),
    (DEEPSEEK, "deepseek", "deepseek", "deepseek-chat"),
    (DEEPSEEK, "deepseek", "deepseek", "deepseek-reasoner"),
    (MISTRAL, "mistral_ai", "mistral", "mistral-large-latest"),
    (MISTRAL, "mistral_ai", "mistral", "mistral-small-latest"),
    (XAI, "x_ai", "x-ai", "grok-4"),
]

LONG_PROMPT: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Summarise this report: " + "quarterly revenue grew " * 400}
]


@pytest.mark.parametrize(("base_url", "provider", "provider_id", "model"), MATRIX)
def test_span_cost_equals_genai_prices(
    base_url: str,
    provider: str,
    provider_id: str,
    model: str,
    server: OpenAICompatibleServer,
    span_exporter: InMemorySpanExporter,
) -> None:
    """With cached and reasoning tokens, the span's cost is calc_price's to 1e-9 USD."""
    headers = {"x-costspan-test-reasoning-tokens": "96"}
    with provider_client(base_url, server.port) as client:
        client.chat.completions.create(model=model, messages=LONG_PROMPT, extra_headers=headers)
        result = client.chat.completions.create(
            model=model, messages=LONG_PROMPT, extra_headers=headers
        )
    span = span_exporter.get_finished_spans()[-1]
    recorded = attrs(span)
    usage = result.usage
    assert usage is not None
    assert usage.prompt_tokens_details is not None
    assert usage.completion_tokens_details is not None
    cached = usage.prompt_tokens_details.cached_tokens
    reasoning = usage.completion_tokens_details.reasoning_tokens
    assert cached
    assert reasoning == 96
    expected = calc_price(
        Usage(
            input_tokens=usage.prompt_tokens,
            cache_read_tokens=cached,
            output_tokens=usage.completion_tokens,
            output_reasoning_tokens=reasoning,
        ),
        result.model,
        provider_id=provider_id,
    )
    assert recorded["gen_ai.provider.name"] == provider
    assert recorded["gen_ai.usage.cost.amount"] == pytest.approx(
        float(expected.total_price), abs=1e-9
    )
    assert recorded["costspan.cost.input_usd"] + recorded["costspan.cost.cached_input_usd"] == (
        pytest.approx(float(expected.input_price), abs=1e-9)
    )
    assert recorded["costspan.cost.output_usd"] == pytest.approx(
        float(expected.output_price), abs=1e-9
    )
    assert recorded["costspan.price.provider"] == provider_id
    assert recorded["costspan.price.source"] == "genai-prices"
    assert "costspan.usage.estimated" not in recorded


def test_there_are_at_least_twenty_models_from_six_providers() -> None:
    """The matrix covers what the issue asks for."""
    assert len(MATRIX) >= 20
    assert {"openai", "anthropic", "google", "groq", "deepseek", "mistral"} <= {
        m[2] for m in MATRIX
    }


def test_dated_response_model_matches_its_undated_price(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """gpt-4o-mini-2024-07-18 (what the server answers) is priced as gpt-4o-mini."""
    client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    recorded = attrs(only_span(span_exporter))
    assert recorded["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert recorded["costspan.price.model"] == "gpt-4o-mini"


def test_service_tier_from_the_response_selects_the_price(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """A flex-tier gpt-5 call costs half the default tier's price."""
    client.chat.completions.create(model="gpt-5", messages=USER)
    client.chat.completions.create(model="gpt-5", messages=USER, service_tier="flex")
    default, flex = (attrs(s) for s in span_exporter.get_finished_spans())
    assert flex["openai.response.service_tier"] == "flex"
    assert flex["gen_ai.usage.cost.amount"] == pytest.approx(
        default["gen_ai.usage.cost.amount"] / 2, rel=1e-9
    )


def test_embeddings_are_priced(client: openai.OpenAI, span_exporter: InMemorySpanExporter) -> None:
    """An embeddings call costs its input tokens at the embedding model's price."""
    result = client.embeddings.create(model="text-embedding-3-small", input="price me")
    expected = calc_price(
        Usage(input_tokens=result.usage.prompt_tokens),
        "text-embedding-3-small",
        provider_id="openai",
    )
    assert attrs(only_span(span_exporter))["gen_ai.usage.cost.amount"] == pytest.approx(
        float(expected.total_price), abs=1e-12
    )


def test_unknown_model_warns_once_marks_spans_and_counts(
    client: openai.OpenAI,
    span_exporter: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
) -> None:
    """An unpriced model is never a silent $0: warning once, attribute, metric count."""
    _runtime.reset()

    def two_calls() -> None:
        for _ in range(2):
            client.chat.completions.create(model="my-private-model", messages=USER)

    with pytest.warns(UnpricedModelWarning, match="my-private-model") as caught:
        two_calls()
    assert len(caught) == 1
    spans = span_exporter.get_finished_spans()
    for span in spans:
        assert attrs(span)["costspan.unpriced"] is True
        assert "gen_ai.usage.cost.amount" not in attrs(span)
        assert attrs(span)["gen_ai.usage.input_tokens"] > 0
    assert [p.value for p in counter_points(metric_reader, "costspan.calls.unpriced")] == [2]


def test_unknown_model_under_warnings_as_errors_keeps_its_telemetry(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """Running with -W error must not make costspan drop the span's unpriced marker."""
    _runtime.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        client.chat.completions.create(model="another-private-model", messages=USER)
    assert attrs(only_span(span_exporter))["costspan.unpriced"] is True


def test_price_override_prices_a_fine_tune(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """configure(prices=...) prices a model no table knows, in USD per million tokens."""
    costspan.configure(prices={"acme-finetune": {"input_mtok": "2", "output_mtok": "8"}})
    result = client.chat.completions.create(model="acme-finetune", messages=USER)
    assert result.usage is not None
    expected = (
        Decimal(result.usage.prompt_tokens) * 2 + Decimal(result.usage.completion_tokens) * 8
    ) / 1_000_000
    recorded = attrs(only_span(span_exporter))
    assert recorded["gen_ai.usage.cost.amount"] == pytest.approx(float(expected), abs=1e-12)
    assert recorded["costspan.price.source"] == "override"


def test_price_override_from_a_file(
    client: openai.OpenAI,
    span_exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """COSTSPAN_PRICES may name a JSON file; cached input gets its own price."""
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps({"gpt-4o-mini": {"input_mtok": 1, "cache_read_mtok": 0.5, "output_mtok": 4}})
    )
    monkeypatch.setenv("COSTSPAN_PRICES", str(path))
    costspan.configure()
    result = client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert result.usage is not None
    expected = (result.usage.prompt_tokens * 1 + result.usage.completion_tokens * 4) / 1e6
    recorded = attrs(only_span(span_exporter))
    assert recorded["gen_ai.usage.cost.amount"] == pytest.approx(expected, abs=1e-12)
    assert recorded["costspan.price.source"] == "override"


@pytest.mark.parametrize(
    ("prices", "message"),
    [
        ({"m": {"input_mtok": 1}}, "needs output_mtok"),
        ({"m": {"input_mtok": 1, "output_mtok": -2}}, "finite amount >= 0"),
        ({"m": {"input_mtok": 1, "output_mtok": 2, "reasoning_mtok": 3}}, "unknown price key"),
        ({"m": {"input_mtok": "x", "output_mtok": 2}}, "is not a number"),
        ({"m": 3}, "must be a mapping"),
    ],
)
def test_bad_price_overrides_are_rejected(prices: dict[str, object], message: str) -> None:
    """Override mistakes are ValueErrors that say what is wrong."""
    with pytest.raises(ValueError, match=message):
        costspan.configure(prices=prices)


def test_bad_prices_variable_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    """A COSTSPAN_PRICES that is neither JSON nor a file names the variable."""
    monkeypatch.setenv("COSTSPAN_PRICES", "/no/such/prices.json")
    with pytest.raises(ValueError, match="COSTSPAN_PRICES"):
        costspan.configure()


def test_provider_reported_cost_wins(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """A gateway's usage.cost is the span's cost, marked provider-sourced."""
    client.chat.completions.create(
        model="gpt-4o-mini", messages=USER, extra_headers={"x-costspan-test-cost": "0.0123"}
    )
    recorded = attrs(only_span(span_exporter))
    assert recorded["gen_ai.usage.cost.amount"] == 0.0123
    assert recorded["gen_ai.usage.cost.source"] == "provider"
    assert recorded["costspan.price.source"] == "provider"


def test_openlit_attribute_is_optional(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """gen_ai.usage.cost (OpenLIT's name) appears only when asked for, equal to the amount."""
    client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    costspan.configure(openlit_cost_attribute=True)
    client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    without, with_openlit = (attrs(s) for s in span_exporter.get_finished_spans())
    assert "gen_ai.usage.cost" not in without
    assert with_openlit["gen_ai.usage.cost"] == with_openlit["gen_ai.usage.cost.amount"]


def test_cost_metric_sums_span_costs(
    client: openai.OpenAI, span_exporter: InMemorySpanExporter, metric_reader: InMemoryMetricReader
) -> None:
    """The costspan.cost counter adds up what the spans say, by model."""
    for model in ("gpt-4o-mini", "gpt-4o-mini", "gpt-4o"):
        client.chat.completions.create(model=model, messages=USER)
    by_model: dict[str, float] = {}
    for span in span_exporter.get_finished_spans():
        model = attrs(span)["gen_ai.request.model"]
        by_model[model] = by_model.get(model, 0.0) + attrs(span)["gen_ai.usage.cost.amount"]
    points = {
        dict(p.attributes or {})["gen_ai.request.model"]: p.value
        for p in counter_points(metric_reader, "costspan.cost")
    }
    assert points == pytest.approx(by_model, rel=1e-9)


def test_metric_tags_come_from_baggage_only_when_configured(
    client: openai.OpenAI, metric_reader: InMemoryMetricReader
) -> None:
    """Cost metrics gain a dimension only for keys named in metric_tags (bounded cardinality)."""
    from opentelemetry import baggage, context

    costspan.configure(metric_tags=["feature"])
    token = context.attach(
        baggage.set_baggage("feature", "search", baggage.set_baggage("user.id", "u-1"))
    )
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    finally:
        context.detach(token)
    (point,) = counter_points(metric_reader, "costspan.cost")
    dims = dict(point.attributes or {})
    assert dims["feature"] == "search"
    assert "user.id" not in dims
