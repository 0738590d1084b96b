"""costspan's settings: environment variables, ``configure()`` arguments, and their validation.

Code arguments win over environment variables. A bad value is rejected with a ``ValueError`` that
names the variable or argument and the accepted values, at configuration time, so that a typo
never surfaces as a silent no-op in the middle of an LLM call.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Final

_logger = logging.getLogger(__name__)

COSTSPAN_INJECT_STREAM_USAGE: Final = "COSTSPAN_INJECT_STREAM_USAGE"
"""``true`` (default) or ``false``. When true, chat and legacy-completion streams that do not ask
for usage get ``stream_options={"include_usage": true}`` so the provider reports their tokens;
costspan then hides the extra usage-only chunk from the caller. Turn it off for
OpenAI-compatible servers that reject ``stream_options``."""

COSTSPAN_PROVIDER_HOSTS: Final = "COSTSPAN_PROVIDER_HOSTS"
"""Comma-separated ``host=provider`` pairs naming the ``gen_ai.provider.name`` of hosts costspan
does not recognise, e.g. ``llm.internal=groq,vllm.local=openai``."""

OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT: Final = (
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
)
"""The standard OpenTelemetry switch for message content. ``span_only`` and ``span_and_event``
(and the legacy ``true``) put ``gen_ai.input.messages``, ``gen_ai.output.messages`` and
``gen_ai.system_instructions`` on spans. Anything else captures nothing."""

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off", ""})


class ContentCapture(Enum):
    """Whether message content goes on spans."""

    NONE = "none"
    SPAN = "span"


@dataclass(frozen=True, slots=True)
class Settings:
    """A complete, validated set of settings. Replaced as a whole, never mutated."""

    inject_stream_usage: bool = True
    provider_hosts: Mapping[str, str] = field(default_factory=dict[str, str])
    capture_content: ContentCapture = ContentCapture.NONE


def parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name}={raw!r} is not a boolean; use true or false")


def parse_provider_hosts(name: str, raw: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in raw.split(","):
        if not item.strip():
            continue
        host, sep, provider = item.partition("=")
        if not sep or not host.strip() or not provider.strip():
            raise ValueError(
                f"{name}: {item.strip()!r} is not host=provider (example: llm.internal=groq)"
            )
        result[host.strip().lower()] = provider.strip()
    return result


def parse_capture_content(raw: str | None) -> ContentCapture:
    if raw is None:
        return ContentCapture.NONE
    value = raw.strip().lower()
    if value in {"span_only", "span_and_event", "true"}:
        return ContentCapture.SPAN
    if value not in {"", "no_content", "false", "event_only"}:
        # The official GenAI stack warns and falls back for unknown values; so do we, because
        # this variable is shared with other instrumentations that may accept more values.
        _logger.warning(
            "%s=%r is not one of span_only, span_and_event, event_only, no_content; "
            "message content will not be captured",
            OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT,
            raw,
        )
    return ContentCapture.NONE


def settings_from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Build settings from environment variables; raises ``ValueError`` on a bad value."""
    env = os.environ if env is None else env
    settings = Settings()
    raw = env.get(COSTSPAN_INJECT_STREAM_USAGE)
    if raw is not None:
        settings = replace(
            settings, inject_stream_usage=parse_bool(COSTSPAN_INJECT_STREAM_USAGE, raw)
        )
    raw = env.get(COSTSPAN_PROVIDER_HOSTS)
    if raw is not None:
        settings = replace(
            settings, provider_hosts=parse_provider_hosts(COSTSPAN_PROVIDER_HOSTS, raw)
        )
    return replace(
        settings,
        capture_content=parse_capture_content(
            env.get(OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT)
        ),
    )


def _validated(base: Settings, overrides: Mapping[str, Any]) -> Settings:
    known = set(Settings.__dataclass_fields__)
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(
            f"configure() got unknown setting(s) {', '.join(unknown)}; "
            f"known settings: {', '.join(sorted(known))}"
        )
    settings = base
    if "inject_stream_usage" in overrides:
        value = overrides["inject_stream_usage"]
        if not isinstance(value, bool):
            raise ValueError(f"inject_stream_usage must be True or False, not {value!r}")
        settings = replace(settings, inject_stream_usage=value)
    if "provider_hosts" in overrides:
        value = overrides["provider_hosts"]
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) and k and v
            for k, v in value.items()  # pyright: ignore[reportUnknownVariableType]
        ):
            raise ValueError("provider_hosts must map host names to provider names (str -> str)")
        hosts: Mapping[str, str] = value  # pyright: ignore[reportUnknownVariableType]
        settings = replace(settings, provider_hosts={k.lower(): v for k, v in hosts.items()})
    if "capture_content" in overrides:
        value = overrides["capture_content"]
        if isinstance(value, bool):
            value = ContentCapture.SPAN if value else ContentCapture.NONE
        if not isinstance(value, ContentCapture):
            raise ValueError(f"capture_content must be True or False, not {value!r}")
        settings = replace(settings, capture_content=value)
    return settings


_lock = threading.Lock()
_settings: Settings | None = None


def current() -> Settings:
    """The settings in force; read from the environment on first use."""
    global _settings
    settings = _settings
    if settings is None:
        with _lock:
            if _settings is None:
                _settings = settings_from_env()
            settings = _settings
    return settings


def configure(**overrides: Any) -> Settings:
    """Apply ``overrides`` on top of the environment; see the configuration reference."""
    global _settings
    with _lock:
        _settings = _validated(settings_from_env(), overrides)
        return _settings


def reset() -> None:
    """Forget configured settings; the environment is read again on next use (for tests)."""
    global _settings
    with _lock:
        _settings = None
