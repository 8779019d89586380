"""Domain metrics of the HTTP gateway (default registry; exported on the metrics port).

``route`` is the route template (``/v1/customers/{customer}/cart``), never the raw path, so the
label's cardinality stays bounded. Names are checked against the dashboards and alert rules
under deploy/ by tests/deploy.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from omni_runtime.metrics import LATENCY_BUCKETS

HTTP_REQUESTS = Counter(
    "omni_gateway_http_requests_total",
    "HTTP requests completed by the gateway, by route template, method and status code.",
    ("route", "method", "status"),
)
HTTP_REQUEST_SECONDS = Histogram(
    "omni_gateway_http_request_seconds",
    "Time from receiving an HTTP request to sending the last byte of its response.",
    ("route", "method"),
    buckets=LATENCY_BUCKETS,
)
