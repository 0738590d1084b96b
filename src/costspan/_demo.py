"""``costspan demo``: a real instrumented app against the bundled local server, spans printed.

The app is ordinary openai code: chat calls (one with a cached prompt), a streamed chat, a
Responses call, an embeddings call, a model costspan has no price for and a call the server
rejects; then calls under budgets (refused, downgraded, clamped, a soft budget passing its warning
threshold). costspan instruments it through the public ``instrument()``; a small exporter collects
the finished spans and prints them as a person would want to read them.

The demo can also feed real backends: ``metrics_port`` serves its metrics for Prometheus to
scrape (the dashboards in ``collector-config/`` are proven against that), ``otlp`` exports spans
and metrics to an OTLP endpoint (a collector), and ``rounds`` repeats the traffic so that rates
have something to show.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Generator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import costspan
from costspan import _attributes as A
from costspan import _runtime
from costspan.testing import OpenAICompatibleServer

# The demo's metrics carry who and what each call was for, so the dashboards can break spend down
# by feature and user (a real service names only bounded keys here: see docs/spans.md).
METRIC_TAGS = ("feature", "user.id")

# A system prompt long enough (over 1,024 tokens) for providers to cache it between calls.
GUIDE = "You are a museum guide. Answer briefly, name the room, and mention one work. " * 70


def run_app(base_url: str) -> None:
    """The demo's "application": plain openai code, nothing costspan-specific in it."""
    import openai
    from openai.types.chat import ChatCompletionMessageParam

    client = openai.OpenAI(base_url=base_url, api_key="demo-key", max_retries=0)
    question: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "Which city hosts the Louvre?"}
    ]
    # Who and what each call is for travels in baggage (a web framework would set it per
    # request); reports group spend by it.
    with costspan.tags({"feature": "museum-guide", "user.id": "visitor-1"}):
        client.chat.completions.create(model="gpt-4o-mini", messages=question)
        # The same long system prompt twice: the second call reads most of it from the cache.
        guided: list[ChatCompletionMessageParam] = [
            {"role": "system", "content": GUIDE},
            {"role": "user", "content": "Where is the Mona Lisa?"},
        ]
        client.chat.completions.create(model="gpt-4o-mini", messages=guided)
        client.chat.completions.create(model="gpt-4o-mini", messages=guided)
        stream = client.chat.completions.create(model="o4-mini", messages=question, stream=True)
        for chunk in stream:
            _ = chunk.choices[0].delta.content  # callers that never asked for usage keep working
    with costspan.tags({"feature": "museum-guide", "user.id": "visitor-2"}):
        client.responses.create(model="gpt-5", input="Summarise the Louvre's history in a line.")
    with costspan.tags({"feature": "search", "user.id": "visitor-2"}):
        client.embeddings.create(model="text-embedding-3-small", input=["Louvre", "Orsay"])
    # A self-hosted model nobody publishes a price for: recorded as unpriced, never as $0.
    with costspan.tags({"feature": "support", "user.id": "visitor-3"}):
        client.chat.completions.create(model="acme-support-7b", messages=question)
    # o-series models reject max_tokens: the demo shows how a rejected call is recorded.
    with contextlib.suppress(openai.BadRequestError):
        client.chat.completions.create(model="o3", messages=question, max_tokens=50)


def run_budgets(base_url: str, out: TextIO) -> None:
    """The budget part of the demo: a refusal, a downgrade and a clamp, all before sending, and
    a soft budget that only warns."""
    import openai
    from openai.types.chat import ChatCompletionMessageParam

    client = openai.OpenAI(base_url=base_url, api_key="demo-key", max_retries=0)
    question: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "Write a long essay on the Louvre."}
    ]
    long_answer = {"x-costspan-test-output-tokens": "2000"}  # the local server talks at length
    with costspan.tags({"feature": "essays", "user.id": "demo-user"}):
        with costspan.budget(usd="0.002", name="block $0.002"):
            try:
                client.chat.completions.create(
                    model="gpt-4o", messages=question, max_completion_tokens=1000
                )
            except costspan.BudgetExceeded as refused:
                print(f"refused: {refused}", file=out)
        with costspan.budget(
            usd="0.002", name="downgrade $0.002", on_exceed="downgrade",
            downgrade={"gpt-4o": "gpt-4o-mini"},
        ):  # fmt: skip
            client.chat.completions.create(
                model="gpt-4o", messages=question, max_completion_tokens=1000,
                extra_headers=long_answer,
            )  # fmt: skip
        with costspan.budget(usd="0.002", name="clamp $0.002", on_exceed="clamp") as clamped:
            client.chat.completions.create(
                model="gpt-4o", messages=question, extra_headers=long_answer
            )
            print(
                f"clamped budget spent ${clamped.spent_usd} of $0.002 "
                f"(${clamped.remaining_usd} left)",
                file=out,
            )
        # A soft budget never refuses; passing half of it emits a warning event and metric.
        with costspan.budget(usd="0.001", name="warn $0.001", on_exceed="warn", warn_at=(0.5,)):
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=question,
                extra_headers={"x-costspan-test-output-tokens": "1000"},
            )


