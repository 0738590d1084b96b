"""A local OpenAI- and Anthropic-compatible HTTP server for demos and tests: the real wire protocol.

It speaks enough of the OpenAI API for the ``openai`` client to work unmodified: Chat
Completions (plain and SSE streaming, with the usage chunk only when asked), Responses (plain and
streaming events), Embeddings (float and base64) and legacy Completions, with OpenAI's error body
shape; and Anthropic's Messages API (``POST /v1/messages``, plain and streamed, prompt caching,
``/v1/messages/count_tokens``) for the ``anthropic`` client at :attr:`anthropic_base_url`. It
binds 127.0.0.1 on a free port and runs on daemon threads.

It bills like a provider, independently of costspan's estimator: tools, structured-output
schemas, images, audio, files and tool-call history count as OpenAI counts them (``_billing``,
``_media``), models of other providers count text with their own (larger) tokenizer ratio, output
never exceeds the request's cap (reasoning included), ``n``/``best_of`` bill every completion,
and Claude's prompt cache splits input three ways (``_anthropic``).

Per-request test behaviour travels in headers (so parallel tests don't share state):

- ``x-costspan-test-cut-after: N`` -- send N stream events, then drop the connection.
- ``x-costspan-test-omit-usage: 1`` -- never send stream usage (a server ignoring the option).
- ``x-costspan-test-delay-ms: N`` -- wait before answering.
- ``x-costspan-test-reasoning-tokens: N`` -- spend N reasoning tokens per choice (inside the
  output, and within its cap; OpenAI's APIs only).
- ``x-costspan-test-cost: USD`` -- report ``usage.cost`` as gateways such as OpenRouter do.
- ``x-costspan-test-output-tokens: N`` -- answer with about N tokens (still cut by the cap).
- ``x-costspan-test-input-scale: D`` -- bill text input at D provider tokens per o200k token
  (rounded up), replacing the model family's default (1.25 for Claude, 1.15 for Llama, ...).
- ``x-costspan-test-output-scale: D`` -- the same for the answer's text.
- ``x-costspan-test-extra-input-tokens: N`` -- add N input tokens (a gateway's own prompt).
- ``x-costspan-test-error: STATUS`` -- answer with that error (429, 500, 529, 400, ...) in the
  API's own shape, as :meth:`OpenAICompatibleServer.fail_next` does for the next requests.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from costspan.testing import _anthropic as A
from costspan.testing import _billing as B
from costspan.testing import _replies as R
from costspan.testing._errors import (
    APIError,
    anthropic_error,
    as_anthropic,
    openai_error,
    rate_limited,
    server_error,
)
from costspan.testing._json import items, obj, objs, text_of

__all__ = ["APIError", "OpenAICompatibleServer", "RecordedRequest", "rate_limited", "server_error"]

# OpenAI paths under any prefix: /v1, Azure's /openai/deployments/{name}, Groq's /openai/v1,
# Gemini's /v1beta/openai, or none (DeepSeek); Anthropic's /v1/messages.
_ROUTE = re.compile(
    r"^.*?/(chat/completions|completions|responses|embeddings|messages|messages/count_tokens)$"
)
_ANTHROPIC_ROUTES = ("messages", "messages/count_tokens")
LEGACY_DEFAULT_MAX_TOKENS = 16  # OpenAI's legacy Completions default


@dataclass(frozen=True)
class RecordedRequest:
    """A request the server received: its path, JSON body and headers (lower-cased names)."""

    path: str
    body: Mapping[str, Any]
    headers: Mapping[str, str]


def _route_of(path: str) -> str:
    match = _ROUTE.match(path.split("?", 1)[0])
    return match.group(1) if match else ""


class OpenAICompatibleServer:
    """The server. Use as a context manager, or call :meth:`start` and :meth:`stop`.

    Example::

        with OpenAICompatibleServer() as server:
            client = openai.OpenAI(base_url=server.base_url, api_key="test")
            client.chat.completions.create(model="gpt-4o-mini", messages=[...])
            claude = anthropic.Anthropic(base_url=server.anthropic_base_url, api_key="test")
            claude.messages.create(model="claude-sonnet-4-5", max_tokens=100, messages=[...])

    Args:
        port: 0 (default) picks a free port.
        reject_stream_options: answer 400 to any request carrying ``stream_options``, as some
            OpenAI-compatible servers do.
        service_tier: the ``service_tier`` reported in responses.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        reject_stream_options: bool = False,
        service_tier: str = "default",
    ) -> None:
        self.reject_stream_options = reject_stream_options
        self.service_tier = service_tier
        self.requests: list[RecordedRequest] = []
        self.cache = R.PromptCache()
        self.anthropic_cache = A.PromptCache()
        self.responses = B.ResponseMemory()
        self._failures: list[int] = []
        self._lock = threading.Lock()
        self._httpd = _HTTPServer(("127.0.0.1", port), _Handler)
        self._httpd.app = self
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """The URL to give ``openai.OpenAI(base_url=...)``."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """The URL to give ``anthropic.Anthropic(base_url=...)`` (it appends ``/v1/messages``)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OpenAICompatibleServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},  # stop() returns within one poll interval
                name="costspan-openai-server",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> OpenAICompatibleServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def fail_next(self, status: int, *, count: int = 1) -> None:
        """Answer the next ``count`` requests with a 429 or 500 (or any status) error.

        The error takes the shape of the API asked (OpenAI's, or Anthropic's for Messages).
        """
        with self._lock:
            self._failures.extend([status] * count)

    def _record(self, request: RecordedRequest) -> int | None:
        with self._lock:
            self.requests.append(request)
            return self._failures.pop(0) if self._failures else None

    # -- routes ------------------------------------------------------------------------------
    def handle(
        self, path: str, body: Mapping[str, Any], headers: Mapping[str, str]
    ) -> RouteResponse:
        route = _route_of(path)
        try:
            return self._handle(route, path, body, headers)
        except APIError as err:
            raise as_anthropic(err) if route in _ANTHROPIC_ROUTES else err from None

    def _handle(
        self, route: str, path: str, body: Mapping[str, Any], headers: Mapping[str, str]
    ) -> RouteResponse:
        injected = self._record(RecordedRequest(path, body, headers))
        forced = headers.get("x-costspan-test-error")
        if injected is None and forced:
            injected = int(forced) if forced.strip().isdigit() else 500
        if injected is not None:
            raise (
                anthropic_error(injected) if route in _ANTHROPIC_ROUTES else openai_error(injected)
            )
        delay = B.int_header(headers, "x-costspan-test-delay-ms")
        if delay:
            time.sleep(delay / 1000)
        if self.reject_stream_options and "stream_options" in body:
            raise APIError(
                400,
                "Unrecognized request argument supplied: stream_options",
                param="stream_options",
            )
        if route in _ANTHROPIC_ROUTES:
            return self._messages(body, headers, count_only=route == "messages/count_tokens")
        handler = {
            "chat/completions": self._chat,
            "completions": self._completions,
            "responses": self._responses,
            "embeddings": self._embeddings,
        }.get(route)
        if handler is None:
            raise APIError(404, f"Invalid URL (POST {path})")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise APIError(400, "you must provide a model parameter", param="model")
        return handler(model, body, headers)

    def _chat(
        self, model: str, body: Mapping[str, Any], headers: Mapping[str, str]
    ) -> RouteResponse:
        messages = objs(body.get("messages"))
        if not messages:
            raise APIError(400, "'messages' must be a non-empty array", param="messages")
        if "max_tokens" in body and R.is_reasoning_model(model):
            raise APIError(
                400,
                "Unsupported parameter: 'max_tokens' is not supported with this model. "
                "Use 'max_completion_tokens' instead.",
                param="max_tokens",
                code="unsupported_parameter",
            )
        prompt = B.chat_prompt(body, model)
        prompt_tokens = B.billed(prompt, model, headers)
        cached = self.cache.cached_tokens(_cache_key(prompt), prompt_tokens)
        fmt = obj(body.get("response_format"))
        structured = (
            R.structured_reply(obj(fmt.get("json_schema")))
            if fmt.get("type") == "json_schema"
            else None
        )
        reply = _generate(
            model,
            headers,
            prompt_text=text_of(messages[-1].get("content")),
            prompt_tokens=prompt_tokens,
            cached_tokens=cached,
            cap=_cap(body, "max_completion_tokens", "max_tokens"),
            choices=_count(body, "n"),
            structured=structured,
        )
        reply.audio_tokens = prompt.audio
        tier = self._tier(body)
        if body.get("stream"):
            include = bool(obj(body.get("stream_options")).get("include_usage"))
            include = include and not headers.get("x-costspan-test-omit-usage")
            return RouteResponse.stream(
                R.chat_chunks(model, reply, tier, include), done_marker=True
            )
        return RouteResponse.json(R.chat_completion(model, reply, tier))

    def _completions(
        self, model: str, body: Mapping[str, Any], headers: Mapping[str, str]
    ) -> RouteResponse:
        prompt = body.get("prompt")
        text = prompt if isinstance(prompt, str) else " ".join(map(str, prompt or []))
        ids = R.token_array_length(prompt)  # a prompt of token ids: one token per id
        counted = ids if ids is not None else R.count_tokens(text, model)
        choices = _count(body, "n")
        best_of = _count(body, "best_of") if body.get("best_of") is not None else choices
        if best_of < choices:
            raise APIError(400, "best_of must be greater than or equal to n", param="best_of")
        reply = _generate(
            model,
            headers,
            prompt_text=text,
            prompt_tokens=B.billed(B.Prompt(text=counted), model, headers),
            cached_tokens=0,
            cap=_cap(body, "max_tokens") or LEGACY_DEFAULT_MAX_TOKENS,
            choices=choices,
            generated=best_of,
        )
        if body.get("stream"):
            include = bool(obj(body.get("stream_options")).get("include_usage"))
            include = include and not headers.get("x-costspan-test-omit-usage")
            return RouteResponse.stream(
                R.text_completion_chunks(model, reply, include), done_marker=True
            )
        return RouteResponse.json(R.text_completion(model, reply))

    def _responses(
        self, model: str, body: Mapping[str, Any], headers: Mapping[str, str]
    ) -> RouteResponse:
        prompt = B.responses_prompt(body, model, self.responses)
        prompt_tokens = B.billed(prompt, model, headers)
        cached = self.cache.cached_tokens(_cache_key(prompt), prompt_tokens)
        fmt = obj(obj(body.get("text")).get("format"))
        structured = R.structured_reply(fmt) if fmt.get("type") == "json_schema" else None
        raw = body.get("input")
        entries = objs(raw)
        last = (
            raw if isinstance(raw, str) else text_of(entries[-1].get("content") if entries else "")
        )
        reply = _generate(
            model,
            headers,
            prompt_text=last,
            prompt_tokens=prompt_tokens,
            cached_tokens=cached,
            cap=_cap(body, "max_output_tokens"),
            structured=structured,
        )
        reply.audio_tokens = prompt.audio
        response_id, message_id = R.new_id("resp_"), R.new_id("msg_")
        if body.get("store", True) is not False:
            self._remember(model, headers, reply, response_id, message_id)
        tier = self._tier(body)
        if body.get("stream"):
            events = R.response_events(
                model,
                reply,
                response_id=response_id,
                message_id=message_id,
                service_tier=tier,
                request=body,
            )
            return RouteResponse.stream(events, done_marker=False, named_events=True)
        return RouteResponse.json(
            R.response_object(
                model,
                reply,
                response_id=response_id,
                message_id=message_id,
                service_tier=tier,
                request=body,
            )
        )

    def _remember(
        self,
        model: str,
        headers: Mapping[str, str],
        reply: R.Generation,
        response_id: str,
        message_id: str,
    ) -> None:
        """Keep what a later ``previous_response_id`` or ``item_reference`` bills for this one."""
        visible = reply.completion_tokens - reply.reasoning_tokens
        message = (
            B.scaled(
                B.TOKENS_PER_MESSAGE + B.count("assistant", model), B.input_scale(model, headers)
            )
            + visible
        )
        with self._lock:
            self.responses.contexts[response_id] = reply.prompt_tokens + visible
            self.responses.items[message_id] = message

    def _embeddings(
        self, model: str, body: Mapping[str, Any], headers: Mapping[str, str]
    ) -> RouteResponse:
        raw = body.get("input")
        inputs = [raw] if isinstance(raw, str) else [str(x) for x in items(raw)]
        if not inputs:
            raise APIError(400, "'input' must be a non-empty string or array", param="input")
        dims = int(body.get("dimensions") or R.DEFAULT_EMBEDDING_DIMENSIONS)
        fmt = str(body.get("encoding_format") or "float")
        ids = R.token_array_length(raw)
        return RouteResponse.json(R.embeddings(model, inputs, dims, fmt, ids))

    def _messages(
        self, body: Mapping[str, Any], headers: Mapping[str, str], *, count_only: bool
    ) -> RouteResponse:
        if count_only:
            model = body.get("model")
            if not isinstance(model, str) or not model:
                raise anthropic_error(400, "model: Field required")
        else:
            model = A.validate(body)
        blocks = A.prompt_blocks(body, model, B.input_scale(model, headers))
        A.breakpoints_checked(blocks)
        extra = B.billed(B.Prompt(), model, headers)  # the gateway's extra input tokens
        usage = self.anthropic_cache.account(model, blocks, extra, write=not count_only)
        if count_only:
            total = usage.input_tokens + usage.cache_read + usage.cache_creation
            return RouteResponse.json({"input_tokens": total})
        reply = A.make_reply(
            model,
            body,
            usage,
            length=_length(headers),
            output_scale=B.output_scale(model, headers),
        )
        cost = headers.get("x-costspan-test-cost")
        if cost:
            reply.reported_cost = float(cost)
        if body.get("stream"):
            return RouteResponse.stream(
                A.message_events(reply), done_marker=False, named_events=True
            )
        return RouteResponse.json(A.message_body(reply))

    def _tier(self, body: Mapping[str, Any]) -> str:
        requested = body.get("service_tier")
        return (
            requested if isinstance(requested, str) and requested != "auto" else self.service_tier
        )


