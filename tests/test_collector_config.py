"""collector-config/: the files a user runs with `docker compose up`, checked as far as this
machine allows.

Run for real: `docker-compose config` (Debian's docker-compose validates the file against the
Compose schema without an engine), `promtool check config` on the stack's prometheus.yml, and a
real costspan span and the Python Prometheus exporter for the names the collector config and the
dashboard rely on. Checked only structurally (no Collector, Jaeger or Grafana binary runs here):
the collector pipeline's wiring, and the Grafana provisioning's paths and datasource.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import yaml
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, generate_latest
from tools import dashboards

import costspan
from costspan.testing import OpenAICompatibleServer

CONFIG = Path(__file__).resolve().parent.parent / "collector-config"


def _yaml(name: str) -> Any:
    return yaml.safe_load((CONFIG / name).read_text())


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"no {name}: scripts/dev.sh test installs it (Debian package)")
    return path


def test_compose_file_is_valid_and_a_broken_one_is_not(tmp_path: Path) -> None:
    """`docker-compose config -q` accepts the stack, and rejects it with one unknown key."""
    tool = _tool("docker-compose")
    ok = subprocess.run(
        [tool, "-f", str(CONFIG / "docker-compose.yaml"), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    broken = tmp_path / "docker-compose.yaml"
    text = (CONFIG / "docker-compose.yaml").read_text()
    broken.write_text(text.replace("    restart: unless-stopped", "    restrat: unless-stopped", 1))
    bad = subprocess.run(
        [tool, "-f", str(broken), "config", "-q"], capture_output=True, text=True, check=False
    )
    assert bad.returncode != 0
    assert "restrat" in bad.stderr


def test_prometheus_config_is_valid() -> None:
    """promtool (Debian's Prometheus) accepts the stack's scrape configuration."""
    result = subprocess.run(
        [_tool("promtool"), "check", "config", str(CONFIG / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _components(config: dict[str, Any], kind: str) -> set[str]:
    return set(config.get(kind) or {})


def test_collector_pipelines_are_wired() -> None:
    """Every component a pipeline names is defined and every defined one is used; OTLP comes in
    over gRPC and HTTP; traces go to Jaeger and to the connector, whose metrics reach the
    Prometheus exporter along with the apps' own metrics."""
    config = _yaml("otelcol.yaml")
    pipelines: dict[str, dict[str, list[str]]] = config["service"]["pipelines"]
    connectors = _components(config, "connectors")
    used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}
    for name, pipeline in pipelines.items():
        for kind, seen in used.items():
            defined = _components(config, kind) | (connectors if kind != "processors" else set())
            for component in pipeline.get(kind, []):
                assert component in defined, f"{name}: {component} is not defined"
                seen.add(component)
    for kind, names in used.items():
        assert _components(config, kind) <= names, f"unused {kind}"
    assert connectors == {"signaltometrics"}
    assert "signaltometrics" in pipelines["traces"]["exporters"]
    assert "otlp/jaeger" in pipelines["traces"]["exporters"]
    assert pipelines["metrics/from-spans"]["receivers"] == ["signaltometrics"]
    # Delta sums from the connector become cumulative before Prometheus sees them.
    assert "deltatocumulative" in pipelines["metrics/from-spans"]["processors"]
    assert "prometheus" in pipelines["metrics"]["exporters"]
    assert "prometheus" in pipelines["metrics/from-spans"]["exporters"]
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"].endswith(":4317")
    assert protocols["http"]["endpoint"].endswith(":4318")


def test_collector_compose_and_prometheus_agree_on_hosts_and_ports() -> None:
    """Jaeger's OTLP endpoint is the compose service, Prometheus scrapes the exporter's port on
    the collector's service, and the collector reads the config file compose mounts."""
    config = _yaml("otelcol.yaml")
    compose = _yaml("docker-compose.yaml")["services"]
    host, port = config["exporters"]["otlp/jaeger"]["endpoint"].split(":")
    assert host in compose
    assert port == "4317"
    exporter_port = config["exporters"]["prometheus"]["endpoint"].rsplit(":", 1)[1]
    (job,) = _yaml("prometheus.yml")["scrape_configs"]
    (target,) = job["static_configs"][0]["targets"]
    assert target == f"otel-collector:{exporter_port}"
    collector = compose["otel-collector"]
    (flag,) = collector["command"]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in collector["volumes"]}
    assert mounted[flag.removeprefix("--config=")] == "./otelcol.yaml"
    for published in collector["ports"]:
        assert published.startswith("127.0.0.1:"), published


