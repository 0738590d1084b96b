"""A real OTLP path: an app under opentelemetry-instrument, and `costspan demo --otlp`, export to
rotel (a real collector from PyPI), which forwards to a real OTLP receiver; cost and attribution
arrive intact."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import rotel

from tests.otlp import assert_priced_and_attributed, otlp_receiver, run_demo_over_otlp
from tests.processes import free_port, stop, wait_until
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

    def listening() -> bool:
        assert process.poll() is None, "rotel exited"
        try:
            socket.create_connection(("127.0.0.1", http), timeout=0.2).close()
        except OSError:
            return False
        return True

    try:
        wait_until(listening, "rotel to listen", timeout=20)
        yield f"http://127.0.0.1:{http}"
    finally:
        stop(process)  # SIGTERM: rotel flushes what it holds, then exits


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
    with otlp_receiver() as (receiver, collected), rotel_collector(receiver, tmp_path) as rotel_url:
        demo = run_demo_over_otlp(rotel_url, tmp_path)
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
