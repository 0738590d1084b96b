"""instrument()/uninstrument() are idempotent and reversible; the entry point is registered."""

from __future__ import annotations

from importlib.metadata import distribution, entry_points

import openai
import pytest
from openai.resources.chat.completions.completions import AsyncCompletions, Completions
from openai.resources.embeddings import Embeddings
from openai.resources.responses.responses import Responses
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider
from packaging.requirements import Requirement

import costspan
from costspan import OpenAIInstrumentor
from tests.conftest import USER

_ORIGINALS = {
    (cls, name): cls.__dict__[name]
    for cls in (Completions, AsyncCompletions, Embeddings, Responses)
    for name in ("create",)
}


def test_uninstrument_restores_the_original_methods(tracer_provider: TracerProvider) -> None:
    """After uninstrument, each class holds exactly the function it had before."""
    costspan.instrument(tracer_provider=tracer_provider)
    assert all(cls.__dict__[name] is not fn for (cls, name), fn in _ORIGINALS.items())
    costspan.uninstrument()
    assert all(cls.__dict__[name] is fn for (cls, name), fn in _ORIGINALS.items())


def test_instrument_twice_wraps_once(
    tracer_provider: TracerProvider,
    client: openai.OpenAI,
    span_exporter: InMemorySpanExporter,
) -> None:
    """A second instrument() is a no-op: one call still gives one span."""
    costspan.instrument(tracer_provider=tracer_provider)
    costspan.instrument(tracer_provider=tracer_provider)
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    finally:
        costspan.uninstrument()
        costspan.uninstrument()
    assert len(span_exporter.get_finished_spans()) == 1


def test_uninstrumented_calls_make_no_spans(
    tracer_provider: TracerProvider, client: openai.OpenAI, span_exporter: InMemorySpanExporter
) -> None:
    """Once uninstrumented, calls go straight to the client."""
    costspan.instrument(tracer_provider=tracer_provider)
    costspan.uninstrument()
    client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert span_exporter.get_finished_spans() == ()


def test_calls_work_with_a_non_recording_provider(client: openai.OpenAI) -> None:
    """With no SDK configured (a no-op provider), calls still return their result."""
    costspan.instrument(tracer_provider=NoOpTracerProvider())
    try:
        result = client.chat.completions.create(model="gpt-4o-mini", messages=USER)
        chunks = list(
            client.chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True)
        )
    finally:
        costspan.uninstrument()
    assert result.choices[0].message.content
    assert all(chunk.choices for chunk in chunks)


def test_entry_point_is_registered_under_a_distinct_name() -> None:
    """opentelemetry-instrument finds costspan as costspan_openai, not as openai."""
    found = {ep.name: ep for ep in entry_points(group="opentelemetry_instrumentor")}
    assert found["costspan_openai"].load() is OpenAIInstrumentor
    assert found.get("openai") is None or found["openai"].value != found["costspan_openai"].value


def test_instruments_extra_names_openai() -> None:
    """The launcher's dependency check reads the `instruments` extra of our distribution."""
    requirements = [Requirement(r) for r in distribution("costspan").requires or []]
    assert any(
        r.name == "openai" and r.marker is not None and r.marker.evaluate({"extra": "instruments"})
        for r in requirements
    )


def test_bad_environment_value_is_rejected_at_instrument_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A typo in a COSTSPAN_ variable fails loudly when instrumenting, naming the variable."""
    monkeypatch.setenv("COSTSPAN_INJECT_STREAM_USAGE", "maybe")
    with pytest.raises(ValueError, match="COSTSPAN_INJECT_STREAM_USAGE"):
        costspan.instrument()
    assert not OpenAIInstrumentor().is_instrumented_by_opentelemetry


def test_instrument_accepts_settings(tracer_provider: TracerProvider) -> None:
    """instrument(**settings) applies them like configure()."""
    costspan.instrument(tracer_provider=tracer_provider, inject_stream_usage=False)
    try:
        from costspan import _runtime

        assert _runtime.settings().inject_stream_usage is False
    finally:
        costspan.uninstrument()
