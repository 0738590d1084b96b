"""Settings come from arguments over environment variables, and bad values are rejected."""

from __future__ import annotations

import logging

import pytest

import costspan
from costspan import _runtime
from costspan._config import ContentCapture, settings_from_env


def test_defaults() -> None:
    """With nothing set, usage is injected and content is not captured."""
    settings = settings_from_env({})
    assert settings.inject_stream_usage is True
    assert settings.capture_content is ContentCapture.NONE
    assert dict(settings.provider_hosts) == {}


@pytest.mark.parametrize("raw", ["maybe", "2", "enabled"])
def test_bad_boolean_names_the_variable(raw: str) -> None:
    """A non-boolean is a ValueError naming the variable and the accepted values."""
    with pytest.raises(ValueError, match=r"COSTSPAN_INJECT_STREAM_USAGE=.*true or false"):
        settings_from_env({"COSTSPAN_INJECT_STREAM_USAGE": raw})


def test_provider_hosts_parse() -> None:
    """host=provider pairs are parsed, hosts lower-cased, blanks ignored."""
    settings = settings_from_env({"COSTSPAN_PROVIDER_HOSTS": "LLM.internal=groq, ,b=x_ai"})
    assert dict(settings.provider_hosts) == {"llm.internal": "groq", "b": "x_ai"}


def test_bad_provider_hosts_entry() -> None:
    """An entry without '=' is rejected with an example of the right form."""
    with pytest.raises(ValueError, match="host=provider"):
        settings_from_env({"COSTSPAN_PROVIDER_HOSTS": "llm.internal"})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("span_only", ContentCapture.SPAN),
        ("SPAN_AND_EVENT", ContentCapture.SPAN),
        ("true", ContentCapture.SPAN),
        ("event_only", ContentCapture.NONE),
        ("no_content", ContentCapture.NONE),
    ],
)
def test_capture_content_values(raw: str, expected: ContentCapture) -> None:
    """The standard variable's values map to span capture or none."""
    env = {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": raw}
    assert settings_from_env(env).capture_content is expected


def test_unknown_capture_value_warns_and_captures_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An unknown value of the shared standard variable logs a warning, never raises."""
    with caplog.at_level(logging.WARNING):
        settings = settings_from_env({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "all"})
    assert settings.capture_content is ContentCapture.NONE
    assert "will not be captured" in caplog.text


def test_configure_rejects_unknown_settings() -> None:
    """A misspelt setting is a TypeError listing the known ones."""
    with pytest.raises(TypeError, match="inject_stream_usage"):
        costspan.configure(inject_stream_usuage=False)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"inject_stream_usage": "no"},
        {"provider_hosts": {"host": 3}},
        {"provider_hosts": "host=groq"},
        {"capture_content": "yes"},
    ],
)
def test_configure_rejects_bad_values(kwargs: dict[str, object]) -> None:
    """Wrong types are ValueErrors at configure time."""
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        costspan.configure(**kwargs)


def test_arguments_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """configure(x=...) overrides the environment's x and keeps the rest from it."""
    monkeypatch.setenv("COSTSPAN_INJECT_STREAM_USAGE", "false")
    monkeypatch.setenv("COSTSPAN_PROVIDER_HOSTS", "a=groq")
    costspan.configure(inject_stream_usage=True)
    assert _runtime.settings().inject_stream_usage is True
    assert dict(_runtime.settings().provider_hosts) == {"a": "groq"}


def test_every_setting_has_a_variable_and_a_field() -> None:
    """The settings table and the Settings dataclass list the same names."""
    from dataclasses import fields

    from costspan._config import _SETTINGS, Settings

    assert set(_SETTINGS) == {f.name for f in fields(Settings)}
    assert all(s.env.startswith(("COSTSPAN_", "OTEL_")) for s in _SETTINGS.values())


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"COSTSPAN_ON_UNPRICED": "ignore"}, "use warn or raise"),
        ({"COSTSPAN_ATTRIBUTION_KEYS": "user id"}, "not a usable baggage key"),
        ({"COSTSPAN_PRICES": "{not json"}, "invalid JSON"),
        ({"COSTSPAN_OPENLIT_COST_ATTRIBUTE": "sometimes"}, "true or false"),
    ],
)
def test_new_variables_reject_bad_values(env: dict[str, str], message: str) -> None:
    """Each pricing and attribution variable names its own mistakes."""
    with pytest.raises(ValueError, match=message):
        settings_from_env(env)


def test_attribution_and_metric_keys_parse() -> None:
    """Comma-separated keys, blanks dropped."""
    settings = settings_from_env(
        {"COSTSPAN_ATTRIBUTION_KEYS": "user.id, team ,", "COSTSPAN_METRIC_TAGS": "feature"}
    )
    assert settings.attribution_keys == ("user.id", "team")
    assert settings.metric_tags == ("feature",)
