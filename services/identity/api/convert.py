"""Database rows → identity protos (the resources' output-only fields are computed here)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from omni.identity.v1 import resources_pb2
from services.identity import domain
from services.identity.events import customer_name, identifier_name, ts

Customer = resources_pb2.Customer


def customer_state(row: Any, now: datetime | None = None) -> int:
    """ACTIVE customers under an automatic lock (failed log-ins) show as LOCKED until it ends."""
    state: int = row.state
    locked_until = row.locked_until
    if (
        state == Customer.STATE_ACTIVE
        and locked_until is not None
        and locked_until > (now or datetime.now(UTC))
    ):
        return Customer.STATE_LOCKED
    return state


def customer(row: Any, primary_email: str = "", primary_phone: str = "") -> resources_pb2.Customer:
    out = resources_pb2.Customer(
        name=customer_name(row.id),
        state=customer_state(row),  # type: ignore[arg-type]
        display_name=row.display_name,
        primary_email=primary_email,
        primary_phone=primary_phone,
        has_password=row.password_hash is not None,
        merged_into=customer_name(row.merged_into) if row.merged_into else "",
        create_time=ts(row.create_time),
        update_time=ts(row.update_time),
        etag=domain.etag(row.version),
    )
    out.origin.channel = row.origin_channel
    out.origin.store = row.origin_store
    out.origin.device = row.origin_device
    if row.register_time is not None:
        out.register_time.CopyFrom(ts(row.register_time))
    if row.erase_time is not None:
        out.erase_time.CopyFrom(ts(row.erase_time))
    return out


def identifier(row: Any) -> resources_pb2.Identifier:
    out = resources_pb2.Identifier(
        name=identifier_name(row.customer_id, row.id),
        kind=row.kind,
        value=row.value,
        verified=row.verified,
        primary=row.is_primary,
        linked_by=row.linked_by,
        create_time=ts(row.create_time),
    )
    out.source.channel = row.source_channel
    out.source.store = row.source_store
    out.source.device = row.source_device
    if row.verify_time is not None:
        out.verify_time.CopyFrom(ts(row.verify_time))
    return out


def staff_member(row: Any) -> resources_pb2.StaffMember:
    return resources_pb2.StaffMember(
        name=f"staffMembers/{row.id}",
        email=row.email,
        display_name=row.display_name,
        roles=domain.role_values(tuple(row.roles)),  # type: ignore[arg-type]
        store=row.store,
        state=row.state,
        create_time=ts(row.create_time),
        update_time=ts(row.update_time),
        etag=domain.etag(row.version),
    )


def service_client(row: Any) -> resources_pb2.ServiceClient:
    out = resources_pb2.ServiceClient(
        name=f"serviceClients/{row.id}",
        display_name=row.display_name,
        client_id=row.id,
        channel=row.channel,
        state=row.state,
        secret_create_time=ts(row.secret_create_time),
        create_time=ts(row.create_time),
        update_time=ts(row.update_time),
        etag=domain.etag(row.version),
    )
    if row.token_lifetime_seconds:
        out.token_lifetime.seconds = row.token_lifetime_seconds
    return out
