"""The "assistant" service: answers a question with an LLM under the caller's budget and tags.

It continues the caller's trace and baggage from the request headers (as an OpenTelemetry HTTP
server instrumentation would) and exports its spans over OTLP, like the storefront. Started by
``main.py``; prints its port, then serves until terminated.
"""

from __future__ import annotations

import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
from opentelemetry import context, propagate, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

import costspan

provider = TracerProvider(resource=Resource.create({"service.name": "assistant"}))
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
costspan.instrument(tracer_provider=provider)
tracer = provider.get_tracer("assistant")
client = openai.OpenAI(base_url=os.environ["OPENAI_BASE_URL"], api_key="local", max_retries=0)


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def do_POST(self) -> None:
        question = self.rfile.read(int(self.headers["content-length"])).decode()
        carrier = {k.lower(): v for k, v in self.headers.items()}
        token = context.attach(propagate.extract(carrier))
        try:
            with tracer.start_as_current_span("POST /answer", kind=trace.SpanKind.SERVER) as span:
                try:
                    client.chat.completions.create(
                        model="gpt-4o",
                        messages=[{"role": "user", "content": question}],
                        max_completion_tokens=300,
                        extra_headers={"x-costspan-test-output-tokens": "300"},
                    )
                    status = 200
                except costspan.BudgetExceeded:
                    status = 402  # refused before it was sent: the caller's budget is spent
                span.set_attribute("http.response.status_code", status)
        finally:
            context.detach(token)
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()


def stop(signum: int, frame: object) -> None:
    provider.shutdown()  # export what is buffered before leaving
    costspan.uninstrument()
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
