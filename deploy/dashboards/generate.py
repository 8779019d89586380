"""Generate Omni's Grafana dashboards: deploy/dashboards/omni-*.json.

    python deploy/dashboards/generate.py          # rewrite the JSON files
    python deploy/dashboards/generate.py --check  # exit 1 if a file is out of date

One overview (every service's rate, errors and duration, events, versions) and one dashboard
per block under `services:` in deploy/helm/omni/values.yaml: its RPCs (or HTTP requests for
the gateway), outgoing calls, outbox and consumers, plus the domain panels listed in
DOMAIN_PANELS. The chart ships these files in a ConfigMap for Grafana's dashboard sidecar, and
tests/deploy checks that the files match this generator and that every metric a query names
is one the runtime exports. Edit this file, not the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
VALUES = HERE.parent / "helm" / "omni" / "values.yaml"

NS = 'namespace=~"$namespace"'
RATE = "[$__rate_interval]"
# gRPC codes that mean the server failed, as opposed to the caller asking for something wrong.
SERVER_ERROR_CODES = "Unknown|DeadlineExceeded|Unimplemented|Internal|Unavailable|DataLoss"

Panel = dict[str, Any]

# Domain panels per service: (title, unit, [(PromQL, legend)]). A service without an entry gets
# the runtime panels only.
DOMAIN_PANELS: dict[str, list[tuple[str, str, list[tuple[str, str]]]]] = {
    "identity": [
        (
            "Logins by outcome",
            "ops",
            [(f"sum by (outcome) (rate(omni_identity_logins_total{{{NS}}}{RATE}))", "{{outcome}}")],
        ),
        (
            "Tokens issued by kind",
            "ops",
            [(f"sum by (kind) (rate(omni_identity_tokens_issued_total{{{NS}}}{RATE}))", "{{kind}}")],
        ),
        (
            "Registrations by outcome",
            "ops",
            [(f"sum by (outcome) (rate(omni_identity_registrations_total{{{NS}}}{RATE}))", "{{outcome}}")],
        ),
        (
            "One-time codes by outcome",
            "ops",
            [(f"sum by (outcome) (rate(omni_identity_one_time_codes_total{{{NS}}}{RATE}))", "{{outcome}}")],
        ),
        (
            "Sessions revoked by reason (reuse = possible token theft)",
            "ops",
            [
                (f"sum by (reason) (rate(omni_identity_sessions_revoked_total{{{NS}}}{RATE}))", "{{reason}}"),
                (f"sum(rate(omni_identity_refresh_token_reuse_total{{{NS}}}{RATE}))", "refresh token reuse"),
            ],
        ),
        (
            "Argon2id p99 (hash and verify, incl. queueing)",
            "s",
            [
                (
                    "histogram_quantile(0.99, sum by (le, operation) "
                    f"(rate(omni_identity_password_hash_seconds_bucket{{{NS}}}{RATE})))",
                    "{{operation}}",
                )
            ],
        ),
        (
            "Signing keys published",
            "short",
            [(f"max(omni_identity_signing_keys{{{NS}}})", "keys")],
        ),
    ],
    "profile": [
        (
            "Events applied to the timeline by source",
            "ops",
            [(f"sum by (source) (rate(omni_profile_events_applied_total{{{NS}}}{RATE}))", "{{source}}")],
        ),
        (
            "Customer view fan-out p99 by source",
            "s",
            [
                (
                    "histogram_quantile(0.99, sum by (le, source) "
                    f"(rate(omni_profile_view_fanout_seconds_bucket{{{NS}}}{RATE})))",
                    "{{source}}",
                )
            ],
        ),
        (
            "Customer views degraded, by unavailable source",
            "ops",
            [
                (
                    f"sum by (source) (rate(omni_profile_view_unavailable_sources_total{{{NS}}}{RATE}))",
                    "{{source}}",
                )
            ],
        ),
        (
            "Segment evaluations by kind",
            "ops",
            [(f"sum by (kind) (rate(omni_profile_segment_evaluations_total{{{NS}}}{RATE}))", "{{kind}}")],
        ),
        (
            "Segment membership changes",
            "ops",
            [
                (
                    f"sum by (change) (rate(omni_profile_segment_membership_changes_total{{{NS}}}{RATE}))",
                    "{{change}}",
                )
            ],
        ),
        (
            "Erasure receipts by service and state",
            "ops",
            [
                (
                    f"sum by (service, state) (rate(omni_profile_erasure_receipts_total{{{NS}}}{RATE}))",
                    "{{service}} {{state}}",
                )
            ],
        ),
        (
            "Merges and unmerges",
            "ops",
            [(f"sum by (kind) (rate(omni_profile_merges_total{{{NS}}}{RATE}))", "{{kind}}")],
        ),
    ],
    "cart": [
        (
            "Checkouts by outcome",
            "ops",
            [(f"sum by (outcome) (rate(omni_cart_checkouts_total{{{NS}}}{RATE}))", "{{outcome}}")],
        ),
        (
            "Cart changes by kind",
            "ops",
            [(f"sum by (kind) (rate(omni_cart_mutations_total{{{NS}}}{RATE}))", "{{kind}}")],
        ),
        (
            "Open live-update streams (watchers)",
            "short",
            [(f"sum(omni_cart_watchers{{{NS}}})", "watchers")],
        ),
    ],
    "preferences": [
        (
            "Contact decisions by outcome and reason",
            "ops",
            [
                (
                    f"sum by (outcome, reason) (rate(omni_preferences_decisions_total{{{NS}}}{RATE}))",
                    "{{outcome}} {{reason}}",
                )
            ],
        ),
        (
            "Refused decisions by purpose",
            "percentunit",
            [
                (
                    "sum by (purpose) (rate(omni_preferences_decisions_total"
                    f'{{{NS}, outcome="refused"}}{RATE})) / '
                    f"sum by (purpose) (rate(omni_preferences_decisions_total{{{NS}}}{RATE}))",
                    "{{purpose}}",
                )
            ],
        ),
        (
            "Consent changes by state and cause",
            "ops",
            [
                (
                    f"sum by (state, cause) (rate(omni_preferences_consent_changes_total{{{NS}}}{RATE}))",
                    "{{state}} ({{cause}})",
                )
            ],
        ),
        (
            "Double opt-in confirmations by outcome",
            "ops",
            [(f"sum by (outcome) (rate(omni_preferences_confirmations_total{{{NS}}}{RATE}))", "{{outcome}}")],
        ),
        (
            "Contacts counted against caps",
            "ops",
            [
                (
                    f"sum by (via, result) (rate(omni_preferences_contacts_total{{{NS}}}{RATE}))",
                    "{{via}} {{result}}",
                )
            ],
        ),
        (
            "Pending-consent expiry sweeps by outcome",
            "ops",
            [(f"sum by (outcome) (rate(omni_preferences_sweeps_total{{{NS}}}{RATE}))", "{{outcome}}")],
        ),
    ],
    "inventory": [
        (
            "Reservations by outcome",
            "ops",
            [(f"sum by (outcome) (rate(omni_inventory_reservations_total{{{NS}}}{RATE}))", "{{outcome}}")],
        ),
        (
            "Reservation failures by reason",
            "ops",
            [
                (
                    f"sum by (reason) (rate(omni_inventory_reservation_failures_total{{{NS}}}{RATE}))",
                    "{{reason}}",
                )
            ],
        ),
        (
            "Reservation failure ratio",
            "percentunit",
            [
                (
                    f"sum(rate(omni_inventory_reservation_failures_total{{{NS}}}{RATE})) / "
                    f'(sum(rate(omni_inventory_reservations_total{{{NS}, outcome="created"}}{RATE})) + '
                    f"sum(rate(omni_inventory_reservation_failures_total{{{NS}}}{RATE})))",
                    "failed / attempted",
                )
            ],
        ),
        (
            "Stock movements by kind",
            "ops",
            [(f"sum by (kind) (rate(omni_inventory_stock_movements_total{{{NS}}}{RATE}))", "{{kind}}")],
        ),
        (
            "Reservation re-plans after a lost race",
            "ops",
            [(f"sum(rate(omni_inventory_reservation_retries_total{{{NS}}}{RATE}))", "retries")],
        ),
        (
            "Expiry sweeper passes by result",
            "ops",
            [(f"sum by (result) (rate(omni_inventory_expiry_sweeps_total{{{NS}}}{RATE}))", "{{result}}")],
        ),
    ],
    "messaging": [
        (
            "Notifications by state",
            "ops",
            [(f"sum by (state) (rate(omni_messaging_notifications_total{{{NS}}}{RATE}))", "{{state}}")],
        ),
        (
            "Sent and delivered by channel",
            "ops",
            [
                (
                    "sum by (channel) "
                    f'(rate(omni_messaging_notifications_total{{{NS}, state="sent"}}{RATE}))',
                    "sent {{channel}}",
                ),
                (
                    "sum by (channel) "
                    f'(rate(omni_messaging_notifications_total{{{NS}, state="delivered"}}{RATE}))',
                    "delivered {{channel}}",
                ),
            ],
        ),
        (
            "Suppressed by reason",
            "ops",
            [
                (
                    "sum by (reason) "
                    f'(rate(omni_messaging_notifications_total{{{NS}, state="suppressed"}}{RATE}))',
                    "{{reason}}",
                )
            ],
        ),
        (
            "Provider failure ratio",
            "percentunit",
            [
                (
                    "sum by (provider) "
                    f'(rate(omni_messaging_provider_requests_total{{{NS}, outcome!="ok"}}{RATE}))'
                    f" / sum by (provider) (rate(omni_messaging_provider_requests_total{{{NS}}}{RATE}))",
                    "{{provider}}",
                )
            ],
        ),
        (
            "Provider latency p99",
            "s",
            [
                (
                    "histogram_quantile(0.99, sum by (le, provider) "
                    f"(rate(omni_messaging_provider_request_seconds_bucket{{{NS}}}{RATE})))",
                    "{{provider}}",
                )
            ],
        ),
        (
            "Schedule: backlog and oldest due",
            "short",
            [
                (f"sum(omni_messaging_schedule_due{{{NS}}})", "due, unclaimed"),
                (f"max(omni_messaging_schedule_oldest_due_seconds{{{NS}}})", "oldest due (s)"),
            ],
        ),
        (
            "Schedule lag p99 (claim − due)",
            "s",
            [
                (
                    "histogram_quantile(0.99, sum by (le) "
                    f"(rate(omni_messaging_schedule_lag_seconds_bucket{{{NS}}}{RATE})))",
                    "p99",
                )
            ],
        ),
        (
            "Receipts by provider and status",
            "ops",
            [
                (
                    f"sum by (provider, status) (rate(omni_messaging_receipts_total{{{NS}}}{RATE}))",
                    "{{provider}} {{status}}",
                )
            ],
        ),
    ],
}


class Layout:
    """Places panels on Grafana's 24-column grid, two or three to a row."""

    def __init__(self) -> None:
        self.y = 0
        self.x = 0
        self.next_id = 1
        self.panels: list[Panel] = []

    def row(self, title: str) -> None:
        if self.x:
            self.y += 8
            self.x = 0
        self.panels.append(
            {
                "type": "row",
                "id": self._id(),
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
                "panels": [],
            }
        )
        self.y += 1

    def add(self, panel: Panel, width: int = 8) -> None:
        if self.x + width > 24:
            self.y += 8
            self.x = 0
        panel["id"] = self._id()
        panel["gridPos"] = {"h": 8, "w": width, "x": self.x, "y": self.y}
        self.panels.append(panel)
        self.x += width

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


