"""The customer resource: get, update with etags and masks, lock/unlock, erase."""

from __future__ import annotations

import uuid

import grpc
from google.protobuf import field_mask_pb2

from omni.identity.v1 import events_pb2, resources_pb2
from omni.identity.v1 import identity_service_pb2 as pb
from omni_runtime.db.engine import Database
from omni_runtime.errors import status_of, unpack_details
from tests.identity.conftest import (
    PASSWORD,
    Stub,
    auth,
    email,
    email_key,
    events_of,
    expect,
    register,
    violations,
)

Customer = resources_pb2.Customer
Admin = tuple[tuple[str, str], ...]


async def test_get_customer_own_other_and_missing(stub: Stub, admin: Admin) -> None:
    me, other = await register(stub), await register(stub)
    got = await stub.GetCustomer(pb.GetCustomerRequest(name=me.customer.name), metadata=auth(me.token))
    assert got == me.customer
    await expect(
        stub.GetCustomer(pb.GetCustomerRequest(name=other.customer.name), metadata=auth(me.token)),
        grpc.StatusCode.PERMISSION_DENIED,
        "NOT_OWNER",
    )
    await expect(
        stub.GetCustomer(pb.GetCustomerRequest(name="customers/nobody"), metadata=admin),
        grpc.StatusCode.NOT_FOUND,
    )
    err = await expect(
        stub.GetCustomer(pb.GetCustomerRequest(name="carts/1"), metadata=admin),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violations(err) == {("name", "INVALID_NAME")}
    await expect(
        stub.GetCustomer(pb.GetCustomerRequest(name=me.customer.name)), grpc.StatusCode.UNAUTHENTICATED
    )


async def test_update_display_name_with_etag(stub: Stub) -> None:
    me = await register(stub, display_name="Old")
    md = auth(me.token)
    changed = await stub.UpdateCustomer(
        pb.UpdateCustomerRequest(
            customer=Customer(name=me.customer.name, display_name="New", etag=me.customer.etag),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        ),
        metadata=md,
    )
    assert changed.display_name == "New" and changed.etag != me.customer.etag
    stale = await expect(
        stub.UpdateCustomer(
            pb.UpdateCustomerRequest(
                customer=Customer(name=me.customer.name, display_name="X", etag=me.customer.etag)
            ),
            metadata=md,
        ),
        grpc.StatusCode.ABORTED,
    )
    info = unpack_details(status_of(stale))["ErrorInfo"]  # type: ignore[arg-type]
    assert info.metadata["current_etag"] == changed.etag  # type: ignore[attr-defined]
    err = await expect(
        stub.UpdateCustomer(
            pb.UpdateCustomerRequest(
                customer=Customer(name=me.customer.name, primary_email="x@y.z"),
                update_mask=field_mask_pb2.FieldMask(paths=["primary_email", "nope"]),
            ),
            metadata=md,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violations(err) == {
        ("update_mask.paths[0]", "IMMUTABLE_FIELD"),
        ("update_mask.paths[1]", "UNKNOWN_FIELD"),
    }


async def test_lock_revokes_sessions_and_refuses_login_until_unlocked(
    stub: Stub, admin: Admin, db: Database
) -> None:
    address = email()
    me = await register(stub, address)
    locked = await stub.LockCustomer(
        pb.LockCustomerRequest(name=me.customer.name, reason="fraud check", etag=me.customer.etag),
        metadata=admin,
    )
    assert locked.state == Customer.STATE_LOCKED
    await expect(
        stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=me.token.refresh_token)),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    await expect(
        stub.Login(pb.LoginRequest(identifier=email_key(address), password=PASSWORD)),
        grpc.StatusCode.PERMISSION_DENIED,
        "CUSTOMER_LOCKED",
    )
    # A wrong password learns nothing about the lock.
    await expect(
        stub.Login(pb.LoginRequest(identifier=email_key(address), password="not the password")),
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_CREDENTIALS",
    )
    revoked = [
        e for e in await events_of(db, events_pb2.SessionRevokedEvent) if e.principal == me.customer.name
    ]
    assert {e.reason for e in revoked} == {events_pb2.SessionRevokedEvent.REASON_PRINCIPAL_DISABLED}
    await expect(
        stub.UnlockCustomer(
            pb.UnlockCustomerRequest(name=me.customer.name, etag=me.customer.etag), metadata=admin
        ),
        grpc.StatusCode.ABORTED,
    )
    unlocked = await stub.UnlockCustomer(
        pb.UnlockCustomerRequest(name=me.customer.name, etag=locked.etag), metadata=admin
    )
    assert unlocked.state == Customer.STATE_ACTIVE
    await stub.Login(pb.LoginRequest(identifier=email_key(address), password=PASSWORD))


async def test_guests_cannot_be_locked(stub: Stub, admin: Admin) -> None:
    guest = await stub.CreateGuest(pb.CreateGuestRequest())
    await expect(
        stub.LockCustomer(pb.LockCustomerRequest(name=guest.customer.name), metadata=admin),
        grpc.StatusCode.FAILED_PRECONDITION,
        "CUSTOMER_IS_GUEST",
    )


async def test_customer_erases_itself(stub: Stub, db: Database, admin: Admin) -> None:
    address = email()
    me = await register(stub, address, display_name="Forget Me")
    request = pb.EraseCustomerRequest(
        name=me.customer.name, reason="GDPR request 42", request_id=str(uuid.uuid4())
    )
    erased = await stub.EraseCustomer(request, metadata=auth(me.token))
    assert erased.state == Customer.STATE_ERASED and erased.HasField("erase_time")
    assert not erased.display_name and not erased.primary_email and not erased.has_password
    assert await stub.EraseCustomer(request, metadata=auth(me.token)) == erased  # retried
    await expect(
        stub.Login(pb.LoginRequest(identifier=email_key(address), password=PASSWORD)),
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_CREDENTIALS",
    )
    await expect(
        stub.ResolveIdentity(
            pb.ResolveIdentityRequest(identifier=email_key(address), include_unverified=True), metadata=admin
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    listed = await stub.ListIdentifiers(pb.ListIdentifiersRequest(parent=me.customer.name), metadata=admin)
    assert not listed.identifiers
    events = [
        e for e in await events_of(db, events_pb2.CustomerErasedEvent) if e.customer == me.customer.name
    ]
    assert [e.requested_by for e in events] == [me.customer.name]
    # The address is free again.
    assert (await register(stub, address)).customer.name != me.customer.name
    # Nothing can change a tombstone.
    await expect(
        stub.UpdateCustomer(
            pb.UpdateCustomerRequest(customer=Customer(name=me.customer.name, display_name="x")),
            metadata=admin,
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "CUSTOMER_NOT_USABLE",
    )


async def test_erase_honours_the_etag(stub: Stub, admin: Admin) -> None:
    me = await register(stub)
    await expect(
        stub.EraseCustomer(pb.EraseCustomerRequest(name=me.customer.name, etag='W/"99"'), metadata=admin),
        grpc.StatusCode.ABORTED,
    )