def _cache_key(prompt: B.Prompt) -> object:
    # A plain request keys the cache on its messages alone, as before tools were billed.
    return prompt.cache_key[0] if len(prompt.cache_key) == 1 else prompt.cache_key


def _cap(body: Mapping[str, Any], *names: str) -> int | None:
    """The first output cap set in the body; a cap that is not a positive integer is a 400."""
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise APIError(
                400,
                f"Invalid '{name}': integer below minimum value. Expected a value >= 1, "
                f"but got {value!r} instead.",
                param=name,
                code="integer_below_min_value",
            )
        return value
    return None


def _count(body: Mapping[str, Any], name: str) -> int:
    value = body.get(name)
    if value is None:
        return 1
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise APIError(
            400, f"Invalid '{name}': expected an integer >= 1, got {value!r}.", param=name
        )
    return value


def _length(headers: Mapping[str, str]) -> int | None:
    if not headers.get("x-costspan-test-output-tokens"):
        return None
    return B.int_header(headers, "x-costspan-test-output-tokens")


def _reported_cost(headers: Mapping[str, str]) -> float | None:
    cost = B.decimal_header(headers, "x-costspan-test-cost")
    return None if cost is None else float(cost)


def _generate(model: str, headers: Mapping[str, str], **kwargs: Any) -> R.Generation:
    """Generate an answer with the per-request knobs (reasoning, length, scale, reported cost)."""
    forced = headers.get("x-costspan-test-reasoning-tokens")
    reply = R.make_reply(
        model,
        length=_length(headers),
        reasoning=B.int_header(headers, "x-costspan-test-reasoning-tokens") if forced else None,
        output_scale=B.output_scale(model, headers),
        **kwargs,
    )
    reply.reported_cost = _reported_cost(headers)
    return reply