def timeseries(title: str, unit: str, targets: list[tuple[str, str]], description: str = "") -> Panel:
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "min": 0,
                "custom": {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never"},
            },
            "overrides": [],
        },
        "options": {
            "legend": {
                "displayMode": "table",
                "placement": "bottom",
                "calcs": ["mean", "max", "lastNotNull"],
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "expr": expr,
                "legendFormat": legend,
                "range": True,
            }
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def table(title: str, expr: str, description: str = "") -> Panel:
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "targets": [
            {
                "refId": "A",
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "expr": expr,
                "format": "table",
                "instant": True,
            }
        ],
        "transformations": [{"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True}}}],
    }


def templating(extra: list[Panel] | None = None) -> Panel:
    return {
        "list": [
            {
                "name": "datasource",
                "label": "Data source",
                "type": "datasource",
                "query": "prometheus",
                "current": {},
                "hide": 0,
            },
            {
                "name": "namespace",
                "label": "Namespace",
                "type": "query",
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "query": {"query": "label_values(omni_build_info, namespace)", "refId": "namespace"},
                "definition": "label_values(omni_build_info, namespace)",
                "refresh": 2,
                "includeAll": False,
                "multi": False,
                "current": {},
                "hide": 0,
            },
            *(extra or []),
        ]
    }


def dashboard(uid: str, title: str, description: str, panels: list[Panel], tags: list[str]) -> Panel:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["omni", *tags],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "time": {"from": "now-3h", "to": "now"},
        "timezone": "",
        "templating": templating(),
        "annotations": {"list": []},
        "links": [
            {"type": "dashboards", "tags": ["omni"], "asDropdown": True, "title": "Omni", "includeVars": True}
        ],
        "panels": panels,
    }


def grpc_selector(name: str) -> str:
    return f'{NS}, grpc_service=~"omni[.]{name}[.].+"'


def rpc_panels(layout: Layout, name: str) -> None:
    sel = grpc_selector(name)
    layout.row("RPCs served")
    layout.add(
        timeseries(
            "Requests by method",
            "reqps",
            [(f"sum by (grpc_method) (rate(grpc_server_handled_total{{{sel}}}{RATE}))", "{{grpc_method}}")],
        )
    )
    layout.add(
        timeseries(
            "Server-error ratio",
            "percentunit",
            [
                (
                    "sum(rate(grpc_server_handled_total"
                    f'{{{sel}, grpc_code=~"{SERVER_ERROR_CODES}"}}{RATE})) / '
                    f"sum(rate(grpc_server_handled_total{{{sel}}}{RATE}))",
                    "server errors",
                )
            ],
            "RPCs ending in a code that means the server failed (Unknown, Internal, Unavailable, …).",
        )
    )
    layout.add(
        timeseries(
            "Responses by code",
            "reqps",
            [
                (
                    f'sum by (grpc_code) (rate(grpc_server_handled_total{{{sel}, grpc_code!="OK"}}{RATE}))',
                    "{{grpc_code}}",
                )
            ],
            "Every status other than OK, including the caller's mistakes (InvalidArgument, NotFound, …).",
        )
    )
    layout.add(
        timeseries(
            "Unary latency p50 / p90 / p99",
            "s",
            [
                (
                    f"histogram_quantile({q}, sum by (le) (rate(grpc_server_handling_seconds_bucket"
                    f'{{{sel}, grpc_type="unary"}}{RATE})))',
                    f"p{int(q * 100)}",
                )
                for q in (0.5, 0.9, 0.99)
            ],
        ),
        width=12,
    )
    layout.add(
        timeseries(
            "p99 latency by method",
            "s",
            [
                (
                    "histogram_quantile(0.99, sum by (grpc_method, le) (rate("
                    "grpc_server_handling_seconds_bucket"
                    f'{{{sel}, grpc_type="unary"}}{RATE})))',
                    "{{grpc_method}}",
                )
            ],
        ),
        width=12,
    )
    layout.add(
        timeseries(
            "In-flight RPCs (incl. open streams)",
            "short",
            [
                (
                    f"sum(grpc_server_started_total{{{sel}}}) - sum(grpc_server_handled_total{{{sel}}})",
                    "in flight",
                )
            ],
        ),
        width=12,
    )
    layout.add(
        timeseries(
            "Stream messages",
            "ops",
            [
                (f"sum(rate(grpc_server_msg_received_total{{{sel}}}{RATE}))", "received"),
                (f"sum(rate(grpc_server_msg_sent_total{{{sel}}}{RATE}))", "sent"),
            ],
        ),
        width=12,
    )


def gateway_status_panels(layout: Layout) -> None:
    """Requests by status and the 5xx ratio: on the gateway's dashboard and on the overview."""
    layout.add(
        timeseries(
            "Requests by status",
            "reqps",
            [(f"sum by (status) (rate(omni_gateway_http_requests_total{{{NS}}}{RATE}))", "{{status}}")],
        )
    )
    layout.add(
        timeseries(
            "5xx ratio",
            "percentunit",
            [
                (
                    f'sum(rate(omni_gateway_http_requests_total{{{NS}, status=~"5.."}}{RATE})) / '
                    f"sum(rate(omni_gateway_http_requests_total{{{NS}}}{RATE}))",
                    "5xx",
                )
            ],
        )
    )


def http_panels(layout: Layout) -> None:
    layout.row("HTTP requests")
    gateway_status_panels(layout)
    layout.add(
        timeseries(
            "Requests by route",
            "reqps",
            [
                (
                    f"sum by (method, route) (rate(omni_gateway_http_requests_total{{{NS}}}{RATE}))",
                    "{{method}} {{route}}",
                )
            ],
        )
    )
    layout.add(
        timeseries(
            "Latency p50 / p90 / p99",
            "s",
            [
                (
                    f"histogram_quantile({q}, sum by (le) (rate(omni_gateway_http_request_seconds_bucket"
                    f"{{{NS}}}{RATE})))",
                    f"p{int(q * 100)}",
                )
                for q in (0.5, 0.9, 0.99)
            ],
            "Includes Server-Sent Event streams, which stay open by design.",
        ),
        width=12,
    )
    layout.add(
        timeseries(
            "p99 latency by route",
            "s",
            [
                (
                    "histogram_quantile(0.99, sum by (method, route, le) (rate("
                    f"omni_gateway_http_request_seconds_bucket{{{NS}}}{RATE})))",
                    "{{method}} {{route}}",
                )
            ],
        ),
        width=12,
    )


def client_panels(layout: Layout, name: str) -> None:
    sel = f'{NS}, service="{name}"'
    layout.row("Calls to other services")
    layout.add(
        timeseries(
            "Outgoing RPCs by service and code",
            "reqps",
            [
                (
                    f"sum by (grpc_service, grpc_code) (rate(grpc_client_handled_total{{{sel}}}{RATE}))",
                    "{{grpc_service}} {{grpc_code}}",
                )
            ],
        ),
        width=12,
    )
    layout.add(
        timeseries(
            "Outgoing p99 latency by service",
            "s",
            [
                (
                    "histogram_quantile(0.99, sum by (grpc_service, le) (rate("
                    f"grpc_client_handling_seconds_bucket{{{sel}}}{RATE})))",
                    "{{grpc_service}}",
                )
            ],
        ),
        width=12,
    )


def event_panels(layout: Layout, name: str) -> None:
    sel = f'{NS}, service="{name}"'
    layout.row("Events: outbox and consumers")
    layout.add(
        timeseries(
            "Outbox: pending events",
            "short",
            [(f"max(omni_outbox_pending_events{{{sel}}})", "pending")],
        )
    )
    layout.add(
        timeseries(
            "Outbox: oldest pending event",
            "s",
            [(f"max(omni_outbox_oldest_pending_age_seconds{{{sel}}})", "age")],
        )
    )
    layout.add(
        timeseries(
            "Outbox: published and failed",
            "ops",
            [
                (f"sum(rate(omni_outbox_published_total{{{sel}}}{RATE}))", "published"),
                (f"sum(rate(omni_outbox_publish_errors_total{{{sel}}}{RATE}))", "publish errors"),
            ],
        )
    )
    layout.add(
        timeseries(
            "Consumers: events by outcome",
            "ops",
            [
                (
                    f"sum by (consumer, outcome) (rate(omni_consumer_handled_total{{{sel}}}{RATE}))",
                    "{{consumer}} {{outcome}}",
                )
            ],
        )
    )
    layout.add(
        timeseries(
            "Consumers: lag (pending messages)",
            "short",
            [(f"max by (consumer) (omni_consumer_pending_messages{{{sel}}})", "{{consumer}}")],
        )
    )
    layout.add(
        timeseries(
            "Consumers: p99 handling time",
            "s",
            [
                (
                    "histogram_quantile(0.99, sum by (consumer, le) (rate("
                    f"omni_consumer_handling_seconds_bucket{{{sel}}}{RATE})))",
                    "{{consumer}}",
                )
            ],
        )
    )


def service_dashboard(name: str, block: dict[str, Any]) -> Panel:
    layout = Layout()
    protocol = block.get("protocol", "grpc")
    if protocol == "http":
        http_panels(layout)
    else:
        rpc_panels(layout, name)
    domain = DOMAIN_PANELS.get(name, [])
    if domain:
        layout.row(f"{name.capitalize()} domain")
        for title, unit, targets in domain:
            layout.add(timeseries(title, unit, targets))
    calls = block.get("calls")
    if calls is None or calls:
        client_panels(layout, name)
    if (block.get("nats") or {}).get("enabled", True):
        event_panels(layout, name)
    return dashboard(
        uid=f"omni-{name}",
        title=f"Omni / {name}",
        description=(
            f"The {name}: HTTP traffic, errors and latency, and its calls to the services."
            if protocol == "http"
            else f"The {name} service: traffic, errors and latency, its calls, events, domain metrics."
        ),
        panels=layout.panels,
        tags=[name],
    )


def overview_dashboard(names: list[str]) -> Panel:
    layout = Layout()
    layout.row("gRPC services")
    by_service = f"sum by (grpc_service) (rate(grpc_server_handled_total{{{NS}}}{RATE}))"
    layout.add(timeseries("Requests by service", "reqps", [(by_service, "{{grpc_service}}")]))
    layout.add(
        timeseries(
            "Server-error ratio by service",
            "percentunit",
            [
                (
                    "sum by (grpc_service) (rate(grpc_server_handled_total"
                    f'{{{NS}, grpc_code=~"{SERVER_ERROR_CODES}"}}{RATE})) / {by_service}',
                    "{{grpc_service}}",
                )
            ],
        )
    )
    layout.add(
        timeseries(
            "Unary p99 latency by service",
            "s",
            [
                (
                    "histogram_quantile(0.99, sum by (grpc_service, le) (rate("
                    "grpc_server_handling_seconds_bucket"
                    f'{{{NS}, grpc_type="unary"}}{RATE})))',
                    "{{grpc_service}}",
                )
            ],
        )
    )
    layout.row("Gateway (HTTP)")
    gateway_status_panels(layout)
    layout.add(
        timeseries(
            "p99 latency",
            "s",
            [
                (
                    "histogram_quantile(0.99, sum by (le) (rate(omni_gateway_http_request_seconds_bucket"
                    f"{{{NS}}}{RATE})))",
                    "p99",
                )
            ],
        )
    )
    layout.row("Events")
    layout.add(
        timeseries(
            "Outbox: oldest pending event by service",
            "s",
            [(f"max by (service) (omni_outbox_oldest_pending_age_seconds{{{NS}}})", "{{service}}")],
        )
    )
    layout.add(
        timeseries(
            "Outbox: pending events by service",
            "short",
            [(f"sum by (service) (omni_outbox_pending_events{{{NS}}})", "{{service}}")],
        )
    )
    layout.add(
        timeseries(
            "Consumer lag by service and consumer",
            "short",
            [
                (
                    f"max by (service, consumer) (omni_consumer_pending_messages{{{NS}}})",
                    "{{service}} / {{consumer}}",
                )
            ],
        )
    )
    layout.row("What runs")
    layout.add(
        table(
            "Versions and pods per service",
            f"count by (service, version) (omni_build_info{{{NS}}})",
            "One line per service and version; the value column (hidden) is the number of pods.",
        ),
        width=24,
    )
    return dashboard(
        uid="omni-overview",
        title="Omni / Overview",
        description="Every Omni service: request rate, errors and latency; the gateway; events; versions. "
        f"Services: {', '.join(names)}.",
        panels=layout.panels,
        tags=["overview"],
    )


def services_from_values(values_path: Path = VALUES) -> dict[str, dict[str, Any]]:
    values = yaml.safe_load(values_path.read_text())
    return {name: (block or {}) for name, block in values["services"].items()}


def build_all(values_path: Path = VALUES) -> dict[str, Panel]:
    """Every dashboard, keyed by its file name."""
    services = services_from_values(values_path)
    dashboards = {"omni-overview.json": overview_dashboard(sorted(services))}
    for name, block in sorted(services.items()):
        dashboards[f"omni-{name}.json"] = service_dashboard(name, block)
    return dashboards


def render(board: Panel) -> str:
    return json.dumps(board, indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def queries(board: Panel) -> Iterator[str]:
    """Every PromQL expression of a dashboard (panel targets and templating queries)."""
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            yield target["expr"]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            yield variable["definition"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="only report files that are out of date")
    args = parser.parse_args(argv)
    stale = []
    for file_name, board in build_all().items():
        path = HERE / file_name
        text = render(board)
        if path.exists() and path.read_text() == text:
            continue
        stale.append(file_name)
        if not args.check:
            path.write_text(text)
    for path in HERE.glob("omni-*.json"):
        if path.name not in build_all():
            stale.append(path.name)
            if not args.check:
                path.unlink()
    if stale:
        verb = "out of date" if args.check else "written"
        sys.stdout.write(f"{verb}: {', '.join(sorted(stale))}\n")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
