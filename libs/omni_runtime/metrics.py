"""Every Prometheus metric the shared runtime exports, defined once.

Names follow go-grpc-prometheus / grpc-ecosystem so existing gRPC dashboards work unchanged;
Omni's own runtime metrics are prefixed ``omni_``. Services add domain metrics in their own
``metrics.py`` as ``omni_<service>_…``. Dashboards and alert rules under ``deploy/`` are checked
against this registry by the test suite, so a renamed metric breaks the build, not the pager.
"""

from __future__ import annotations

import threading

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server

# Buckets suited to RPCs that usually take milliseconds but may wait on a database lock.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_GRPC_LABELS = ("grpc_service", "grpc_method", "grpc_type")

SERVER_STARTED = Counter("grpc_server_started_total", "RPCs started on the server.", _GRPC_LABELS)
SERVER_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, regardless of success or failure.",
    (*_GRPC_LABELS, "grpc_code"),
)
SERVER_HANDLING_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time the server took to handle an RPC, until the last response message was sent.",
    _GRPC_LABELS,
    buckets=LATENCY_BUCKETS,
)
SERVER_MSG_RECEIVED = Counter(
    "grpc_server_msg_received_total", "Stream messages received by the server.", _GRPC_LABELS
)
SERVER_MSG_SENT = Counter("grpc_server_msg_sent_total", "Stream messages sent by the server.", _GRPC_LABELS)

CLIENT_STARTED = Counter(
    "grpc_client_started_total", "RPCs started by this process as a client.", _GRPC_LABELS
)
CLIENT_HANDLED = Counter(
    "grpc_client_handled_total",
    "RPCs completed by this process as a client.",
    (*_GRPC_LABELS, "grpc_code"),
)
CLIENT_HANDLING_SECONDS = Histogram(
    "grpc_client_handling_seconds",
    "Time from starting a client RPC until its status was received.",
    _GRPC_LABELS,
    buckets=LATENCY_BUCKETS,
)

OUTBOX_PENDING = Gauge(
    "omni_outbox_pending_events", "Events committed to the outbox and not yet published.", ("service",)
)
OUTBOX_OLDEST_AGE = Gauge(
    "omni_outbox_oldest_pending_age_seconds",
    "Age of the oldest unpublished outbox event (0 when the outbox is empty).",
    ("service",),
)
OUTBOX_PUBLISHED = Counter(
    "omni_outbox_published_total", "Outbox events acknowledged by JetStream.", ("service",)
)
OUTBOX_PUBLISH_ERRORS = Counter(
    "omni_outbox_publish_errors_total", "Failed attempts to publish outbox events.", ("service",)
)

CONSUMER_HANDLED = Counter(
    "omni_consumer_handled_total",
    "Events handled by a durable consumer; outcome is processed, duplicate or failed.",
    ("service", "consumer", "outcome"),
)
CONSUMER_HANDLING_SECONDS = Histogram(
    "omni_consumer_handling_seconds",
    "Time to handle one event, including its transaction.",
    ("service", "consumer"),
    buckets=LATENCY_BUCKETS,
)
CONSUMER_PENDING = Gauge(
    "omni_consumer_pending_messages",
    "Messages the durable consumer has not yet been delivered (JetStream num_pending): consumer lag.",
    ("service", "consumer"),
)

ERASURES = Counter(
    "omni_erasures_total",
    "Customer erasures this service processed (identity's CustomerErasedEvent); state is done or failed.",
    ("service", "state"),
)

BUILD_INFO = Gauge("omni_build_info", "Always 1; labels say what runs.", ("service", "version"))

_started: set[int] = set()
_lock = threading.Lock()


def serve_metrics(port: int, host: str = "0.0.0.0") -> None:  # noqa: S104 - scraped from the pod network
    """Expose the default registry on ``/metrics``; idempotent per port within one process."""
    with _lock:
        if port in _started:
            return
        start_http_server(port, addr=host, registry=REGISTRY)
        _started.add(port)


def metric_names() -> set[str]:
    """Every sample name the default registry can expose, observed or not.

    Families are expanded the way the exposition format does (counters gain ``_total``,
    histograms ``_bucket``/``_sum``/``_count``), so a query can be checked before any traffic.
    """
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("_sum", "_count", "_created"),
        "gauge": ("",),
        "info": ("_info",),
    }
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names
