"""An app that attributes its spend through baggage and makes one chat call (run by tests)."""

from __future__ import annotations

import openai
from opentelemetry import baggage, context

from costspan.testing import OpenAICompatibleServer

with OpenAICompatibleServer() as server:
    client = openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0)
    token = context.attach(
        baggage.set_baggage("feature", "search", baggage.set_baggage("user.id", "u-123"))
    )
    try:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Where is Lyon?"}]
        )
    finally:
        context.detach(token)
        client.close()
