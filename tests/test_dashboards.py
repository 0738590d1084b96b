"""costspan's Grafana dashboard: generated, valid against Grafana's own schema, and every panel's
query answered with data by a real Prometheus that scraped a real run of ``costspan demo``.

No Grafana binary can run here, so the dashboard JSON is checked against the JSON Schema that
tools/grafana-schema/generate.sh derives from @grafana/schema (the dashboard, and each panel
type's options and field config). The queries are checked for real: Debian's Prometheus scrapes
the demo's Prometheus endpoint while it sends four rounds of traffic, then every panel query runs
against it the way Grafana would send it (variables substituted).
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator
from tools import dashboards

from tests.processes import free_port, stop, wait_until

SCHEMAS = Path(__file__).resolve().parent.parent / "tools" / "grafana-schema" / "build"
COSTSPAN = Path(sys.executable).with_name("costspan")

# How Grafana fills its variables for these queries: the dashboard's default cost metric,
# $__rate_interval = max(step + scrape interval, 4 x scrape interval) for a 1 s scrape and step.
SCRAPE_SECONDS = 1
# Rounds of demo traffic, 3 s apart: several scrapes land between rounds, so rates see increases.
ROUNDS = 4
VARIABLES = {
    "${cost_metric}": dashboards.COST_METRICS[0],
    "$__rate_interval": f"{4 * SCRAPE_SECONDS}s",
    "$__range": "5m",
}


def _schema(name: str) -> dict[str, Any]:
    path = SCHEMAS / f"{name}.schema.json"
    if not path.exists():
        pytest.fail(f"{path} is missing: scripts/dev.sh test generates it (npm + @grafana/schema)")
    return json.loads(path.read_text())


def _panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in board["panels"] if p["type"] != "row"]


def schema_errors(board: dict[str, Any]) -> list[str]:
    """Every way ``board`` breaks Grafana's schema, as ``path: message`` lines."""
    errors: list[str] = []
    for e in Draft7Validator(_schema("dashboard")).iter_errors(board):
        # A panel is "a Panel or a RowPanel": say why it is neither, not just that it is not.
        for cause in [e, *e.context] if e.context else [e]:
            errors.append(f"/{'/'.join(map(str, cause.absolute_path))}: {cause.message}")
    for panel in _panels(board):
        kind = panel["type"]
        checks = [("options", panel.get("options", {}), _schema(f"{kind}.options"))]
        if (SCHEMAS / f"{kind}.fieldconfig.schema.json").exists():
            custom = panel["fieldConfig"]["defaults"].get("custom", {})
            checks.append(("custom", custom, _schema(f"{kind}.fieldconfig")))
        for part, value, schema in checks:
            errors.extend(
                f"{panel['title']} {part}/{'/'.join(map(str, e.absolute_path))}: {e.message}"
                for e in Draft7Validator(schema).iter_errors(value)
            )
    return errors


def test_committed_dashboard_is_the_generators_output() -> None:
    """collector-config/grafana/dashboards/costspan.json is exactly what tools/dashboards.py
    writes, so editing one without the other fails here."""
    assert dashboards.DASHBOARD.read_text() == dashboards.render()


def test_dashboard_is_valid_against_grafanas_own_schema() -> None:
    """The dashboard, each panel's options and its field config pass the JSON Schemas generated
    from @grafana/schema."""
    board = json.loads(dashboards.DASHBOARD.read_text())
    assert schema_errors(board) == []


def test_the_schema_check_catches_typical_mistakes() -> None:
    """A misspelt panel key, a wrong type and a missing required option are each reported, so the
    validation above is not vacuous."""
    board = json.loads(dashboards.DASHBOARD.read_text())
    broken = copy.deepcopy(board)
    first, second, third = _panels(broken)[:3]
    first["titel"] = first.pop("title")
    second["gridPos"]["h"] = "eight"
    del third["options"]["reduceOptions"]
    errors = "\n".join(schema_errors(broken))
    assert "'titel' was unexpected" in errors
    assert "'eight' is not of type 'number'" in errors
    assert "'reduceOptions' is a required property" in errors


def test_dashboard_shows_what_the_issue_asks_for() -> None:
    """Spend by model, feature and user; top spenders; budget decisions and soft thresholds;
    tokens incl. cached and reasoning; unpriced calls; latency."""
    exprs = " ".join(q.expr for _, row in dashboards.ROWS for p in row for q in p.queries)
    for needle in (
        "sum by (gen_ai_request_model) (rate(${cost_metric}",
        "sum by (feature) (rate(${cost_metric}",
        "sum by (user_id) (rate(${cost_metric}",
        "topk(10, sum by (user_id)",
        "costspan_budget_decisions_total",
        "costspan_budget_thresholds_total",
        "costspan_tokens_total",
        "gen_ai_client_token_usage_sum",
        "costspan_calls_unpriced_total",
        "histogram_quantile(0.95",
    ):
        assert needle in exprs, needle
    ids = [p["id"] for p in json.loads(dashboards.DASHBOARD.read_text())["panels"]]
    assert len(ids) == len(set(ids))


