"""A local OpenAI-compatible HTTP server for demos and tests: the real wire protocol, no network.

It speaks enough of the OpenAI API for the ``openai`` client to work unmodified: Chat
Completions (plain and SSE streaming, with the usage chunk only when asked), Responses (plain and
streaming events), Embeddings (float and base64) and legacy Completions, with OpenAI's error body
shape. It binds 127.0.0.1 on a free port and runs on daemon threads.

Per-request test behaviour travels in headers (so parallel tests don't share state):

- ``x-costspan-test-cut-after: N`` -- send N stream events, then drop the connection.
- ``x-costspan-test-omit-usage: 1`` -- never send stream usage (a server ignoring the option).
- ``x-costspan-test-delay-ms: N`` -- wait before answering.
- ``x-costspan-test-reasoning-tokens: N`` -- report N reasoning tokens (inside the output).
- ``x-costspan-test-cost: USD`` -- report ``usage.cost`` as gateways such as OpenRouter do.
- ``x-costspan-test-output-tokens: N`` -- answer with about N tokens (still cut by the cap).
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
from typing import Any, cast

from costspan.testing import _replies as R

# OpenAI paths under any prefix: /v1, Azure's /openai/deployments/{name}, Groq's /openai/v1,
# Gemini's /v1beta/openai, or none (DeepSeek).
_ROUTE = re.compile(r"^.*?/(chat/completions|completions|responses|embeddings)$")


@dataclass(frozen=True)
class RecordedRequest:
    """A request the server received: its path, JSON body and headers (lower-cased names)."""

    path: str
    body: Mapping[str, Any]
    headers: Mapping[str, str]


class APIError(Exception):
    """An error the server answers with, in OpenAI's ``{"error": {...}}`` shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
        self.headers = dict(headers or {})


def rate_limited() -> APIError:
    return APIError(
        429,
        "Rate limit reached for requests. Please try again in 1s.",
        type_="requests",
        code="rate_limit_exceeded",
        headers={"retry-after": "1", "x-ratelimit-remaining-requests": "0"},
    )


def server_error() -> APIError:
    return APIError(
        500, "The server had an error while processing your request.", type_="server_error"
    )


