"""An httpx2 transport that sends any host's requests to the local server over real HTTP.

The client keeps its real base URL (``https://api.groq.com/openai/v1``...), so costspan sees the
provider's host exactly as in production, while the bytes go to the local OpenAI-compatible
server on 127.0.0.1. Nothing leaves the machine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2
import openai


class ForwardToLocal(httpx2.BaseTransport):
    def __init__(self, port: int) -> None:
        self._port = port
        self._inner = httpx2.HTTPTransport()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        request.url = request.url.copy_with(scheme="http", host="127.0.0.1", port=self._port)
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


def provider_client(base_url: str, port: int) -> openai.OpenAI:
    """A real openai client for ``base_url`` whose traffic lands on the local server."""
    return openai.OpenAI(
        base_url=base_url,
        api_key="test-key",
        max_retries=0,
        http_client=openai.DefaultHttpxClient(transport=ForwardToLocal(port)),
    )


def http_package() -> Any:
    """The httpx package the installed openai client is built on: ``httpx2`` from openai 3,
    ``httpx`` before (a transport must come from the same one)."""
    import openai._base_client as base

    return getattr(base, "httpx2", None) or getattr(base, "httpx")  # noqa: B009


def answering(answer: Callable[[Any], Any]) -> openai.DefaultHttpxClient:
    """An http client for the openai client that answers every request with ``answer(request)``
    (an in-process transport: a recorded response shape, no server)."""
    return openai.DefaultHttpxClient(transport=http_package().MockTransport(answer))
