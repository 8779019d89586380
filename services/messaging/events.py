"""What the messaging service publishes (through the outbox, in the transaction of the change).

The consumers of other services' events are in ``reactions`` (the platform's own notifications)
and ``contacts`` (the address projection); erasure is the runtime's ``consume_erasures``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from omni.messaging.v1 import events_pb2 as ev
from omni_runtime.timestamps import to_proto as ts
from services.messaging import convert
from services.messaging.store import AnyRow


def _common(row: AnyRow) -> dict[str, object]:
    return {
        "notification": convert.notification_name(row.id),
        "customer": row.customer,
        "topic": row.topic,
        "template": convert.template_name(row.template_id),
        "subject_resource": row.subject_resource,
    }


def sent(row: AnyRow, channel: int, when: datetime, *, locale: str | None = None) -> ev.NotificationSentEvent:
    return ev.NotificationSentEvent(
        **_common(row),  # type: ignore[arg-type]
        channel=channel,  # type: ignore[arg-type]
        locale=row.locale if locale is None else locale,
        failed_channels=list(row.failed_channels),
        occur_time=ts(when),
    )


def failed(row: AnyRow, attempts: Iterable[AnyRow], when: datetime) -> ev.NotificationFailedEvent:
    return ev.NotificationFailedEvent(
        **_common(row),  # type: ignore[arg-type]
        attempts=[convert.attempt(a) for a in attempts],
        occur_time=ts(when),
    )


def suppressed(row: AnyRow, when: datetime) -> ev.NotificationSuppressedEvent:
    return ev.NotificationSuppressedEvent(
        **_common(row),  # type: ignore[arg-type]
        suppression_reason=row.suppression_reason,
        occur_time=ts(when),
    )


def delivered(row: AnyRow, channel: int, when: datetime) -> ev.NotificationDeliveredEvent:
    return ev.NotificationDeliveredEvent(**_common(row), channel=channel, occur_time=ts(when))  # type: ignore[arg-type]


def opened(row: AnyRow, channel: int, when: datetime) -> ev.NotificationOpenedEvent:
    return ev.NotificationOpenedEvent(**_common(row), channel=channel, occur_time=ts(when))  # type: ignore[arg-type]


def clicked(row: AnyRow, channel: int, url: str, when: datetime) -> ev.NotificationClickedEvent:
    return ev.NotificationClickedEvent(**_common(row), channel=channel, url=url, occur_time=ts(when))  # type: ignore[arg-type]
