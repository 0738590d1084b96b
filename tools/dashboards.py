"""Generates costspan's Grafana dashboard from the panel list below.

The dashboard JSON in ``collector-config/grafana/dashboards/`` is this script's output, committed
so that Grafana provisioning (and users without Python) can load it as is. tests/test_dashboards.py
checks that the committed file equals this output, validates it against the JSON Schema generated
from Grafana's own types, and runs every query against a real Prometheus that scraped the demo.

    python tools/dashboards.py          # rewrite the committed dashboard
    python tools/dashboards.py --check  # exit 1 if the committed file is out of date

Metric and label names are those the OpenTelemetry Prometheus exporters give costspan's metrics
(docs/spans.md): dots become underscores, the unit joins the name (``costspan_cost_USD_total``),
and baggage keys named in COSTSPAN_METRIC_TAGS become labels (``user.id`` -> ``user_id``).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "collector-config" / "grafana" / "dashboards" / "costspan.json"

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Where cost comes from: costspan's own counter, or the one the collector derives from spans for
# services that only send traces (collector-config/otelcol.yaml). Never both for one service.
COST = "${cost_metric}"
COST_METRICS = ("costspan_cost_USD_total", "costspan_span_cost_USD_total")

DURATION = "gen_ai_client_operation_duration_seconds"
DECISIONS = "costspan_budget_decisions_total"
THRESHOLDS = "costspan_budget_thresholds_total"
UNPRICED = "costspan_calls_unpriced_total"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False
    """Instant queries answer "how much in the selected range" (stats, top spenders)."""


@dataclass(frozen=True)
class Panel:
    kind: str  # "stat", "timeseries" or "bargauge"
    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    width: int = 12
    height: int = 8
    extra_field_config: dict[str, Any] = field(default_factory=dict[str, Any])


def _spend_by(label: str, legend: str) -> Panel:
    return Panel(
        "timeseries",
        f"Spend by {legend} (USD per hour)",
        f"Cost per hour, by {legend}: the rate of the cost counter, times 3600.",
        (Query(f"sum by ({label}) (rate({COST}[$__rate_interval])) * 3600", f"{{{{{label}}}}}"),),
        unit="currencyUSD",
        width=8,
    )


def _top(label: str, legend: str) -> Panel:
    return Panel(
        "bargauge",
        f"Top spenders by {legend}",
        f"The ten {legend} values that spent most in the selected time range.",
        (
            Query(
                f"topk(10, sum by ({label}) (increase({COST}[$__range])))",
                f"{{{{{label}}}}}",
                instant=True,
            ),
        ),
        unit="currencyUSD",
        width=8,
    )


# Rows of the dashboard: (row title, panels). Every query here must return data after a demo
# run (tests/test_dashboards.py), so no panel shows something the demo cannot produce.
ROWS: tuple[tuple[str, tuple[Panel, ...]], ...] = (
    (
        "Spend",
        (
            Panel(
                "stat",
                "Spend",
                "Total cost of GenAI calls in the selected time range.",
                (Query(f"sum(increase({COST}[$__range]))", instant=True),),
                unit="currencyUSD",
                width=6,
                height=5,
            ),
            Panel(
                "stat",
                "GenAI calls",
                "Calls that reached a provider or were refused by a budget.",
                (Query(f"sum(increase({DURATION}_count[$__range]))", instant=True),),
                width=6,
                height=5,
            ),
            Panel(
                "stat",
                "Refused by a budget",
                "Calls refused before they were sent: nothing was billed for them.",
                (
                    Query(
                        f'sum(increase({DECISIONS}{{costspan_budget_decision="refuse"}}[$__range]))',
                        instant=True,
                    ),
                ),
                width=6,
                height=5,
            ),
            Panel(
                "stat",
                "Unpriced calls",
                "Calls to models with no known price: their cost is unknown, not zero. "
                "Add a price with COSTSPAN_PRICES.",
                (Query(f"sum(increase({UNPRICED}[$__range]))", instant=True),),
                width=6,
                height=5,
                extra_field_config={
                    "thresholds": {
                        "mode": "absolute",
                        "steps": [
                            {"color": "green", "value": None},
                            {"color": "orange", "value": 1},
                        ],
                    }
                },
            ),
            _spend_by("gen_ai_request_model", "model"),
            _spend_by("feature", "feature"),
            _spend_by("user_id", "user"),
            _top("user_id", "user"),
            _top("feature", "feature"),
            _top("gen_ai_request_model", "model"),
        ),
    ),
    (
        "Budgets",
        (
            Panel(
                "timeseries",
                "Budget decisions",
                "Calls a budget or configured limit changed or refused, by decision: refuse, "
                "downgrade, clamp, truncate, warn. Plain admissions are not counted.",
                (
                    Query(
                        f"sum by (costspan_budget_decision) "
                        f"(increase({DECISIONS}[$__rate_interval]))",
                        "{{costspan_budget_decision}}",
                    ),
                ),
            ),
            Panel(
                "timeseries",
                "Soft-threshold warnings",
                "Budgets passing a warn_at fraction of their cap, by threshold.",
                (
                    Query(
                        f"sum by (costspan_budget_threshold) "
                        f"(increase({THRESHOLDS}[$__rate_interval]))",
                        "passed {{costspan_budget_threshold}} of a cap",
                    ),
                ),
            ),
        ),
    ),
    (
        "Tokens",
        (
            Panel(
                "timeseries",
                "Tokens per second by type",
                "Input and output tokens, and the cached-input and reasoning tokens inside them.",
                (
                    Query(
                        "sum by (gen_ai_token_type) "
                        "(rate(gen_ai_client_token_usage_sum[$__rate_interval]))",
                        "{{gen_ai_token_type}}",
                    ),
                    Query(
                        "sum by (costspan_token_type) "
                        "(rate(costspan_tokens_total[$__rate_interval]))",
                        "{{costspan_token_type}}",
                    ),
                ),
            ),
            Panel(
                "timeseries",
                "Unpriced calls by model",
                "Models costspan found no price for. Their spend is missing from every panel "
                "above until a price is configured.",
                (
                    Query(
                        f"sum by (gen_ai_request_model) (increase({UNPRICED}[$__rate_interval]))",
                        "{{gen_ai_request_model}}",
                    ),
                ),
            ),
        ),
    ),
    (
        "Latency and errors",
        (
            Panel(
                "timeseries",
                "Call duration p50 / p95 by model",
                "From gen_ai.client.operation.duration; a refused call takes no network time.",
                tuple(
                    Query(
                        f"histogram_quantile({q}, sum by (le, gen_ai_request_model) "
                        f"(rate({DURATION}_bucket[$__rate_interval])))",
                        f"p{int(q * 100)} {{{{gen_ai_request_model}}}}",
                    )
                    for q in (0.5, 0.95)
                ),
                unit="s",
            ),
            Panel(
                "timeseries",
                "Failed calls by error type",
                "Calls that ended in an error, including BudgetExceeded refusals.",
                (
                    Query(
                        f'sum by (error_type) (increase({DURATION}_count{{error_type!=""}}'
                        "[$__rate_interval]))",
                        "{{error_type}}",
                    ),
                ),
            ),
        ),
    ),
)


def _options(kind: str) -> dict[str, Any]:
    legend = {"displayMode": "list", "placement": "bottom", "showLegend": True, "calcs": []}
    reduce = {"calcs": ["lastNotNull"], "fields": "", "values": False}
    if kind == "timeseries":
        return {"legend": legend, "tooltip": {"mode": "multi", "sort": "desc"}}
    if kind == "stat":
        return {
            "colorMode": "value",
            "graphMode": "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "percentChangeColorMode": "standard",
            "reduceOptions": reduce,
            "showPercentChange": False,
            "textMode": "auto",
            "wideLayout": True,
        }
    if kind == "bargauge":
        return {
            "displayMode": "gradient",
            "legend": {**legend, "showLegend": False},
            "maxVizHeight": 300,
            "minVizHeight": 16,
            "minVizWidth": 8,
            "namePlacement": "auto",
            "orientation": "horizontal",
            "reduceOptions": reduce,
            "showUnfilled": True,
            "sizing": "auto",
            "valueMode": "color",
        }
    raise ValueError(f"no options for panel type {kind!r}")


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit, **panel.extra_field_config}
    if panel.kind == "timeseries":
        defaults["custom"] = {"drawStyle": "line", "fillOpacity": 10, "lineWidth": 1}
    targets = [
        {
            "datasource": DATASOURCE,
            "expr": query.expr,
            "legendFormat": query.legend or "__auto",
            "instant": query.instant,
            "range": not query.instant,
            "refId": chr(ord("A") + i),
        }
        for i, query in enumerate(panel.queries)
    ]
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": _options(panel.kind),
        "targets": targets,
    }


def dashboard() -> dict[str, Any]:
    """The dashboard, as Grafana's JSON model."""
    panels: list[dict[str, Any]] = []
    panel_id, y = 1, 0
    for title, row in ROWS:
        panels.append(
            {
                "id": panel_id,
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        panel_id, y, x, line_height = panel_id + 1, y + 1, 0, 0
        for panel in row:
            if x + panel.width > 24:
                x, y, line_height = 0, y + line_height, 0
            panels.append(_panel(panel, panel_id, x, y))
            panel_id, x, line_height = panel_id + 1, x + panel.width, max(line_height, panel.height)
        y += line_height
    return {
        "uid": "costspan-llm-spend",
        "title": "costspan: LLM spend",
        "description": "Cost, budgets, tokens and latency of GenAI calls instrumented by costspan.",
        "tags": ["costspan", "genai", "cost"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 41,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "browser",
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "links": [],
        "annotations": {"list": []},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {"text": "Prometheus", "value": "prometheus"},
                    "hide": 0,
                    "refresh": 1,
                    "options": [],
                    "skipUrlSync": False,
                },
                {
                    "name": "cost_metric",
                    "label": "Cost from",
                    "description": "costspan_cost_USD_total: costspan's own metric. "
                    "costspan_span_cost_USD_total: derived from spans by the collector.",
                    "type": "custom",
                    "query": ",".join(COST_METRICS),
                    "current": {"text": COST_METRICS[0], "value": COST_METRICS[0]},
                    "options": [
                        {"text": m, "value": m, "selected": i == 0}
                        for i, m in enumerate(COST_METRICS)
                    ],
                    "hide": 0,
                    "skipUrlSync": False,
                },
            ]
        },
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if argv[1:] == ["--check"]:
        if not DASHBOARD.exists() or DASHBOARD.read_text() != text:
            print(f"{DASHBOARD} is out of date: run python tools/dashboards.py", file=sys.stderr)
            return 1
        return 0
    if argv[1:]:
        print("usage: python tools/dashboards.py [--check]", file=sys.stderr)
        return 2
    DASHBOARD.parent.mkdir(parents=True, exist_ok=True)
    DASHBOARD.write_text(text)
    print(f"wrote {DASHBOARD.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
