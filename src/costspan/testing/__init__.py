"""Test helpers that costspan's users can use too.

:class:`OpenAICompatibleServer` is a local OpenAI-compatible server: point a real ``openai``
client at ``server.base_url`` and every call goes over HTTP on 127.0.0.1, with realistic usage
(cached and reasoning tokens), dated model ids, streaming, and OpenAI's error responses.
"""

from costspan.testing._server import APIError, OpenAICompatibleServer, RecordedRequest

__all__ = ["APIError", "OpenAICompatibleServer", "RecordedRequest"]
