"""Alert rules and Grafana dashboards only name metrics the runtime really exports."""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
from prometheus_client import REGISTRY

from .helpers import ALL_SERVICES, DASHBOARDS, GRPC_SERVICES, REPO, Release, balanced, promql_metric_names

# Series Prometheus itself adds to every target; not exported by any process.
PROMETHEUS_SYNTHETIC = {"up"}


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("omni_dashboards_generate", DASHBOARDS / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def exported() -> set[str]:
    """Every sample name the runtime and the services' metrics modules expose.

    omni_runtime.metrics.metric_names() expands families the way the exposition format does;
    the bare family names of counters and histograms are dropped, since no sample carries them
    (a query for `omni_cart_checkouts` instead of `omni_cart_checkouts_total` finds nothing).
    """
    from omni_runtime import metrics

    for path in sorted((REPO / "services").glob("*/metrics.py")):
        importlib.import_module(f"services.{path.parent.name}.metrics")
    names = metrics.metric_names()
    bare = {f.name for f in REGISTRY.collect() if f.type in {"counter", "histogram", "summary"}}
    return names - bare


@pytest.fixture(scope="module")
def rule_queries(production_release: Release) -> dict[str, str]:
    rules = production_release.get("PrometheusRule", "omni").doc
    return {
        f"{group['name']}/{rule['alert']}": rule["expr"]
        for group in rules["spec"]["groups"]
        for rule in group["rules"]
    }


@pytest.fixture(scope="module")
def dashboard_queries() -> dict[str, str]:
    out = {}
    for path in sorted(DASHBOARDS.glob("omni-*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                out[f"{path.name}: {panel['title']} {target['refId']}"] = target["expr"]
        for variable in board["templating"]["list"]:
            if variable["type"] == "query":
                out[f"{path.name}: ${variable['name']}"] = variable["definition"]
    return out


def test_the_extractor_finds_metric_names() -> None:
    assert promql_metric_names(
        "histogram_quantile(0.99, sum by (grpc_service, le) (rate(grpc_server_handling_seconds_bucket"
        '{namespace=~"$namespace", grpc_type="unary"}[$__rate_interval]))) > 0.5 and on (x) up == 0'
    ) == {"grpc_server_handling_seconds_bucket", "up"}
    assert promql_metric_names("label_values(omni_build_info, namespace)") == {"omni_build_info"}
    assert promql_metric_names("sum(a_total) / (sum(b_total) + 1e-9) > bool 3") == {"a_total", "b_total"}


def test_every_alert_names_exported_metrics(rule_queries: dict[str, str], exported: set[str]) -> None:
    unknown = {
        where: sorted(promql_metric_names(expr) - exported - PROMETHEUS_SYNTHETIC)
        for where, expr in rule_queries.items()
    }
    unknown = {k: v for k, v in unknown.items() if v}
    assert not unknown, unknown
    assert all(balanced(expr) for expr in rule_queries.values())


def test_every_dashboard_query_names_exported_metrics(
    dashboard_queries: dict[str, str], exported: set[str]
) -> None:
    assert len(dashboard_queries) > 100
    unknown = {
        where: sorted(promql_metric_names(expr) - exported) for where, expr in dashboard_queries.items()
    }
    unknown = {k: v for k, v in unknown.items() if v}
    assert not unknown, unknown
    unbalanced = [where for where, expr in dashboard_queries.items() if not balanced(expr)]
    assert not unbalanced


def test_a_misspelt_metric_would_be_caught(exported: set[str]) -> None:
    assert promql_metric_names("rate(grpc_server_handled[5m])") - exported == {"grpc_server_handled"}
    assert promql_metric_names("omni_cart_checkouts") - exported == {"omni_cart_checkouts"}


def test_alerts_cover_every_service(rule_queries: dict[str, str]) -> None:
    for name in ALL_SERVICES:
        for alert in ("OmniErrorRatioHigh", "OmniLatencyP99High", "OmniTargetDown"):
            assert f"omni-{name}/{alert}" in rule_queries, (name, alert)
    for name in GRPC_SERVICES:
        assert "grpc_server_handled_total" in rule_queries[f"omni-{name}/OmniErrorRatioHigh"]
        assert "grpc_server_handling_seconds_bucket" in rule_queries[f"omni-{name}/OmniLatencyP99High"]
        assert f'service="{name}"' in rule_queries[f"omni-{name}/OmniOutboxBacklog"]
        assert "omni_consumer_pending_messages" in rule_queries[f"omni-{name}/OmniConsumerLag"]
    assert "omni_gateway_http_requests_total" in rule_queries["omni-gateway/OmniErrorRatioHigh"]
    assert (
        "omni_inventory_reservation_failures_total"
        in rule_queries["omni-inventory/OmniInventoryReservationFailuresHigh"]
    )


def test_dashboards_match_their_generator() -> None:
    generator = _load_generator()
    boards = generator.build_all()
    assert set(boards) == {"omni-overview.json", *(f"omni-{name}.json" for name in ALL_SERVICES)}
    stale = [
        name for name, board in boards.items() if (DASHBOARDS / name).read_text() != generator.render(board)
    ]
    assert not stale, f"run `python deploy/dashboards/generate.py`: {stale}"
    assert sorted(p.name for p in DASHBOARDS.glob("omni-*.json")) == sorted(boards)


def test_dashboards_ship_in_a_configmap_for_the_grafana_sidecar(default_release: Release) -> None:
    cm = default_release.get("ConfigMap", "omni-dashboards").doc
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert set(cm["data"]) == {p.name for p in DASHBOARDS.glob("omni-*.json")}
    for name, text in cm["data"].items():
        assert json.loads(text) == json.loads((DASHBOARDS / name).read_text())
    assert sum(len(text) for text in cm["data"].values()) < 900_000  # ConfigMaps stop at 1 MiB


def test_service_dashboards_show_their_domain_metrics() -> None:
    for name, metric in {
        "inventory": "omni_inventory_reservation_failures_total",
        "cart": "omni_cart_checkouts_total",
        "identity": "omni_identity_logins_total",
        "gateway": "omni_gateway_http_request_seconds_bucket",
    }.items():
        assert metric in (DASHBOARDS / f"omni-{name}.json").read_text(), name
    overview = (DASHBOARDS / "omni-overview.json").read_text()
    for metric in (
        "grpc_server_handled_total",
        "grpc_server_handling_seconds_bucket",
        "omni_gateway_http_requests_total",
    ):
        assert metric in overview


def test_servicemonitor_scrapes_every_service(production_release: Release) -> None:
    sm = production_release.get("ServiceMonitor", "omni").doc
    selector = sm["spec"]["selector"]["matchLabels"]
    for name in ALL_SERVICES:
        svc = production_release.get("Service", f"omni-{name}").doc
        assert all(svc["metadata"]["labels"].get(k) == v for k, v in selector.items()), name
    assert sm["spec"]["endpoints"][0]["honorLabels"] is True


def test_the_generator_check_mode_passes() -> None:
    assert _load_generator().main(["--check"]) == 0
    assert Path(DASHBOARDS / "generate.py").exists()