def _usd(value: object) -> str:
    return f"${value:.8f}" if isinstance(value, float) else "unpriced"


def _line(span: ReadableSpan) -> str:
    attrs = span.attributes or {}
    duration_ms = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
    kind = "stream" if attrs.get(A.GEN_AI_REQUEST_STREAM) else "call"
    parts = [f"{span.name:<38}", f"{kind:<6}", f"{duration_ms:7.1f} ms"]
    if A.ERROR_TYPE not in attrs:
        parts.append(f"{_usd(attrs.get(A.GEN_AI_USAGE_COST_AMOUNT)):>10}")
    decision = attrs.get(A.COSTSPAN_BUDGET_DECISION)
    if decision is not None and decision != "allow":
        detail = {
            "downgrade": f" from {attrs.get(A.COSTSPAN_BUDGET_ORIGINAL_MODEL)}",
            "clamp": f" to {attrs.get(A.COSTSPAN_BUDGET_CLAMPED_MAX_TOKENS)} output tokens",
            "refuse": f" by {attrs.get(A.COSTSPAN_BUDGET_REFUSED_BY)!r}, nothing sent",
        }.get(str(decision), "")
        parts.append(f"[budget: {decision}{detail}]")
    if A.ERROR_TYPE in attrs:
        parts.append(f"ERROR {attrs[A.ERROR_TYPE]}")
    else:
        tokens = f"in {attrs.get(A.GEN_AI_USAGE_INPUT_TOKENS, '?')}"
        cached = attrs.get(A.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS)
        if cached:
            tokens += f" (cached {cached})"
        if A.GEN_AI_USAGE_OUTPUT_TOKENS in attrs:
            tokens += f"  out {attrs[A.GEN_AI_USAGE_OUTPUT_TOKENS]}"
            reasoning = attrs.get(A.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS)
            if reasoning:
                tokens += f" (reasoning {reasoning})"
        parts.append(tokens)
    return "  ".join(parts)


def _summary(spans: Sequence[ReadableSpan]) -> list[str]:
    # model -> (calls, unpriced calls, total); span attributes are floats, so the summary adds
    # them as decimals of their shortest repr.
    by_model: dict[str, tuple[int, int, Decimal]] = {}
    for span in spans:
        attrs = span.attributes or {}
        if A.GEN_AI_USAGE_INPUT_TOKENS not in attrs:
            continue  # refused by the server before any work: nothing was billed
        amount = attrs.get(A.GEN_AI_USAGE_COST_AMOUNT)
        model = str(attrs.get(A.GEN_AI_REQUEST_MODEL, "?"))
        calls, unpriced, total = by_model.get(model, (0, 0, Decimal(0)))
        if isinstance(amount, float):
            by_model[model] = (calls + 1, unpriced, total + Decimal(repr(amount)))
        else:
            by_model[model] = (calls + 1, unpriced + 1, total)
    grand = sum((total for _, _, total in by_model.values()), Decimal(0))
    lines = ["", "cost by model:"]
    for model, (calls, unpriced, total) in sorted(by_model.items(), key=lambda kv: -kv[1][2]):
        usd = "unpriced" if unpriced == calls else f"${total:.8f}"
        lines.append(f"  {model:<28}{calls:>3} call(s)  {usd}")
    count = sum(calls for calls, _, _ in by_model.values())
    unpriced_calls = sum(unpriced for _, unpriced, _ in by_model.values())
    note = f" (+ {unpriced_calls} unpriced)" if unpriced_calls else ""
    lines.append(f"  {'total':<28}{count:>3} call(s)  ${grand:.8f}{note}")
    return lines


def format_spans(spans: Sequence[ReadableSpan]) -> str:
    lines = [_line(span) for span in spans]
    lines.extend(_summary(spans))
    if spans:
        lines.append("")
        lines.append(f"attributes of the first span ({spans[0].name}):")
        width = max(len(k) for k in spans[0].attributes or {"": 0})
        for key, value in sorted((spans[0].attributes or {}).items()):
            lines.append(f"  {key:<{width}}  {value}")
    return "\n".join(lines)


