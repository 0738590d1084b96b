"""gen_ai.provider.name comes from the client's base URL."""

from __future__ import annotations

import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import costspan
from costspan._providers import provider_for_host
from costspan.testing import OpenAICompatibleServer
from tests.conftest import USER, attrs, only_span


@pytest.mark.parametrize(
    ("host", "provider"),
    [
        ("api.openai.com", "openai"),
        ("myres.openai.azure.com", "azure.ai.openai"),
        ("myres.cognitiveservices.azure.com", "azure.ai.openai"),
        ("api.groq.com", "groq"),
        ("api.deepseek.com", "deepseek"),
        ("api.mistral.ai", "mistral_ai"),
        ("api.x.ai", "x_ai"),
        ("generativelanguage.googleapis.com", "gcp.gemini"),
        ("api.perplexity.ai", "perplexity"),
        ("API.GROQ.COM.", "groq"),
        ("localhost", "openai"),
        ("notapi.groq.com.evil.example", "openai"),
        (None, "openai"),
    ],
)
def test_known_hosts(host: str | None, provider: str) -> None:
    """Each well-known host maps to its semconv provider name; others fall back to openai."""
    assert provider_for_host(host) == provider


def test_override_wins_over_fallback() -> None:
    """COSTSPAN_PROVIDER_HOSTS entries name providers for unknown hosts."""
    assert provider_for_host("llm.internal", {"llm.internal": "groq"}) == "groq"


@pytest.mark.usefixtures("instrumented")
def test_override_applies_to_spans(
    monkeypatch: pytest.MonkeyPatch,
    client: openai.OpenAI,
    span_exporter: InMemorySpanExporter,
) -> None:
    """An environment override reaches the span of a call to that host."""
    monkeypatch.setenv("COSTSPAN_PROVIDER_HOSTS", "127.0.0.1=deepseek")
    costspan.configure()
    client.chat.completions.create(model="deepseek-chat", messages=USER)
    assert attrs(only_span(span_exporter))["gen_ai.provider.name"] == "deepseek"


@pytest.mark.usefixtures("instrumented")
def test_azure_client_is_azure_whatever_the_host(
    server: OpenAICompatibleServer, span_exporter: InMemorySpanExporter
) -> None:
    """The AzureOpenAI client class implies azure.ai.openai."""
    client = openai.AzureOpenAI(
        base_url=server.base_url, api_key="k", api_version="2024-10-21", max_retries=0
    )
    client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert attrs(only_span(span_exporter))["gen_ai.provider.name"] == "azure.ai.openai"
