"""The real opentelemetry-instrument launcher loads costspan and exports its spans over OTLP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.otlp import assert_priced_and_attributed, otlp_receiver

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = Path(sys.executable).with_name("opentelemetry-instrument")


def launch(
    endpoint: str,
    *extra_env: tuple[str, str],
    app: str = "examples/auto_instrument/app.py",
    unset: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": "auto-instrument-test",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_METRIC_EXPORT_INTERVAL": "200",
        # The official instrumentation is installed for comparisons; it registers "openai".
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "openai",
        **dict(extra_env),
    }
    env.pop("OPENAI_BASE_URL", None)
    for name in unset:
        env.pop(name, None)
    return subprocess.run(
        [str(LAUNCHER), sys.executable, str(ROOT / app)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_launcher_exports_genai_spans_checked_attribute_by_attribute() -> None:
    """Both calls of the example app arrive at a real OTLP receiver with the conventions' data."""
    with otlp_receiver() as (endpoint, collected):
        result = launch(endpoint)
        assert result.returncode == 0, result.stderr
        spans = collected.wait_for(2)
    assert sorted(s.name for s in spans) == ["chat gpt-4o-mini", "chat gpt-4o-mini"]
    plain, streamed = sorted(spans, key=lambda s: "gen_ai.request.stream" in s.attributes)
    for span in (plain, streamed):
        assert span.kind == Span.SPAN_KIND_CLIENT
        assert span.status_code == Status.STATUS_CODE_UNSET
        assert span.resource["service.name"] == "auto-instrument-test"
        a = span.attributes
        assert a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.provider.name"] == "openai"
        assert a["gen_ai.request.model"] == "gpt-4o-mini"
        assert a["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
        assert a["server.address"] == "127.0.0.1"
        assert isinstance(a["server.port"], int)
        assert a["openai.api.type"] == "chat_completions"
        assert a["gen_ai.response.finish_reasons"] == ("stop",)
        assert a["gen_ai.response.id"].startswith("chatcmpl-")
        assert a["gen_ai.usage.input_tokens"] > 0
        assert a["gen_ai.usage.output_tokens"] > 0
        assert a["gen_ai.usage.cache_read.input_tokens"] == 0
    assert streamed.attributes["gen_ai.request.stream"] is True
    assert streamed.attributes["costspan.stream.outcome"] == "completed"
    assert streamed.attributes["gen_ai.response.time_to_first_chunk"] > 0
    assert {"gen_ai.client.operation.duration", "gen_ai.client.token.usage"} <= (
        collected.metric_names
    )


def test_launcher_respects_disabling_costspan() -> None:
    """OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=costspan_openai turns costspan off."""
    with otlp_receiver() as (endpoint, collected):
        result = launch(
            endpoint, ("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "openai,costspan_openai")
        )
        assert result.returncode == 0, result.stderr
        # The launcher flushes every exporter before the process exits: nothing is in flight.
        spans = collected.wait_for(1, timeout=0)
    assert "Here is a short answer" in result.stdout
    assert spans == []


def test_launcher_exports_cost_and_baggage_attribution() -> None:
    """Under plain opentelemetry-instrument, exported spans carry cost and the baggage tags."""
    with otlp_receiver() as (endpoint, collected):
        result = launch(endpoint, app="tests/apps/attributed_app.py")
        assert result.returncode == 0, result.stderr
        (span,) = collected.wait_for(1)
    assert_priced_and_attributed(span.attributes)
    assert "costspan.cost" in collected.metric_names


def test_official_instrumentation_spans_are_priced_on_export() -> None:
    """With costspan's instrumentor off and the official one on, exported spans still cost."""
    with otlp_receiver() as (endpoint, collected):
        result = launch(
            endpoint,
            ("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "costspan_openai"),
            app="tests/apps/attributed_app.py",
        )
        assert result.returncode == 0, result.stderr
        (span,) = collected.wait_for(1)
    assert span.name == "chat gpt-4o-mini"
    assert "costspan.stream.outcome" not in span.attributes  # not costspan's own span
    assert span.attributes["gen_ai.usage.cost.amount"] > 0
    assert span.attributes["user.id"] == "u-123"


def test_post_instrument_adds_the_processor_when_another_configurator_won() -> None:
    """If costspan's configurator did not set up the SDK, the post-instrument hook still adds
    attribution, and says how to get foreign spans priced on export."""
    script = """
import logging
from opentelemetry import baggage, context, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from costspan._auto import post_instrument

logging.basicConfig(level=logging.WARNING)
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
post_instrument()
post_instrument()  # idempotent
token = context.attach(baggage.set_baggage("user.id", "u-9"))
with trace.get_tracer("app").start_as_current_span("work"):
    pass
context.detach(token)
(span,) = exporter.get_finished_spans()
print("user.id=" + span.attributes["user.id"])
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "user.id=u-9" in result.stdout
    assert result.stderr.count("OTEL_PYTHON_CONFIGURATOR=costspan") == 1


def test_the_official_openai_instrumentation_next_to_costspan_traces_each_call_once() -> None:
    """opentelemetry-instrumentation-genai-openai is installed (the test extra registers
    ``openai``) and OTEL_PYTHON_DISABLED_INSTRUMENTATIONS is unset: costspan's distro disables
    it, so each call of the app has one span, costspan's, priced."""
    with otlp_receiver() as (endpoint, collected):
        result = launch(endpoint, unset=("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS",))
        assert result.returncode == 0, result.stderr
        spans = collected.wait_for(2)
        late = collected.wait_for(3, timeout=0)  # everything was flushed at exit
    assert len(late) == 2
    assert {s.scope_name for s in spans} == {"costspan"}
    assert all(s.attributes["gen_ai.usage.cost.amount"] > 0 for s in spans)


def test_keeping_both_openai_instrumentations_counts_each_call_once() -> None:
    """COSTSPAN_OTHER_OPENAI_INSTRUMENTORS=keep: two spans per call, one priced (costspan's),
    the other marked as counted on it, so sums over spans still count each call once."""
    with otlp_receiver() as (endpoint, collected):
        result = launch(
            endpoint,
            ("COSTSPAN_OTHER_OPENAI_INSTRUMENTORS", "keep"),
            unset=("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS",),
        )
        assert result.returncode == 0, result.stderr
        spans = collected.wait_for(4)
    priced = [s for s in spans if "gen_ai.usage.cost.amount" in s.attributes]
    marked = [s for s in spans if "costspan.cost.counted_on" in s.attributes]
    assert len(priced) == 2
    assert len(marked) == 2
    assert {s.scope_name for s in priced} == {"costspan"}
    assert {s.attributes["costspan.cost.counted_on"] for s in marked} == {s.span_id for s in priced}
