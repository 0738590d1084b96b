"""Service B: answers questions with an LLM, under whatever budget the caller's baggage carries.

It extracts the W3C trace context and baggage from each request (as any OpenTelemetry HTTP
server instrumentation does), so costspan sees service A's budget and tags, and refuses a call
that would break A's budget before it is sent. Run by ``main.py``; prints its port, then serves.
"""

from __future__ import annotations

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
from opentelemetry import context, propagate
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import costspan

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
costspan.instrument(tracer_provider=provider)
client = openai.OpenAI(base_url=os.environ["OPENAI_BASE_URL"], api_key="local", max_retries=0)

SHOWN = ("user.id", "feature", "gen_ai.usage.cost.amount", "costspan.budget.decision")


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def do_POST(self) -> None:
        question = self.rfile.read(int(self.headers["content-length"])).decode()
        # Header names arrive capitalised (urllib sends "Baggage"); the W3C getters want lower case.
        token = context.attach(propagate.extract({k.lower(): v for k, v in self.headers.items()}))
        try:
            client.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": question}],
                max_completion_tokens=200,
                extra_headers={"x-costspan-test-output-tokens": "200"},  # long answers
            )
            status, outcome = 200, {"answered": True}
        except costspan.BudgetExceeded as refused:
            status, outcome = 402, {"answered": False, "refused_by": refused.scope}
        finally:
            context.detach(token)
        attributes = exporter.get_finished_spans()[-1].attributes or {}
        body: dict[str, object] = {
            **outcome,
            "span": {k: v for k, v in attributes.items() if k in SHOWN},
            "budgets": list(attributes.get("costspan.budget.ids", ())),  # pyright: ignore[reportArgumentType]
        }
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    sys.exit(0)
