"""Which provider an OpenAI-compatible client talks to, from its base URL.

``gen_ai.provider.name`` is required on every GenAI span and decides, later, which price table
applies. The openai client is used against many providers; the host of ``client.base_url`` is the
best evidence of which one. Hosts costspan does not know fall back to ``openai`` (the protocol
spoken, and the right answer for proxies in front of OpenAI); ``COSTSPAN_PROVIDER_HOSTS`` maps
self-hosted or gateway hosts to a provider name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

FALLBACK_PROVIDER: Final = "openai"

# (host suffix, provider name); the first match wins, so longer suffixes come first.
_KNOWN_HOSTS: Final[tuple[tuple[str, str], ...]] = (
    ("api.openai.com", "openai"),
    (".openai.azure.com", "azure.ai.openai"),
    (".cognitiveservices.azure.com", "azure.ai.openai"),
    (".services.ai.azure.com", "azure.ai.inference"),
    (".models.ai.azure.com", "azure.ai.inference"),
    ("api.groq.com", "groq"),
    ("api.deepseek.com", "deepseek"),
    ("api.mistral.ai", "mistral_ai"),
    ("api.x.ai", "x_ai"),
    ("generativelanguage.googleapis.com", "gcp.gemini"),
    ("aiplatform.googleapis.com", "gcp.vertex_ai"),
    ("api.perplexity.ai", "perplexity"),
    ("api.anthropic.com", "anthropic"),
    ("api.cohere.com", "cohere"),
    ("api.cohere.ai", "cohere"),
    ("api.moonshot.ai", "moonshot_ai"),
)


class HostMap:
    """The provider of each host, for one overrides table; memoised, since it is asked on every
    call and a service talks to a handful of hosts. Built by the runtime once per settings."""

    __slots__ = ("_answers", "overrides")

    def __init__(self, overrides: Mapping[str, str] | None = None) -> None:
        self.overrides: Mapping[str, str] = overrides or {}
        self._answers: dict[str, str] = {}

    def provider(self, host: str | None) -> str:
        """The ``gen_ai.provider.name`` for a client whose base URL has this host."""
        if not host:
            return FALLBACK_PROVIDER
        found = self._answers.get(host)
        if found is None:
            if len(self._answers) >= 1024:  # a bound against hosts that never repeat
                self._answers = {}
            found = self._answers[host] = provider_for_host(host, self.overrides)
        return found


def provider_for_host(host: str | None, overrides: Mapping[str, str] | None = None) -> str:
    """The ``gen_ai.provider.name`` for a client whose base URL has this host."""
    if not host:
        return FALLBACK_PROVIDER
    return _lookup(host, overrides)


def _lookup(host: str, overrides: Mapping[str, str] | None) -> str:
    host = host.lower().rstrip(".")
    if overrides:
        exact = overrides.get(host)
        if exact is not None:
            return exact
    for suffix, name in _KNOWN_HOSTS:
        if host == suffix.lstrip(".") or host.endswith(
            suffix if suffix[0] == "." else "." + suffix
        ):
            return name
    return FALLBACK_PROVIDER
