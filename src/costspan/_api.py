"""The module-level functions of the public API: ``instrument``, ``uninstrument``, ``configure``."""

from __future__ import annotations

import sys
import threading
from typing import Any

from opentelemetry import trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from costspan import _runtime
from costspan._processor import CostSpanProcessor, install

_lock = threading.Lock()


def configure(**settings: Any) -> None:
    """Set costspan's settings; arguments win over ``COSTSPAN_*`` environment variables.

    Args:
        inject_stream_usage: ask chat streams for usage (``COSTSPAN_INJECT_STREAM_USAGE``).
        provider_hosts: ``{host: provider}`` for hosts costspan does not recognise
            (``COSTSPAN_PROVIDER_HOSTS``).
        capture_content: put message content on spans
            (``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``).
        ledger: where budgets keep their spend, a URL (``memory``, ``sqlite:///path``,
            ``redis://host:port/db``) or a ledger object (``COSTSPAN_LEDGER``).
        limits: configured caps per baggage value and UTC window, as rules in one string or a
            list (``COSTSPAN_LIMITS``; grammar in docs/configuration.md).
        fail_mode: what budget checks do while a shared ledger is unreachable: ``local``
            (default), ``closed`` or ``open`` (``COSTSPAN_FAIL_MODE``).
        records: a SQLite file that keeps spend records for reports (``COSTSPAN_RECORDS``).
        max_records: spend records kept in memory (``COSTSPAN_MAX_RECORDS``, default 10,000).

    The other settings (prices, on_unpriced, attribution_keys, metric_tags,
    openlit_cost_attribute, trust_inbound_budgets) are described in docs/configuration.md.

    Raises:
        TypeError: an unknown setting.
        ValueError: a bad value, in an argument or in an environment variable.
    """
    _runtime.configure(**settings)


def instrument(
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    **settings: Any,
) -> None:
    """Instrument the openai client and put a :class:`CostSpanProcessor` on the tracer provider.

    Idempotent. Without ``tracer_provider`` the global provider is used; a processor is only
    added to an SDK provider, once. Extra keyword arguments go to :func:`configure`.
    """
    with _lock:
        if settings:
            _runtime.configure(**settings)
        else:
            _runtime.settings()  # surface a bad environment variable now, not at the first call
        install(
            tracer_provider or trace.get_tracer_provider(),
            CostSpanProcessor(meter_provider=meter_provider),
        )
        from costspan._instrumentor import OpenAIInstrumentor  # (wrapt, instrumentation)

        instrumentor = OpenAIInstrumentor()
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)


def uninstrument() -> None:
    """Restore the original openai methods; idempotent."""
    with _lock:
        if "costspan._instrumentor" not in sys.modules:
            return  # never loaded, so never instrumented
        from costspan._instrumentor import OpenAIInstrumentor

        instrumentor = OpenAIInstrumentor()
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()


def dropped_records() -> int:
    """How many spend records fell out of this process's in-memory buffer
    (``COSTSPAN_MAX_RECORDS``) since it started; a durable store keeps them all."""
    return _runtime.runtime().recorder.buffer.dropped
