"""A real OTLP/HTTP receiver for tests: oteltest's sink, kept on 127.0.0.1.

oteltest's ``HttpSink`` binds all interfaces; tests here must bind loopback only, so the sink's
``HTTPServer`` is replaced (for the duration of the receiver) by one that binds 127.0.0.1.
Received spans are flattened to dicts with plain Python attribute values; gzip-compressed
requests (what collectors forward) are accepted.
"""

from __future__ import annotations

import gzip
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import HTTPServer
from pathlib import Path
from typing import Any

import oteltest.sink
from oteltest.sink import HttpSink
from oteltest.sink.handler import RequestHandler

from tests.processes import free_port


def assert_priced_and_attributed(a: dict[str, Any]) -> None:
    """A received chat span carries genai-prices' own price of its usage and the attributed
    app's baggage tags (tests/apps/attributed_app.py)."""
    from genai_prices import Usage, calc_price

    assert a["user.id"] == "u-123"
    assert a["feature"] == "search"
    usage = Usage(
        input_tokens=a["gen_ai.usage.input_tokens"], output_tokens=a["gen_ai.usage.output_tokens"]
    )
    expected = calc_price(usage, a["gen_ai.response.model"], provider_id="openai")
    assert abs(a["gen_ai.usage.cost.amount"] - float(expected.total_price)) <= 1e-12
    assert a["gen_ai.usage.cost.currency"] == "USD"
    assert a["gen_ai.usage.cost.source"] == "local"


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return tuple(_value(v) for v in any_value.array_value.values)
    return getattr(any_value, kind) if kind else None


@dataclass
class ReceivedSpan:
    name: str
    kind: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    status_code: int
    trace_id: str = ""
    span_id: str = ""
    parent_span_id: str = ""
    scope_name: str = ""


@dataclass
class Collected(RequestHandler):
    spans: list[ReceivedSpan] = field(default_factory=list)
    metric_names: set[str] = field(default_factory=set[str])
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle_logs(self, request: Any, headers: Any) -> None:
        """Logs are not asserted on."""

    def handle_metrics(self, request: Any, headers: Any) -> None:
        with self.lock:
            for rm in request.resource_metrics:
                for sm in rm.scope_metrics:
                    self.metric_names.update(m.name for m in sm.metrics)

    def handle_trace(self, request: Any, headers: Any) -> None:
        with self.lock:
            for rs in request.resource_spans:
                resource = {a.key: _value(a.value) for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        self.spans.append(
                            ReceivedSpan(
                                name=span.name,
                                kind=span.kind,
                                attributes={a.key: _value(a.value) for a in span.attributes},
                                resource=resource,
                                status_code=span.status.code,
                                trace_id=span.trace_id.hex(),
                                span_id=span.span_id.hex(),
                                parent_span_id=span.parent_span_id.hex(),
                                scope_name=ss.scope.name,
                            )
                        )

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedSpan]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.spans) >= count:
                    return list(self.spans)
            time.sleep(0.05)
        with self.lock:
            return list(self.spans)


def _accepting_gzip(handle: Callable[[bytes, dict[str, str]], None]) -> Any:
    """Collectors gzip what they forward (rotel does by default); OTLP receivers accept it."""

    def receive(post_data: bytes, headers: dict[str, str]) -> None:
        encoding = {k.lower(): v for k, v in headers.items()}.get("content-encoding", "")
        handle(gzip.decompress(post_data) if encoding == "gzip" else post_data, headers)

    return receive


class _LoopbackHTTPServer(HTTPServer):
    def __init__(self, server_address: tuple[str, int], handler: Any) -> None:
        super().__init__(("127.0.0.1", server_address[1]), handler)


@contextmanager
def otlp_receiver() -> Iterator[tuple[str, Collected]]:
    """Yield (endpoint, collected) for an OTLP/HTTP receiver on a free loopback port."""
    collected = Collected()
    port = free_port()
    original = oteltest.sink.HTTPServer
    oteltest.sink.HTTPServer = _LoopbackHTTPServer
    sink = HttpSink(collected, logging.getLogger("otlp-receiver"), port=port)
    for path, handle in list(sink.handlers.items()):
        sink.handlers[path] = _accepting_gzip(handle)
    sink.start()
    try:
        deadline = time.monotonic() + 5
        while sink.httpd is None and time.monotonic() < deadline:
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}", collected
    finally:
        sink.stop()
        oteltest.sink.HTTPServer = original


def otlp_env(endpoint: str, **extra: str) -> dict[str, str]:
    """This environment without COSTSPAN_* and OTEL_* settings, exporting to ``endpoint`` over
    OTLP/HTTP, with the official instrumentation (installed for comparisons) kept out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COSTSPAN_", "OTEL_"))}
    env.pop("OPENAI_BASE_URL", None)
    return env | {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "openai",
        **extra,
    }


def run_demo_over_otlp(endpoint: str, state_dir: Path) -> subprocess.CompletedProcess[str]:
    """`costspan demo --otlp` exporting to ``endpoint``; its store kept under ``state_dir``."""
    return subprocess.run(
        [str(Path(sys.executable).with_name("costspan")), "demo", "--otlp"],
        env=otlp_env(endpoint, XDG_STATE_HOME=str(state_dir)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
