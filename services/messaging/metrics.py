"""Domain metrics of the messaging service (default registry; exported on the metrics port).

Names are checked against the Grafana dashboards and alert rules under deploy/ by tests/deploy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from google.protobuf.descriptor import EnumDescriptor
from prometheus_client import Counter, Gauge, Histogram

from omni.messaging.v1 import resources_pb2 as res
from omni.type.v1 import channel_pb2
from omni_runtime.metrics import initialise

NOTIFICATIONS = Counter(
    "omni_messaging_notifications_total",
    "Notification state changes: state is accepted, held, sent, delivered, failed or suppressed; "
    "channel the channel (empty before one is chosen); reason the suppression reason.",
    ("state", "channel", "reason"),
)
PROVIDER_REQUESTS = Counter(
    "omni_messaging_provider_requests_total",
    "Sends handed to a provider, by provider, channel and outcome (ok, transient, permanent).",
    ("provider", "channel", "outcome"),
)
PROVIDER_SECONDS = Histogram(
    "omni_messaging_provider_request_seconds",
    "Time a provider took to accept or refuse one message.",
    ("provider",),
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SCHEDULE_LAG = Histogram(
    "omni_messaging_schedule_lag_seconds",
    "How late a due notification was picked up by a worker (claim time minus due time).",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
)
SCHEDULE_DUE = Gauge(
    "omni_messaging_schedule_due",
    "Notifications due now and not yet claimed by a worker (backlog), as last seen by this replica.",
)
SCHEDULE_OLDEST_DUE = Gauge(
    "omni_messaging_schedule_oldest_due_seconds",
    "Age of the oldest due, unclaimed notification (0 when none), as last seen by this replica.",
)
RECEIPTS = Counter(
    "omni_messaging_receipts_total",
    "Provider receipts recorded, by provider and status; rejected callbacks have status rejected.",
    ("provider", "status"),
)
WORKER_PASSES = Counter(
    "omni_messaging_worker_passes_total",
    "Passes of the delivery worker, by result (ok or error).",
    ("result",),
)


def _label(enum: EnumDescriptor, value: int, prefix: str) -> str:
    found = enum.values_by_number.get(value) if value else None
    return found.name.removeprefix(prefix).lower() if found is not None else ""


def count(state: str, channel: int = 0, reason: int = 0) -> None:
    """One notification reached ``state`` (labels: channel and suppression reason by name)."""
    NOTIFICATIONS.labels(
        state,
        _label(channel_pb2.Channel.DESCRIPTOR, channel, "CHANNEL_"),
        _label(res.SuppressionReason.DESCRIPTOR, reason, "SUPPRESSION_REASON_"),
    ).inc()


def channel_label(channel: int) -> str:
    return _label(channel_pb2.Channel.DESCRIPTOR, channel, "CHANNEL_")


def initialise_providers(providers: Mapping[int, Iterable[str]]) -> None:
    """Every configured (provider, channel) at 0 for each outcome, so the failure ratio and its
    alert read 0 before the first send instead of "No data"."""
    initialise(
        PROVIDER_REQUESTS,
        [
            (provider, channel_label(channel), outcome)
            for channel, names in providers.items()
            for provider in names
            for outcome in ("ok", "transient", "permanent")
        ],
    )


initialise(NOTIFICATIONS, [(state, "", "") for state in ("accepted", "held", "suppressed")])
initialise(WORKER_PASSES, [("ok",), ("error",)])