def _metric_readers(
    otlp_metrics: Any, metrics_port: int | None, closing: contextlib.ExitStack
) -> list[MetricReader]:
    readers: list[MetricReader] = []
    if metrics_port is not None:
        try:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
            from prometheus_client import start_http_server
        except ImportError:
            raise ValueError(
                "--metrics-port needs the Prometheus exporter: pip install 'costspan[prometheus]'"
            ) from None
        # Loopback only: the demo's numbers are nobody else's business.
        try:
            http_server, _ = start_http_server(port=metrics_port, addr="127.0.0.1")
        except OSError as exc:
            raise ValueError(f"--metrics-port {metrics_port}: {exc.strerror}") from None
        closing.callback(http_server.server_close)
        closing.callback(http_server.shutdown)
        readers.append(PrometheusMetricReader())
    if otlp_metrics is not None:
        readers.append(PeriodicExportingMetricReader(otlp_metrics))
    return readers


def _otlp_exporters() -> tuple[Any, Any]:
    """The SDK's OTLP span and metric exporters for OTEL_EXPORTER_OTLP_PROTOCOL (grpc default);
    endpoints, headers and the rest come from the usual OTEL_EXPORTER_OTLP_* variables."""
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    elif protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    else:
        raise ValueError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: the demo speaks grpc or http/protobuf"
        )
    return OTLPSpanExporter(), OTLPMetricExporter()


@contextlib.contextmanager
def _until_stopped() -> Generator[threading.Event]:
    """An event set by SIGTERM, so ``--metrics-port`` can keep serving until then (Ctrl-C
    raises KeyboardInterrupt as usual)."""
    stop = threading.Event()

    def on_sigterm(signum: int, frame: object) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(
    out: TextIO,
    records: Path | None = None,
    *,
    otlp: bool = False,
    metrics_port: int | None = None,
    rounds: int = 1,
    interval: float = 2.0,
) -> int:
    """Run the demo, printing to ``out``; returns the process exit code.

    ``records``: a SQLite file that keeps the demo's spend records (for ``costspan report``).
    ``otlp``: also export spans and metrics over OTLP (``OTEL_EXPORTER_OTLP_*`` variables).
    ``metrics_port``: serve Prometheus metrics on 127.0.0.1 and keep serving after the traffic
    until Ctrl-C or SIGTERM. ``rounds``: how many times to send the traffic, ``interval``
    seconds apart.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, not {rounds}")
    os.environ.setdefault("OTEL_SERVICE_NAME", "costspan-demo")
    spans: Sequence[ReadableSpan] = ()
    with (
        OpenAICompatibleServer() as server,
        _until_stopped() as stop,
        contextlib.ExitStack() as closing,
    ):
        exporter = InMemorySpanExporter()
        tracer_provider = TracerProvider(resource=Resource.create({}))
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        otlp_spans, otlp_metrics = _otlp_exporters() if otlp else (None, None)
        if otlp_spans is not None:
            tracer_provider.add_span_processor(BatchSpanProcessor(otlp_spans))
        meter_provider = MeterProvider(
            metric_readers=_metric_readers(otlp_metrics, metrics_port, closing),
            resource=Resource.create({}),
        )
        settings: dict[str, Any] = {"metric_tags": METRIC_TAGS}
        if records is not None:
            settings["records"] = str(records)
        costspan.instrument(
            tracer_provider=tracer_provider, meter_provider=meter_provider, **settings
        )
        try:
            print(f"costspan demo: local OpenAI-compatible server at {server.base_url}", file=out)
            print(
                "running an instrumented app (chat, a cached prompt, stream, Responses,\n"
                "embeddings, an unpriced model, an error), then calls under budgets\n"
                "(block, downgrade, clamp at $0.002; a soft $0.001 budget that warns)\n",
                file=out,
            )
            for round_ in range(rounds):
                if round_ and stop.wait(interval):
                    break
                run_app(server.base_url)
                run_budgets(server.base_url, out if round_ == 0 else _quiet())
            print(file=out)
            spans = exporter.get_finished_spans()
            print(format_spans(spans), file=out)
            if metrics_port is not None:
                print(
                    f"\nserving metrics at http://127.0.0.1:{metrics_port}/metrics"
                    " until Ctrl-C or SIGTERM",
                    file=out,
                    flush=True,
                )
                with contextlib.suppress(KeyboardInterrupt):
                    while not stop.wait(0.5):
                        pass
        finally:
            costspan.uninstrument()
            _runtime.runtime().recorder.flush()
            tracer_provider.shutdown()
            meter_provider.shutdown()
    return 0 if spans else 1


def _quiet() -> TextIO:
    import io

    return io.StringIO()
