"""Two services, one budget: service A opens a budget and tags, service B spends under them.

A calls B over HTTP with the W3C ``traceparent`` and ``baggage`` headers. B's LLM calls are
checked against A's budget and attributed to A's tags, although B never sees A's code.

With the in-memory ledger (the default) each process enforces the cap on its own spend: B cannot
spend more than A's budget, and neither can A, but together they could spend twice it. A shared
ledger (SQLite or Redis) makes it one cap for both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from opentelemetry import propagate

import costspan
from costspan.testing import OpenAICompatibleServer


def ask_b(port: int, question: str) -> dict[str, object]:
    headers: dict[str, str] = {}
    propagate.inject(headers)  # traceparent + baggage (budget and tags) for service B
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/ask", data=question.encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as refused:  # 402: B refused under A's budget
        return json.loads(refused.read())


def main() -> None:
    with OpenAICompatibleServer() as llm:
        env = {**os.environ, "OPENAI_BASE_URL": llm.base_url}
        b = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("service_b.py"))],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert b.stdout is not None
            port = int(b.stdout.readline())
            with (
                costspan.budget(usd="0.005", name="checkout-request") as budget,
                costspan.tags({"user.id": "u-42", "feature": "checkout"}),
            ):
                answers = [ask_b(port, f"Question {i}: what does shipping cost?") for i in range(6)]
            summary = {
                "budget_id": budget.id,
                "answered": sum(1 for a in answers if a["answered"]),
                "refused": sum(1 for a in answers if not a["answered"]),
                "b_spans": [a["span"] for a in answers],
                "b_budgets": [a["budgets"] for a in answers],
            }
            for i, answer in enumerate(answers):
                print(f"call {i} to service B:", "answered" if answer["answered"] else "refused",
                      answer["span"])  # fmt: skip
            print("summary:", json.dumps(summary))
        finally:
            b.terminate()
            b.wait(timeout=10)


if __name__ == "__main__":
    main()
