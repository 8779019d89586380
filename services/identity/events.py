"""What identity publishes (event builders) and consumes (profile's duplicate merges).

Published through the transactional outbox, so an event exists exactly when its change was
committed. Subjects derive from message names (``CustomerRegisteredEvent`` →
``omni.identity.customer_registered``). The one-time code travels only inside
OneTimeCodeIssuedEvent, never in logs.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from google.protobuf import timestamp_pb2
from omni.identity.v1 import events_pb2, resources_pb2
from omni.type.v1 import channel_pb2
from omni_runtime.context import ChannelInfo


def ts(moment: datetime | None = None) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(moment or datetime.now(UTC))
    return out


def customer_name(customer_id: str) -> str:
    return f"customers/{customer_id}"


def identifier_name(customer_id: str, identifier_id: str) -> str:
    return f"customers/{customer_id}/identifiers/{identifier_id}"


def customer_registered(
    customer_id: str,
    display_name: str,
    keys: Iterable[tuple[int, str]],
    *,
    verified: bool,
    upgraded: bool,
    channel: ChannelInfo,
) -> events_pb2.CustomerRegisteredEvent:
    return events_pb2.CustomerRegisteredEvent(
        customer=customer_name(customer_id),
        display_name=display_name,
        identifiers=[resources_pb2.IdentifierKey(kind=k, value=v) for k, v in keys],  # type: ignore[arg-type]
        verified=verified,
        upgraded_from_guest=upgraded,
        channel=channel.to_proto(),
        occur_time=ts(),
    )


def guest_upgraded(
    guest_id: str, customer_id: str, *, merged: bool, channel: ChannelInfo
) -> events_pb2.GuestUpgradedEvent:
    return events_pb2.GuestUpgradedEvent(
        guest=customer_name(guest_id),
        customer=customer_name(customer_id),
        outcome=(
            events_pb2.GuestUpgradedEvent.OUTCOME_MERGED
            if merged
            else events_pb2.GuestUpgradedEvent.OUTCOME_UPGRADED
        ),
        channel=channel.to_proto(),
        occur_time=ts(),
    )


def identifier_linked(row: Any) -> events_pb2.IdentifierLinkedEvent:
    """From an ``identity_identifiers`` row (as it is after the change)."""
    return events_pb2.IdentifierLinkedEvent(
        identifier=identifier_name(row.customer_id, row.id),
        customer=customer_name(row.customer_id),
        kind=row.kind,
        value=row.value,
        verified=row.verified,
        primary=row.is_primary,
        channel=channel_pb2.ChannelContext(
            channel=row.source_channel, store=row.source_store, device=row.source_device
        ),
        occur_time=ts(),
    )


def identifier_unlinked(row: Any, reason: int) -> events_pb2.IdentifierUnlinkedEvent:
    return events_pb2.IdentifierUnlinkedEvent(
        identifier=identifier_name(row.customer_id, row.id),
        customer=customer_name(row.customer_id),
        kind=row.kind,
        value=row.value,
        reason=reason,  # type: ignore[arg-type]
        occur_time=ts(),
    )


def customer_erased(customer_id: str, requested_by: str) -> events_pb2.CustomerErasedEvent:
    return events_pb2.CustomerErasedEvent(
        customer=customer_name(customer_id), requested_by=requested_by, occur_time=ts()
    )


def one_time_code_issued(
    challenge_id: str,
    customer_id: str | None,
    kind: int,
    value: str,
    code: str,
    expire: datetime,
    purpose: int,
    language_code: str,
    channel: ChannelInfo,
) -> events_pb2.OneTimeCodeIssuedEvent:
    return events_pb2.OneTimeCodeIssuedEvent(
        challenge_id=challenge_id,
        customer=customer_name(customer_id) if customer_id else "",
        destination=resources_pb2.IdentifierKey(kind=kind, value=value),  # type: ignore[arg-type]
        code=code,
        expire_time=ts(expire),
        purpose=purpose,  # type: ignore[arg-type]
        language_code=language_code,
        channel=channel.to_proto(),
        occur_time=ts(),
    )


def session_revoked(session_name: str, principal: str, reason: int) -> events_pb2.SessionRevokedEvent:
    return events_pb2.SessionRevokedEvent(
        session=session_name,
        principal=principal,
        reason=reason,  # type: ignore[arg-type]
        occur_time=ts(),
    )