# -- a real Prometheus scraping a real demo run -------------------------------------------------
@dataclass(frozen=True)
class Prometheus:
    url: str
    first_round: float
    demo_output: str

    def get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def run(self, expr: str, *, instant: bool) -> list[dict[str, Any]]:
        """The query as Grafana sends it: instant at now, or a range over the demo's run."""
        for name, value in VARIABLES.items():
            expr = expr.replace(name, value)
        assert "$" not in expr, f"unsubstituted variable in {expr}"
        now = time.time()
        if instant:
            return self.get("/api/v1/query", query=expr, time=f"{now:.3f}")["result"]
        return self.get(
            "/api/v1/query_range",
            query=expr,
            start=f"{self.first_round - 5:.3f}",
            end=f"{now:.3f}",
            step=f"{SCRAPE_SECONDS}s",
        )["result"]


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """Prometheus scraping ``costspan demo --metrics-port`` every second through ROUNDS rounds
    of the demo's traffic; both on 127.0.0.1, both stopped afterwards."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("no prometheus binary: scripts/dev.sh test installs Debian's package")
    tmp = tmp_path_factory.mktemp("prometheus")
    app_port, prom_port = free_port(), free_port()
    (tmp / "prometheus.yml").write_text(
        f"global: {{scrape_interval: {SCRAPE_SECONDS}s, evaluation_interval: 1s}}\n"
        "scrape_configs:\n"
        f"  - job_name: costspan-demo\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{app_port}']}}]\n"
    )
    with (tmp / "prometheus.log").open("wb") as log:  # the child keeps its own copy
        server = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    demo_out = tmp / "demo.out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("COSTSPAN_")}
    env |= {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "openai", "XDG_STATE_HOME": str(tmp)}
    demo = None
    try:
        url = f"http://127.0.0.1:{prom_port}"

        def ready() -> bool:
            assert server.poll() is None, (tmp / "prometheus.log").read_text()
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
                    return response.status == 200
            except OSError:
                return False

        wait_until(ready, "prometheus to start")
        first_round = time.time()
        with demo_out.open("wb") as out:
            demo = subprocess.Popen(
                [
                    *(str(COSTSPAN), "demo", "--metrics-port", str(app_port)),
                    *("--rounds", str(ROUNDS), "--interval", "3"),
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_until(
            lambda: "serving metrics" in demo_out.read_text() or demo.poll() is not None,
            "the demo's rounds",
        )
        assert demo.poll() is None, demo_out.read_text()
        done = time.time()
        client = Prometheus(url, first_round, demo_out.read_text())

        def scraped_after_last_round() -> bool:
            result = client.run("max(timestamp(costspan_budget_decisions_total))", instant=True)
            return bool(result) and float(result[0]["value"][1]) > done

        wait_until(scraped_after_last_round, "a scrape after the demo's last round")
        yield client
    finally:
        if demo is not None:
            stop(demo)
        stop(server)


def _values(series: dict[str, Any]) -> list[float]:
    points = series["values"] if "values" in series else [series["value"]]
    return [float(v) for _, v in points if not math.isnan(float(v))]


PANELS = [(panel, query) for _, row in dashboards.ROWS for panel in row for query in panel.queries]


@pytest.mark.parametrize(
    ("panel", "query"),
    PANELS,
    ids=[f"{p.title}-{q.legend or 'total'}".replace(" ", "_") for p, q in PANELS],
)
def test_every_panel_query_returns_data(
    prometheus: Prometheus, panel: dashboards.Panel, query: dashboards.Query
) -> None:
    """Each query, as Grafana would send it, returns at least one series with a value above
    zero from the scraped demo (a panel that can only show "No data" fails)."""
    result = prometheus.run(query.expr, instant=query.instant)
    assert result, f"{panel.title}: no series for {query.expr}"
    assert any(v > 0 for series in result for v in _values(series)), (panel.title, result)


def _labels(prometheus: Prometheus, expr: str, label: str) -> set[str]:
    return {s["metric"].get(label, "") for s in prometheus.run(expr, instant=True)}


def test_the_data_behind_the_panels_is_the_demos(prometheus: Prometheus) -> None:
    """The series carry what the demo did: refusals, downgrades and clamps; a soft threshold;
    cached and reasoning tokens; the unpriced model; spend per feature and user."""
    window = VARIABLES["$__range"]
    decisions = _labels(
        prometheus,
        f"sum by (costspan_budget_decision) (increase(costspan_budget_decisions_total[{window}]))",
        "costspan_budget_decision",
    )
    assert {"refuse", "downgrade", "clamp"} <= decisions
    assert "0.5" in _labels(
        prometheus, "costspan_budget_thresholds_total", "costspan_budget_threshold"
    )
    assert {"cached_input", "reasoning"} <= _labels(
        prometheus, "costspan_tokens_total", "costspan_token_type"
    )
    assert _labels(prometheus, "costspan_calls_unpriced_total", "gen_ai_request_model") == {
        "acme-support-7b"
    }
    features = _labels(prometheus, "costspan_cost_USD_total", "feature")
    assert features == {"museum-guide", "search", "essays"}
    assert "visitor-1" in _labels(prometheus, "costspan_cost_USD_total", "user_id")


def test_spend_in_prometheus_equals_the_demos_printed_total(prometheus: Prometheus) -> None:
    """The scraped cost counter equals the total the demo printed for all its rounds (floats
    in Prometheus, so to a micro-dollar); the calls counted match too."""
    (series,) = prometheus.run("sum(costspan_cost_USD_total)", instant=True)
    total = re.search(
        r"^\s+total\s+(\d+) call\(s\)\s+\$([0-9.]+)", prometheus.demo_output, re.MULTILINE
    )
    assert total is not None, prometheus.demo_output
    assert float(series["value"][1]) == pytest.approx(float(total.group(2)), abs=1e-6)
    assert int(total.group(1)) == ROUNDS * 10  # ten answered calls a round
