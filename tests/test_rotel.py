"""A real OTLP path: an app under opentelemetry-instrument exports to rotel (a real collector
from PyPI), which forwards to a real OTLP receiver; cost and attribution arrive intact."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import rotel

from tests.otlp import assert_priced_and_attributed, free_port, otlp_receiver
from tests.test_auto_instrument import launch

ROTEL = Path(rotel.__file__).with_name("rotel-agent")


@contextmanager
def rotel_collector(forward_to: str, tmp: Path) -> Iterator[str]:
    """rotel on 127.0.0.1, forwarding traces and metrics over OTLP/HTTP; yields its endpoint."""
    http, grpc = free_port(), free_port()
    args = [
        str(ROTEL), "start",
        "--otlp-http-endpoint", f"127.0.0.1:{http}",
        "--otlp-grpc-endpoint", f"127.0.0.1:{grpc}",
        "--exporter", "otlp",
        "--otlp-exporter-protocol", "http",
        "--otlp-exporter-traces-endpoint", f"{forward_to}/v1/traces",
        "--otlp-exporter-metrics-endpoint", f"{forward_to}/v1/metrics",
        "--otlp-exporter-logs-endpoint", f"{forward_to}/v1/logs",
        "--otlp-receiver-logs-disabled",
        "--pid-file", str(tmp / "rotel.pid"),
    ]  # fmt: skip
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", http), timeout=0.2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("rotel did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{http}"
    finally:
        process.send_signal(signal.SIGTERM)  # rotel flushes what it holds, then exits
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_cost_and_attribution_survive_a_real_collector(tmp_path: Path) -> None:
    """App -> rotel -> receiver: the span keeps its cost and baggage tags, and costspan's cost
    metric gets through too."""
    with otlp_receiver() as (receiver, collected), rotel_collector(receiver, tmp_path) as rotel_url:
        result = launch(rotel_url, app="tests/apps/attributed_app.py")
        assert result.returncode == 0, result.stderr
        (span,) = collected.wait_for(1, timeout=30)
        deadline = time.monotonic() + 30
        while "costspan.cost" not in collected.metric_names and time.monotonic() < deadline:
            time.sleep(0.1)
    assert span.name == "chat gpt-4o-mini"
    assert_priced_and_attributed(span.attributes)
    assert span.attributes["costspan.price.source"] == "genai-prices"
    assert "costspan.cost" in collected.metric_names