def _demo_like_spans() -> list[dict[str, Any]]:
    """Attributes of real costspan spans: a priced call with tags, and an unpriced one."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    costspan.instrument(tracer_provider=provider)
    try:
        with OpenAICompatibleServer() as server:
            client = openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0)
            with costspan.tags(feature="search"):
                client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
                )
                with pytest.warns(costspan.UnpricedModelWarning):
                    client.chat.completions.create(
                        model="acme-support-7b", messages=[{"role": "user", "content": "hi"}]
                    )
    finally:
        costspan.uninstrument()
    return [dict(span.attributes or {}) for span in exporter.get_finished_spans()]


def test_the_connector_reads_attributes_costspan_writes() -> None:
    """Every span attribute the collector's connector conditions on, sums or groups by is one a
    real costspan span carries, with the type the OTTL expression expects."""
    priced, unpriced = _demo_like_spans()
    spans = {m["name"]: m for m in _yaml("otelcol.yaml")["connectors"]["signaltometrics"]["spans"]}
    cost = spans["costspan.span.cost"]
    (value_key,) = re.findall(r'attributes\["([^"]+)"\]', cost["sum"]["value"])
    assert isinstance(priced[value_key], float)  # Double(...) of a double
    for condition in cost["conditions"]:
        for key in re.findall(r'attributes\["([^"]+)"\]', condition):
            assert key in priced
    for attribute in cost["attributes"]:
        assert attribute["key"] in priced, attribute
    unpriced_metric = spans["costspan.span.calls.unpriced"]
    (condition,) = unpriced_metric["conditions"]
    (key,) = re.findall(r'attributes\["([^"]+)"\]', condition)
    assert unpriced[key] is True
    assert key not in priced
    for attribute in unpriced_metric["attributes"]:
        assert attribute["key"] in unpriced, attribute


def _matches(condition: str, attributes: dict[str, Any]) -> bool:
    """One connector condition of the two shapes otelcol.yaml uses, on a span's attributes."""
    key_ne_nil = re.fullmatch(r'attributes\["([^"]+)"\] != nil', condition)
    if key_ne_nil:
        return key_ne_nil[1] in attributes
    key_eq_true = re.fullmatch(r'attributes\["([^"]+)"\] == true', condition)
    assert key_eq_true, f"a condition this test cannot read: {condition}"
    return attributes.get(key_eq_true[1]) is True


def test_the_connector_counts_each_call_once_when_spans_nest() -> None:
    """An anthropic call under the official instrumentation has two GenAI spans (the SDK's own
    nests in the instrumentation's): exactly one matches the connector's cost metric and none its
    unpriced metric, so the summed cost is the call's, once."""
    from opentelemetry.instrumentation.genai.anthropic import AnthropicInstrumentor

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(costspan.CostSpanProcessor(SimpleSpanProcessor(exporter)))
    instrumentor = AnthropicInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        with OpenAICompatibleServer() as server:
            claude = anthropic.Anthropic(
                base_url=server.anthropic_base_url,
                api_key="test",
                max_retries=0,
                open_telemetry={"tracer_provider": provider},
            )
            claude.messages.create(
                model="claude-haiku-4-5",
                max_tokens=50,
                messages=[{"role": "user", "content": "hi"}],
            )
    finally:
        instrumentor.uninstrument()
    spans = [dict(span.attributes or {}) for span in exporter.get_finished_spans()]
    assert len(spans) == 2
    metrics = {
        m["name"]: m for m in _yaml("otelcol.yaml")["connectors"]["signaltometrics"]["spans"]
    }
    cost = metrics["costspan.span.cost"]["conditions"]
    unpriced = metrics["costspan.span.calls.unpriced"]["conditions"]
    counted = [a for a in spans if any(_matches(c, a) for c in cost)]
    assert len(counted) == 1
    assert not any(_matches(c, a) for a in spans for c in unpriced)
    (marked,) = [a for a in spans if a is not counted[0]]
    assert "costspan.cost.counted_on" in marked


def test_the_dashboard_knows_the_connectors_metric_name() -> None:
    """The connector's metric (name and unit), as an OpenTelemetry Prometheus exporter names it,
    is the dashboard's alternative cost metric; costspan's own is the default."""
    names: list[str] = []
    derived = _yaml("otelcol.yaml")["connectors"]["signaltometrics"]["spans"][0]
    assert derived["unit"] == "USD"
    for metric in ("costspan.cost", derived["name"]):
        registry = CollectorRegistry()
        reader = PrometheusMetricReader()
        registry.register(reader._collector)  # its own registry, not the global one
        provider = MeterProvider(metric_readers=[reader])
        provider.get_meter("t").create_counter(metric, unit="USD").add(1)
        exposition = generate_latest(registry).decode()
        names.extend(re.findall(r"^(\w+_total)\{", exposition, re.MULTILINE))
        provider.shutdown()
    assert tuple(names) == dashboards.COST_METRICS


def test_grafana_provisioning_points_at_the_dashboard_and_prometheus() -> None:
    """The datasource is the compose Prometheus with the uid the dashboard defaults to; the
    dashboards provider reads the folder compose mounts; Grafana's version is the one whose
    @grafana/schema the dashboard is validated against."""
    (source,) = _yaml("grafana/provisioning/datasources/prometheus.yaml")["datasources"]
    compose = _yaml("docker-compose.yaml")["services"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert "prometheus" in compose
    board = dashboards.dashboard()
    variable = next(v for v in board["templating"]["list"] if v["name"] == "datasource")
    assert variable["current"]["value"] == source["uid"]
    (provider,) = _yaml("grafana/provisioning/dashboards/costspan.yaml")["providers"]
    grafana = compose["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    folder = CONFIG / mounts[provider["options"]["path"]]
    assert folder.resolve() == dashboards.DASHBOARD.parent.resolve()
    home = Path(grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert (folder / home.relative_to(provider["options"]["path"])).is_file()
    assert (CONFIG / mounts["/etc/grafana/provisioning"]).is_dir()
    schema_version = json.loads(
        (Path(__file__).resolve().parent.parent / "tools/grafana-schema/package.json").read_text()
    )["devDependencies"]["@grafana/schema"]
    assert grafana["image"] == f"grafana/grafana:{schema_version}"