class OpenAICompatibleServer:
    """The server. Use as a context manager, or call :meth:`start` and :meth:`stop`.

    Example::

        with OpenAICompatibleServer() as server:
            client = openai.OpenAI(base_url=server.base_url, api_key="test")
            client.chat.completions.create(model="gpt-4o-mini", messages=[...])

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
        self._failures: list[APIError] = []
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
        """Answer the next ``count`` requests with a 429 or 500 (or any status) error."""
        error = {429: rate_limited, 500: server_error}.get(status)
        with self._lock:
            for _ in range(count):
                self._failures.append(
                    error() if error else APIError(status, f"Injected error {status}")
                )

    def _record(self, request: RecordedRequest) -> APIError | None:
        with self._lock:
            self.requests.append(request)
            return self._failures.pop(0) if self._failures else None

    # -- routes ------------------------------------------------------------------------------
    def handle(self, path: str, body: Mapping[str, Any], headers: Mapping[str, str]) -> Reply:
        injected = self._record(RecordedRequest(path, body, headers))
        if injected is not None:
            raise injected
        delay = int(headers.get("x-costspan-test-delay-ms", "0") or 0)
        if delay:
            time.sleep(delay / 1000)
        if self.reject_stream_options and "stream_options" in body:
            raise APIError(
                400,
                "Unrecognized request argument supplied: stream_options",
                param="stream_options",
            )
        match = _ROUTE.match(path.split("?", 1)[0])
        route = {
            "chat/completions": self._chat,
            "completions": self._completions,
            "responses": self._responses,
            "embeddings": self._embeddings,
        }.get(match.group(1) if match else "")
        if route is None:
            raise APIError(404, f"Invalid URL (POST {path})")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise APIError(400, "you must provide a model parameter", param="model")
        return route(model, body, headers)

    def _chat(self, model: str, body: Mapping[str, Any], headers: Mapping[str, str]) -> Reply:
        messages = [dict(m) for m in R.objs(body.get("messages"))]
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
        prompt_tokens = R.chat_prompt_tokens(messages, model)
        cached = self.cache.cached_tokens(messages, prompt_tokens)
        cap = body.get("max_completion_tokens") or body.get("max_tokens")
        fmt = R.obj(body.get("response_format"))
        structured = (
            R.structured_reply(R.obj(fmt.get("json_schema")))
            if fmt.get("type") == "json_schema"
            else None
        )
        last = R.text_of(messages[-1].get("content"))
        reply = _with_test_usage(
            headers,
            R.make_reply(
                model,
                prompt_text=last,
                prompt_tokens=prompt_tokens,
                cached_tokens=cached,
                cap=cap,
                choices=int(body.get("n") or 1),
                structured=structured,
                length=_length(headers),
            ),
        )
        tier = self._tier(body)
        if body.get("stream"):
            include = bool(R.obj(body.get("stream_options")).get("include_usage"))
            include = include and not headers.get("x-costspan-test-omit-usage")
            return Reply.stream(R.chat_chunks(model, reply, tier, include), done_marker=True)
        return Reply.json(R.chat_completion(model, reply, tier))

    def _completions(
        self, model: str, body: Mapping[str, Any], headers: Mapping[str, str]
    ) -> Reply:
        prompt = body.get("prompt")
        text = prompt if isinstance(prompt, str) else " ".join(map(str, prompt or []))
        prompt_tokens = R.count_tokens(text, model)
        reply = _with_test_usage(
            headers,
            R.make_reply(
                model,
                prompt_text=text,
                prompt_tokens=prompt_tokens,
                cached_tokens=0,
                cap=body.get("max_tokens"),
                choices=int(body.get("n") or 1),
                length=_length(headers),
            ),
        )
        if body.get("stream"):
            include = bool(R.obj(body.get("stream_options")).get("include_usage"))
            include = include and not headers.get("x-costspan-test-omit-usage")
            return Reply.stream(R.text_completion_chunks(model, reply, include), done_marker=True)
        return Reply.json(R.text_completion(model, reply))

    def _responses(self, model: str, body: Mapping[str, Any], headers: Mapping[str, str]) -> Reply:
        input_ = body.get("input")
        if isinstance(input_, str):
            messages: list[dict[str, Any]] = [{"role": "user", "content": input_}]
        elif isinstance(input_, list):
            messages = [dict(m) for m in R.objs(cast("object", input_))]
        else:
            raise APIError(400, "Missing required parameter: 'input'.", param="input")
        if body.get("instructions"):
            messages = [{"role": "developer", "content": body["instructions"]}, *messages]
        prompt_tokens = R.chat_prompt_tokens(messages, model)
        cached = self.cache.cached_tokens(messages, prompt_tokens)
        fmt = R.obj(R.obj(body.get("text")).get("format"))
        structured = R.structured_reply(fmt) if fmt.get("type") == "json_schema" else None
        last = R.text_of(messages[-1].get("content")) if messages else ""
        reply = _with_test_usage(
            headers,
            R.make_reply(
                model,
                prompt_text=last,
                prompt_tokens=prompt_tokens,
                cached_tokens=cached,
                cap=body.get("max_output_tokens"),
                structured=structured,
                length=_length(headers),
            ),
        )
        tier = self._tier(body)
        if body.get("stream"):
            events = R.response_events(model, reply, service_tier=tier, request=body)
            return Reply.stream(events, done_marker=False, named_events=True)
        return Reply.json(
            R.response_object(
                model, reply, response_id=R.new_id("resp_"), service_tier=tier, request=body
            )
        )

    def _embeddings(self, model: str, body: Mapping[str, Any], headers: Mapping[str, str]) -> Reply:
        raw = body.get("input")
        inputs = [raw] if isinstance(raw, str) else [str(x) for x in R.items(raw)]
        if not inputs:
            raise APIError(400, "'input' must be a non-empty string or array", param="input")
        dims = int(body.get("dimensions") or R.DEFAULT_EMBEDDING_DIMENSIONS)
        fmt = str(body.get("encoding_format") or "float")
        return Reply.json(R.embeddings(model, inputs, dims, fmt))

    def _tier(self, body: Mapping[str, Any]) -> str:
        requested = body.get("service_tier")
        return (
            requested if isinstance(requested, str) and requested != "auto" else self.service_tier
        )


def _length(headers: Mapping[str, str]) -> int | None:
    value = headers.get("x-costspan-test-output-tokens")
    return int(value) if value else None


def _with_test_usage(headers: Mapping[str, str], reply: R.Reply) -> R.Reply:
    """Apply the per-request usage knobs (forced reasoning tokens, a reported cost)."""
    forced = headers.get("x-costspan-test-reasoning-tokens")
    if forced:
        extra = int(forced) - reply.reasoning_tokens
        reply.reasoning_tokens += extra
        reply.completion_tokens += extra
    cost = headers.get("x-costspan-test-cost")
    if cost:
        reply.reported_cost = float(cost)
    return reply


@dataclass
class Reply:
    """What a route answers: a JSON body, or a stream of SSE events."""

    body: Mapping[str, Any] | None = None
    events: Iterator[Mapping[str, Any]] | None = None
    done_marker: bool = False
    named_events: bool = False

    @classmethod
    def json(cls, body: Mapping[str, Any]) -> Reply:
        return cls(body=body)

    @classmethod
    def stream(
        cls, events: Iterator[Mapping[str, Any]], *, done_marker: bool, named_events: bool = False
    ) -> Reply:
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
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise APIError(400, "The request body must be a JSON object")
            reply = self.server.app.handle(self.path, body, headers)  # pyright: ignore[reportUnknownArgumentType]
        except json.JSONDecodeError:
            self._send_json(
                400, APIError(400, "We could not parse the JSON body of your request.").body
            )
            return
        except APIError as err:
            self._send_json(err.status, err.body, err.headers)
            return
        if reply.body is not None:
            self._send_json(200, reply.body)
        elif reply.events is not None:
            cut = headers.get("x-costspan-test-cut-after")
            self._send_stream(reply, int(cut) if cut else None)

    def _send_json(
        self, status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("x-request-id", R.new_id("req_"))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_stream(self, reply: Reply, cut_after: int | None) -> None:
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
