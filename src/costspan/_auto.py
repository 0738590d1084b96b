"""Auto-launch: what ``opentelemetry-instrument`` loads from costspan, with no code change.

- ``CostspanDistro`` (entry point ``opentelemetry_distro: costspan``) sets the same defaults as
  ``opentelemetry-distro``: OTLP exporters for traces, metrics and logs, over gRPC. It also
  disables the other instrumentors of openai the launcher would load next to costspan's (the
  official ``openai`` one that ``opentelemetry-bootstrap`` installs), so each call is traced once
  (:mod:`costspan._launch`; ``COSTSPAN_OTHER_OPENAI_INSTRUMENTORS=keep`` keeps them).
- ``CostspanConfigurator`` (``opentelemetry_configurator: costspan``) configures the SDK from the
  environment exactly like the standard configurator, except that each exporting span processor
  is wrapped: ``CostSpanProcessor(BatchSpanProcessor(exporter))``. That is the one supported
  place where a processor can change what gets exported (see ``reference/semconv.md``).
- ``post_instrument`` (``opentelemetry_post_instrument: costspan``) runs after every configurator
  and instrumentor. If another configurator won (only one loads; pick ours with
  ``OTEL_PYTHON_CONFIGURATOR=costspan``), it still adds a CostSpanProcessor for attribution and
  foreign-span cost metrics, and says why exported foreign spans will lack cost.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from opentelemetry import trace
from opentelemetry.environment_variables import (
    OTEL_LOGS_EXPORTER,
    OTEL_METRICS_EXPORTER,
    OTEL_TRACES_EXPORTER,
)
from opentelemetry.instrumentation.distro import BaseDistro
from opentelemetry.sdk._configuration import _OTelSDKConfigurator  # pyright: ignore[reportPrivateUsage]
from opentelemetry.sdk.environment_variables import OTEL_EXPORTER_OTLP_PROTOCOL
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from costspan import _launch
from costspan._processor import CostSpanProcessor, install, is_installed, mark_installed

_logger = logging.getLogger(__name__)


class CostspanDistro(BaseDistro):
    """The defaults of ``opentelemetry-distro``, so costspan alone is enough to auto-launch."""

    def _configure(self, **kwargs: Any) -> None:
        os.environ.setdefault(OTEL_TRACES_EXPORTER, "otlp")
        os.environ.setdefault(OTEL_METRICS_EXPORTER, "otlp")
        os.environ.setdefault(OTEL_LOGS_EXPORTER, "otlp")
        os.environ.setdefault(OTEL_EXPORTER_OTLP_PROTOCOL, "grpc")
        disable_other_openai_instrumentors()


def disable_other_openai_instrumentors() -> list[str]:
    """One span per openai call: add the other instrumentors of openai the launcher would load
    to ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` (read after the distro is configured). Returns
    the names disabled; never raises."""
    try:
        plan = _launch.with_others_disabled(os.environ)
        if plan is None:
            return []
        value, names = plan
        os.environ[_launch.DISABLED] = value
        _logger.info(
            "costspan: %s also instrument(s) openai; disabled (%s=%s) so that each call is "
            "traced once, by costspan. Set COSTSPAN_OTHER_OPENAI_INSTRUMENTORS=keep to keep both.",
            ", ".join(names),
            _launch.DISABLED,
            value,
        )
        return names
    except Exception:
        _logger.exception("costspan could not check which instrumentations trace openai")
        return []


def _exporting_processor(exporter: SpanExporter) -> SpanProcessor:
    return CostSpanProcessor(BatchSpanProcessor(exporter))


class CostspanConfigurator(_OTelSDKConfigurator):
    """The standard SDK configurator, with CostSpanProcessor in front of every exporter."""

    def _configure(self, **kwargs: Any) -> None:
        kwargs.setdefault("export_span_processor", _exporting_processor)
        super()._configure(**kwargs)  # pyright: ignore[reportUnknownMemberType]
        # The wrapped exporters already attribute and price; post_instrument must not add more.
        mark_installed(trace.get_tracer_provider())


def post_instrument(**_: Any) -> None:
    """Make sure the global SDK tracer provider has a CostSpanProcessor; never raises."""
    try:
        provider = trace.get_tracer_provider()
        if is_installed(provider) or not hasattr(provider, "add_span_processor"):
            return
        install(provider)
        _logger.warning(
            "costspan: another OpenTelemetry configurator set up the SDK, so spans from other "
            "GenAI instrumentations are exported without cost (costspan's own spans carry it). "
            "Set OTEL_PYTHON_CONFIGURATOR=costspan to price every GenAI span on export."
        )
    except Exception:
        _logger.exception("costspan could not install its span processor")
