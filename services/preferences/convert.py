"""Rows ↔ protobuf resources, in one place so every RPC and event shows a resource the same way."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from google.protobuf import duration_pb2
from google.type import timeofday_pb2

from omni.preferences.v1 import resources_pb2 as res
from omni.type.v1 import channel_pb2
from omni_runtime.timestamps import to_proto
from services.preferences.domain.caps import Cap
from services.preferences.domain.quiet import DAY, Window

CUSTOMER = "customers/{customer}"
PREFERENCES = "customers/{customer}/preferences"
CONSENT = "customers/{customer}/consents/{consent}"


def customer_name(customer_id: str) -> str:
    return f"customers/{customer_id}"


def preferences_name(customer_id: str) -> str:
    return f"customers/{customer_id}/preferences"


def consent_name(customer_id: str, consent_id: str) -> str:
    return f"customers/{customer_id}/consents/{consent_id}"


def event_name(customer_id: str, consent_id: str, event_id: str) -> str:
    return f"customers/{customer_id}/consents/{consent_id}/consentEvents/{event_id}"


def etag(version: int) -> str:
    """AIP-154 etag of a row version (weak: it names a version, not a byte representation)."""
    return f'W/"{version}"'


def version_of(tag: str) -> int | None:
    """The version an etag names; None for something this server never issued."""
    if tag.startswith('W/"') and tag.endswith('"') and tag[3:-1].isdigit():
        return int(tag[3:-1])
    return None


# --- quiet hours and caps: proto ↔ JSON column ↔ domain ------------------------------------


def _tod(seconds: int) -> timeofday_pb2.TimeOfDay:
    if seconds == DAY:
        return timeofday_pb2.TimeOfDay(hours=24)
    return timeofday_pb2.TimeOfDay(hours=seconds // 3600, minutes=seconds // 60 % 60, seconds=seconds % 60)


def _secs(tod: timeofday_pb2.TimeOfDay) -> int:
    return int(tod.hours) * 3600 + int(tod.minutes) * 60 + int(tod.seconds)


def quiet_json(values: Iterable[res.QuietHours]) -> list[dict[str, Any]]:
    return [
        {
            "start": _secs(q.start_time),
            "end": _secs(q.end_time),
            "days": list(q.days),
            "channels": list(q.channels),
        }
        for q in values
    ]


def windows(data: Sequence[Mapping[str, Any]]) -> tuple[Window, ...]:
    return tuple(
        Window(int(d["start"]), int(d["end"]), frozenset(d["days"]), frozenset(d["channels"])) for d in data
    )


def caps_json(values: Iterable[res.FrequencyCap]) -> list[dict[str, Any]]:
    return [
        {
            "channel": int(c.channel),
            "topic": c.topic,
            "max_count": int(c.max_count),
            "seconds": int(c.period.seconds),
        }
        for c in values
    ]


def caps(data: Sequence[Mapping[str, Any]]) -> tuple[Cap, ...]:
    return tuple(
        Cap(int(d["max_count"]), timedelta(seconds=int(d["seconds"])), int(d["channel"]), str(d["topic"]))
        for d in data
    )


# --- resources ---------------------------------------------------------------------------


def preferences(customer_id: str, row: Any | None) -> res.Preferences:
    """The customer's preferences; the defaults (no update_time, etag of version 0) when unwritten."""
    out = res.Preferences(
        name=preferences_name(customer_id), etag=etag(row.version if row is not None else 0)
    )
    if row is None:
        return out
    out.preferred_channels.extend(row.preferred_channels)
    for q in row.quiet_hours:
        out.quiet_hours.append(
            res.QuietHours(
                start_time=_tod(q["start"]), end_time=_tod(q["end"]), days=q["days"], channels=q["channels"]
            )
        )
    out.time_zone = row.time_zone
    out.language_code = row.language_code
    for c in row.frequency_caps:
        out.frequency_caps.append(
            res.FrequencyCap(
                channel=c["channel"],
                topic=c["topic"],
                max_count=c["max_count"],
                period=duration_pb2.Duration(seconds=c["seconds"]),
            )
        )
    out.preferred_store = row.preferred_store
    out.update_time.CopyFrom(to_proto(row.update_time))
    return out


def source(row: Any) -> res.ConsentSource:
    return res.ConsentSource(
        channel=channel_pb2.ChannelContext(
            channel=row.source_channel, store=row.source_store, device=row.source_device
        ),
        recorded_by=row.recorded_by,
        evidence=row.evidence,
    )


def consent(row: Any) -> res.Consent:
    return res.Consent(
        name=consent_name(row.customer_id, row.id),
        channel=row.channel,
        topic=row.topic,
        state=row.state,
        legal_basis=row.legal_basis,
        source=source(row),
        create_time=to_proto(row.create_time),
        update_time=to_proto(row.update_time),
        etag=etag(row.version),
    )


def consent_event(row: Any) -> res.ConsentEvent:
    return res.ConsentEvent(
        name=event_name(row.customer_id, row.consent_id, row.id),
        channel=row.channel,
        topic=row.topic,
        state=row.state,
        previous_state=row.previous_state,
        legal_basis=row.legal_basis,
        source=source(row),
        create_time=to_proto(row.create_time),
    )