@dataclass
class RouteResponse:
    """What a route answers: a JSON body, or a stream of SSE events."""

    body: Mapping[str, Any] | None = None
    events: Iterator[Mapping[str, Any]] | None = None
    done_marker: bool = False
    named_events: bool = False

    @classmethod
    def json(cls, body: Mapping[str, Any]) -> RouteResponse:
        return cls(body=body)

    @classmethod
    def stream(
        cls, events: Iterator[Mapping[str, Any]], *, done_marker: bool, named_events: bool = False
    ) -> RouteResponse:
        return cls(events=events, done_marker=done_marker, named_events=named_events)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog is 5: a fan-out of concurrent clients would see
    # connections reset before the server accepts them.
    request_queue_size = 1024
    app: OpenAICompatibleServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients closing idle keep-alive connections are normal, not errors to print."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without TCP_NODELAY, Nagle plus delayed ACKs
    # add ~40 ms to every response.
    disable_nagle_algorithm = True
    server: _HTTPServer  # pyright: ignore[reportIncompatibleVariableOverride]

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: a test server that prints every request drowns the test output."""

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            self._send_json(200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "costspan"}
                for m in R.DATED_MODELS
            ]})  # fmt: skip
            return
        self._send_json(404, APIError(404, f"Invalid URL (GET {self.path})").body)

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        is_anthropic = _route_of(self.path) in _ANTHROPIC_ROUTES
        try:
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError as err:
                raise APIError(400, "We could not parse the JSON body of your request.") from err
            if not isinstance(body, dict):
                raise APIError(400, "The request body must be a JSON object")
            cut = B.int_header(headers, "x-costspan-test-cut-after")
            reply = self.server.app.handle(self.path, body, headers)  # pyright: ignore[reportUnknownArgumentType]
        except APIError as err:
            err = as_anthropic(err) if is_anthropic else err
            self._send_json(err.status, err.body, err.headers)
            return
        except Exception as err:  # a bug in the server: say so, as a 500, instead of hanging up
            failure = APIError(500, f"costspan test server error: {err!r}", type_="server_error")
            failure = as_anthropic(failure) if is_anthropic else failure
            self._send_json(500, failure.body)
            return
        if reply.body is not None:
            self._send_json(200, reply.body)
        elif reply.events is not None:
            self._send_stream(reply, cut if headers.get("x-costspan-test-cut-after") else None)

    def _send_json(
        self, status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        request_id = R.new_id("req_")
        self.send_header("x-request-id", request_id)
        self.send_header("request-id", request_id)  # Anthropic's name for it
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_stream(self, reply: RouteResponse, cut_after: int | None) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("x-request-id", R.new_id("req_"))
        self.end_headers()
        assert reply.events is not None
        for sent, event in enumerate(reply.events):
            if cut_after is not None and sent >= cut_after:
                # Drop the connection mid-body: the client sees an incomplete chunked response,
                # as it would when a provider or proxy dies during generation.
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            prefix = f"event: {event['type']}\n" if reply.named_events else ""
            self._chunk(f"{prefix}data: {json.dumps(event)}\n\n".encode())
        if reply.done_marker:
            self._chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()
