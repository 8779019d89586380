"""Every Prometheus metric the shared runtime exports, defined once.

Names follow go-grpc-prometheus / grpc-ecosystem so existing gRPC dashboards work unchanged;
Omni's own runtime metrics are prefixed ``omni_``. Services add domain metrics in their own
``metrics.py`` as ``omni_<service>_…``. Dashboards and alert rules under ``deploy/`` are checked
against this registry by the test suite, so a renamed metric breaks the build, not the pager.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable, Mapping, Sequence

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics import MetricWrapperBase

# Buckets suited to RPCs that usually take milliseconds but may wait on a database lock.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_GRPC_LABELS = ("grpc_service", "grpc_method", "grpc_type")

# ``grpc_code`` as go-grpc-prometheus writes it (Go's ``codes.Code.String()``), not Python's enum
# names: community dashboards and alerts filter on these spellings.
GRPC_CODE_LABELS: Mapping[grpc.StatusCode, str] = {
    grpc.StatusCode.OK: "OK",
    grpc.StatusCode.CANCELLED: "Canceled",
    grpc.StatusCode.UNKNOWN: "Unknown",
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument",
    grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
    grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    grpc.StatusCode.FAILED_PRECONDITION: "FailedPrecondition",
    grpc.StatusCode.ABORTED: "Aborted",
    grpc.StatusCode.OUT_OF_RANGE: "OutOfRange",
    grpc.StatusCode.UNIMPLEMENTED: "Unimplemented",
    grpc.StatusCode.INTERNAL: "Internal",
    grpc.StatusCode.UNAVAILABLE: "Unavailable",
    grpc.StatusCode.DATA_LOSS: "DataLoss",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
}


def code_label(code: grpc.StatusCode) -> str:
    """The ``grpc_code`` label value of a status."""
    return GRPC_CODE_LABELS[code]


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

# The database pool (SQLAlchemy's, one per service process): what an SRE checks first when
# latency rises with no error, because a call waiting for a connection waits silently.
DB_POOL_CHECKED_OUT = Gauge(
    "omni_db_pool_checked_out_connections", "Connections lent out of the pool right now.", ("service",)
)
DB_POOL_IDLE = Gauge("omni_db_pool_idle_connections", "Open connections idle in the pool.", ("service",))
DB_POOL_MAX = Gauge(
    "omni_db_pool_max_connections", "Most connections the pool opens (size + overflow).", ("service",)
)
DB_POOL_WAITING = Gauge(
    "omni_db_pool_waiting_requests", "Callers waiting for a connection from the pool.", ("service",)
)
DB_POOL_WAIT_SECONDS = Histogram(
    "omni_db_pool_wait_seconds",
    "Time to obtain a connection from the pool, including opening a new one.",
    ("service",),
    buckets=LATENCY_BUCKETS,
)
DB_POOL_TIMEOUTS = Counter(
    "omni_db_pool_timeouts_total", "Callers that gave up waiting for a pool connection.", ("service",)
)

EVENT_LOOP_LAG_SECONDS = Histogram(
    "omni_event_loop_lag_seconds",
    "How late the event loop ran a timer: time the process could not serve anything else.",
    ("service",),
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)

NATS_CONNECTED = Gauge("omni_nats_connected", "1 while connected to NATS, else 0.", ("service",))
NATS_RECONNECTS = Counter("omni_nats_reconnects_total", "Reconnections to NATS after a loss.", ("service",))
NATS_DISCONNECTS = Counter("omni_nats_disconnects_total", "Losses of the NATS connection.", ("service",))


def initialise(metric: MetricWrapperBase, label_sets: Iterable[Sequence[str]]) -> None:
    """Create the series of label sets known in advance, at 0, so they exist before the first
    event: a rate or ratio then reads 0 instead of "No data", and ``absent()`` means absent."""
    for values in label_sets:
        metric.labels(*values)


async def watch_event_loop(service: str, interval: float = 0.5) -> None:
    """Measure, until cancelled, how late the event loop wakes a timer (``omni_event_loop_lag_seconds``).

    A blocking call in a handler (CPU-bound work, a synchronous library) stalls every call of
    the process; this is where it shows.
    """
    loop = asyncio.get_running_loop()
    lag = EVENT_LOOP_LAG_SECONDS.labels(service)
    while True:
        due = loop.time() + interval
        await asyncio.sleep(interval)
        lag.observe(max(loop.time() - due, 0.0))


def _rpc_type(method: object) -> str:
    client = bool(getattr(method, "client_streaming", False))
    server = bool(getattr(method, "server_streaming", False))
    if client and server:
        return "bidi_stream"
    if client:
        return "client_stream"
    return "server_stream" if server else "unary"


def initialise_server_metrics(services: Iterable[ServiceDescriptor]) -> None:
    """Every ``grpc_server_*`` series of every method, each code at 0 (as go-grpc-prometheus's
    ``InitializeMetrics`` does), so dashboards and alerts see the methods before traffic."""
    for service in services:
        for method in service.methods:
            labels = (service.full_name, method.name, _rpc_type(method))
            for metric in (SERVER_STARTED, SERVER_HANDLING_SECONDS, SERVER_MSG_RECEIVED, SERVER_MSG_SENT):
                metric.labels(*labels)
            initialise(SERVER_HANDLED, ((*labels, code) for code in GRPC_CODE_LABELS.values()))


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
