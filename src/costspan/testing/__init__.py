"""Test helpers that costspan's users can use too.

:class:`OpenAICompatibleServer` is a local OpenAI- and Anthropic-compatible server: point a real
``openai`` client at ``server.base_url`` (or an ``anthropic`` client at
``server.anthropic_base_url``) and every call goes over HTTP on 127.0.0.1, billed the way the
provider bills it (tools, schemas, images, audio, history, output caps with reasoning, other
tokenizers, Anthropic's prompt cache), with dated model ids, streaming, and the providers' error
responses. The per-request test headers are listed in ``costspan.testing._server``.
"""

from costspan.testing._server import APIError, OpenAICompatibleServer, RecordedRequest

__all__ = ["APIError", "OpenAICompatibleServer", "RecordedRequest"]
