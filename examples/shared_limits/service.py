"""One LLM-backed service, run twice by ``main.py`` under ``opentelemetry-instrument``.

Its code knows nothing about budgets: the launcher loads costspan (entry points), and costspan
reads ``COSTSPAN_LEDGER`` (Redis) and ``COSTSPAN_LIMITS`` (a daily cap per ``user.id``) from the
environment. Each request's W3C baggage says which user it is for. Prints its port, then serves.
"""

from __future__ import annotations

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
from opentelemetry import context, propagate

import costspan

client = openai.OpenAI(base_url=os.environ["OPENAI_BASE_URL"], api_key="local", max_retries=0)
NAME = sys.argv[1]


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def do_POST(self) -> None:
        question = self.rfile.read(int(self.headers["content-length"])).decode()
        # What an HTTP server instrumentation does: continue the caller's trace and baggage.
        token = context.attach(propagate.extract({k.lower(): v for k, v in self.headers.items()}))
        try:
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": question}],
                max_completion_tokens=200,
                extra_headers={"x-costspan-test-output-tokens": "200"},  # long answers
            )
            status, body = 200, {"service": NAME, "answered": True}
        except costspan.BudgetExceeded as refused:
            status, body = 402, {"service": NAME, "answered": False, "refused_by": refused.scope}
        finally:
            context.detach(token)
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
