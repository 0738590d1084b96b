"""A real OTLP path: an app under opentelemetry-instrument, and `costspan demo --otlp`, export to
rotel (a real collector from PyPI), which forwards to a real OTLP receiver; cost and attribution
arrive intact."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
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


def test_the_demo_exports_through_a_real_collector(tmp_path: Path) -> None:
    """`costspan demo --otlp` -> rotel -> receiver: every span of the demo arrives with its cost
    and the caller's tags, the refusal with its budget decision, and costspan's metrics too."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COSTSPAN_", "OTEL_"))}
    with otlp_receiver() as (receiver, collected), rotel_collector(receiver, tmp_path) as rotel_url:
        env |= {
            "OTEL_EXPORTER_OTLP_ENDPOINT": rotel_url,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "openai",
            "XDG_STATE_HOME": str(tmp_path),
        }
        demo = subprocess.run(
            [str(Path(sys.executable).with_name("costspan")), "demo", "--otlp"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert demo.returncode == 0, demo.stderr
        printed = [
            line for line in demo.stdout.splitlines() if line.startswith(("chat ", "embeddings "))
        ]
        spans = collected.wait_for(len(printed), timeout=30)
        deadline = time.monotonic() + 30
        while "costspan.budget.decisions" not in collected.metric_names:
            assert time.monotonic() < deadline, collected.metric_names
            time.sleep(0.1)
    assert sorted(s.name for s in spans) == sorted(line.split("  ")[0].strip() for line in printed)
    assert {s.resource["service.name"] for s in spans} == {"costspan-demo"}
    priced = [s for s in spans if "gen_ai.usage.cost.amount" in s.attributes]
    assert len(priced) == 10 - 1  # ten answered calls, one of them to an unpriced model
    for span in priced:
        assert span.attributes["feature"], span
        assert span.attributes["user.id"], span
        assert span.attributes["gen_ai.usage.cost.currency"] == "USD"
    # The cost column of each printed line, e.g. "$0.00001455" (not "$0.002" in a budget's name).
    printed_usd = sorted(float(m) for m in re.findall(r"ms\s+\$([0-9.]+)", "\n".join(printed)))
    received_usd = sorted(round(s.attributes["gen_ai.usage.cost.amount"], 8) for s in priced)
    assert received_usd == pytest.approx(printed_usd, abs=1e-8)
    (refused,) = [s for s in spans if s.attributes.get("costspan.budget.decision") == "refuse"]
    assert refused.attributes["costspan.budget.refused_by"] == "block $0.002"
    (unpriced,) = [s for s in spans if s.attributes.get("costspan.unpriced")]
    assert unpriced.attributes["gen_ai.request.model"] == "acme-support-7b"
    assert {"costspan.cost", "costspan.calls.unpriced"} <= collected.metric_names
