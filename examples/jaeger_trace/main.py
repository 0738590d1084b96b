"""The trace to look at in Jaeger: one checkout request that spans two services, several LLM
calls and one refusal, exported over OTLP (OTEL_EXPORTER_OTLP_ENDPOINT, default
http://127.0.0.1:4318: the collector or Jaeger of collector-config/docker-compose.yaml).

The "storefront" service receives POST /checkout, opens a $0.008 budget and tags for the
request, summarises the cart with one LLM call, then asks the "assistant" service three
questions; the assistant's calls spend under the same budget (it travels in baggage), and the
third is refused before it is sent. Both services keep spend records in one SQLite file, so the
most expensive call can be looked up and opened in Jaeger directly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import openai
from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

import costspan
from costspan.testing import OpenAICompatibleServer

JAEGER_UI = os.environ.get("JAEGER_UI", "http://127.0.0.1:16686")


def ask(port: int, question: str) -> int:
    with trace.get_tracer("storefront").start_as_current_span(
        "POST /answer", kind=trace.SpanKind.CLIENT
    ):
        headers: dict[str, str] = {}
        propagate.inject(headers)  # traceparent, and baggage with the budget and tags
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/answer", data=question.encode(), headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status
        except urllib.error.HTTPError as refused:
            return refused.code


def main() -> None:
    records = os.environ.get("COSTSPAN_RECORDS") or str(
        Path(tempfile.mkdtemp()) / "checkout-spend.db"
    )
    os.environ["COSTSPAN_RECORDS"] = records  # both services write their records here
    provider = TracerProvider(resource=Resource.create({"service.name": "storefront"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    costspan.instrument()
    with OpenAICompatibleServer() as llm:
        env = {**os.environ, "OPENAI_BASE_URL": llm.base_url}
        assistant = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("service.py"))],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert assistant.stdout is not None
            port = int(assistant.stdout.readline())
            client = openai.OpenAI(base_url=llm.base_url, api_key="local", max_retries=0)
            tracer = trace.get_tracer("storefront")
            with (
                tracer.start_as_current_span("POST /checkout", kind=trace.SpanKind.SERVER) as root,
                costspan.tags({"feature": "checkout", "user.id": "u-42"}),
                costspan.budget(usd="0.008", name="checkout request"),
            ):
                client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=[{"role": "user", "content": "Summarise this cart in a line."}],
                )
                statuses = [ask(port, f"Question {i} about shipping?") for i in range(3)]
            trace_id = format(root.get_span_context().trace_id, "032x")
        finally:
            assistant.terminate()  # it flushes its spans on SIGTERM
            assistant.wait(timeout=30)
    costspan.uninstrument()
    provider.shutdown()

    # The most expensive call of this request, from both services' spend records.
    calls = [r for r in costspan.report(since="1h").records if r.trace_id == trace_id]
    priciest = max((r for r in calls if r.usd is not None), key=lambda r: r.usd or 0)
    print("assistant answered:", statuses)
    print(f"trace {JAEGER_UI}/trace/{trace_id}")
    print(
        f"most expensive call: {priciest.request_model} ${priciest.usd} "
        f"{JAEGER_UI}/trace/{trace_id}?uiFind={priciest.span_id}"
    )
    summary = {
        "trace_id": trace_id,
        "statuses": statuses,
        "priciest_span_id": priciest.span_id,
        "priciest_usd": str(priciest.usd),
        "calls": len(calls),
    }
    print("summary:", json.dumps(summary))


if __name__ == "__main__":
    main()
