"""An ordinary openai app with no telemetry code, to run under ``opentelemetry-instrument``.

    opentelemetry-instrument --traces_exporter console --metrics_exporter none \
        python examples/auto_instrument/app.py

costspan's ``costspan_openai`` instrumentor is loaded by the launcher and every call below
becomes a ``chat gpt-4o-mini``-style span. Without ``OPENAI_BASE_URL`` the app starts costspan's
local OpenAI-compatible server, so it runs anywhere without an API key or network.
"""

from __future__ import annotations

import os

import openai

from costspan.testing import OpenAICompatibleServer


def main() -> None:
    server = None
    base_url = os.environ.get("OPENAI_BASE_URL")
    if not base_url:
        server = OpenAICompatibleServer().start()
        base_url = server.base_url
    client = openai.OpenAI(base_url=base_url, api_key=os.environ.get("OPENAI_API_KEY", "local"))
    try:
        reply = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Name three rivers in France."}],
        )
        print(reply.choices[0].message.content)
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "And three in Spain?"}],
            stream=True,
        )
        print("".join(chunk.choices[0].delta.content or "" for chunk in stream))
    finally:
        client.close()
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
