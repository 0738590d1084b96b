"""examples/jaeger_trace: the trace docs/jaeger.md walks through, received over OTLP by a real
receiver (what Jaeger would store): one trace across two services, cost and budget attributes on
the right spans, and the "most expensive call" link pointing at the costliest span."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from tests.otlp import otlp_env, otlp_receiver

ROOT = Path(__file__).resolve().parent.parent


def test_checkout_trace_carries_cost_and_budget_on_the_right_spans(tmp_path: Path) -> None:
    with otlp_receiver() as (endpoint, collected):
        result = subprocess.run(
            [sys.executable, str(ROOT / "examples/jaeger_trace/main.py")],
            env=otlp_env(endpoint, COSTSPAN_RECORDS=str(tmp_path / "spend.db")),
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        spans = collected.wait_for(11, timeout=30)
    summary = json.loads(result.stdout.split("summary:", 1)[1])
    assert summary["statuses"] == [200, 200, 402]  # the third question is refused unsent
    assert len(spans) == 11
    assert {s.trace_id for s in spans} == {summary["trace_id"]}  # one trace, two services
    by_service: dict[str, list[str]] = {}
    for span in spans:
        by_service.setdefault(span.resource["service.name"], []).append(span.name)
    assert sorted(by_service["storefront"]) == sorted(
        ["POST /checkout", "chat gpt-4o-mini", "POST /answer", "POST /answer", "POST /answer"]
    )
    assert sorted(by_service["assistant"]) == sorted(["POST /answer"] * 3 + ["chat gpt-4o"] * 3)
    ids = {s.span_id: s for s in spans}
    for server in (s for s in spans if s.resource["service.name"] == "assistant"):
        parent = ids[server.parent_span_id]  # every assistant span hangs under a storefront one
        if server.name == "POST /answer":
            assert parent.resource["service.name"] == "storefront"
    llm = [s for s in spans if s.name.startswith("chat ")]
    for span in llm:  # the request's tags and budget reach every LLM span, in both services
        assert span.attributes["feature"] == "checkout"
        assert span.attributes["user.id"] == "u-42"
        assert len(span.attributes["costspan.budget.ids"]) == 1
    (refused,) = [s for s in llm if s.attributes["costspan.budget.decision"] == "refuse"]
    assert refused.resource["service.name"] == "assistant"
    assert "gen_ai.usage.cost.amount" not in refused.attributes
    assert refused.attributes["error.type"] == "BudgetExceeded"
    priced = [s for s in llm if "gen_ai.usage.cost.amount" in s.attributes]
    assert len(priced) == 3
    priciest = max(priced, key=lambda s: s.attributes["gen_ai.usage.cost.amount"])
    assert summary["priciest_span_id"] == priciest.span_id
    assert (
        float(Decimal(summary["priciest_usd"])) == priciest.attributes["gen_ai.usage.cost.amount"]
    )
    assert f"uiFind={priciest.span_id}" in result.stdout
    assert summary["calls"] == 3  # spend records from both services: the refused call left none
