"""Staff members: administration, log-in, roles and store scope in tokens, disable/enable."""

from __future__ import annotations

import uuid

import grpc
import jwt
from google.protobuf import field_mask_pb2

from omni.identity.v1 import identity_service_pb2 as pb
from omni.identity.v1 import resources_pb2
from tests.identity.conftest import PASSWORD, Stub, auth, expect, violations

Staff = resources_pb2.StaffMember
Admin = tuple[tuple[str, str], ...]


def work_email() -> str:
    return f"staff-{uuid.uuid4().hex[:10]}@omni.example"


async def create(
    stub: Stub, admin: Admin, roles: list[int], store: str = "", address: str | None = None
) -> Staff:
    return await stub.CreateStaffMember(
        pb.CreateStaffMemberRequest(
            staff_member=Staff(email=address or work_email(), display_name="Mihai", roles=roles, store=store),  # type: ignore[arg-type]
            initial_password=PASSWORD,
        ),
        metadata=admin,
    )


async def staff_login(stub: Stub, address: str, password: str = PASSWORD) -> resources_pb2.AuthToken:
    return await stub.StaffLogin(pb.StaffLoginRequest(email=address, password=password))


async def test_store_associate_logs_in_with_the_store_in_the_token(stub: Stub, admin: Admin) -> None:
    member = await create(stub, admin, [resources_pb2.ROLE_STORE_ASSOCIATE], "locations/store-9")
    assert member.state == Staff.STATE_ACTIVE and member.store == "locations/store-9"
    token = await staff_login(stub, member.email.upper())
    assert token.principal == member.name and token.store == "locations/store-9"
    assert list(token.roles) == [resources_pb2.ROLE_STORE_ASSOCIATE]
    claims = jwt.decode(token.access_token, options={"verify_signature": False})
    assert claims["roles"] == ["store_associate"] and claims["store"] == "locations/store-9"
    assert claims["sid"].startswith(f"{member.name}/sessions/")
    # Staff see their own record and sessions, not colleagues'.
    assert (
        await stub.GetStaffMember(pb.GetStaffMemberRequest(name=member.name), metadata=auth(token))
    ).name == member.name
    colleague = await create(stub, admin, [resources_pb2.ROLE_AGENT])
    await expect(
        stub.GetStaffMember(pb.GetStaffMemberRequest(name=colleague.name), metadata=auth(token)),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    sessions = await stub.ListSessions(pb.ListSessionsRequest(parent=member.name), metadata=auth(token))
    assert [s.name for s in sessions.sessions] == [token.session]


async def test_staff_login_failures_say_nothing(stub: Stub, admin: Admin) -> None:
    member = await create(stub, admin, [resources_pb2.ROLE_AGENT])
    wrong = await expect(
        staff_login(stub, member.email, "wrong password!"),
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_CREDENTIALS",
    )
    unknown = await expect(
        staff_login(stub, work_email()), grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS"
    )
    assert wrong.details() == unknown.details()


async def test_create_validates_roles_store_and_password(stub: Stub, admin: Admin) -> None:
    err = await expect(
        stub.CreateStaffMember(
            pb.CreateStaffMemberRequest(
                staff_member=Staff(
                    email="nope", roles=[resources_pb2.ROLE_CUSTOMER, resources_pb2.ROLE_STORE_ASSOCIATE]
                ),
                initial_password="short",
            ),
            metadata=admin,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violations(err) == {
        ("staff_member.email", "INVALID_EMAIL"),
        ("staff_member.display_name", "REQUIRED"),
        ("staff_member.roles[0]", "INVALID_ROLE"),
        ("staff_member.store", "REQUIRED"),
        ("initial_password", "PASSWORD_TOO_SHORT"),
    }
    err = await expect(
        create(stub, admin, [resources_pb2.ROLE_AGENT], "locations/s1"), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert violations(err) == {("staff_member.store", "STORE_WITHOUT_ASSOCIATE")}


async def test_duplicate_staff_email_is_already_exists(stub: Stub, admin: Admin) -> None:
    address = work_email()
    await create(stub, admin, [resources_pb2.ROLE_AGENT], address=address)
    await expect(
        create(stub, admin, [resources_pb2.ROLE_ADMIN], address=address.upper()),
        grpc.StatusCode.ALREADY_EXISTS,
        "STAFF_EMAIL_TAKEN",
    )


async def test_list_filter_and_total(stub: Stub, admin: Admin) -> None:
    store = f"locations/s-{uuid.uuid4().hex[:6]}"
    for _ in range(3):
        await create(stub, admin, [resources_pb2.ROLE_STORE_ASSOCIATE, resources_pb2.ROLE_AGENT], store)
    listed = await stub.ListStaffMembers(
        pb.ListStaffMembersRequest(
            filter=f'roles:ROLE_STORE_ASSOCIATE AND store = "{store}"', page_size=2, order_by="email"
        ),
        metadata=admin,
    )
    assert listed.total_size == 3 and len(listed.staff_members) == 2 and listed.next_page_token
    emails = [m.email for m in listed.staff_members]
    assert emails == sorted(emails)


async def test_update_roles_apply_at_next_refresh(stub: Stub, admin: Admin) -> None:
    member = await create(stub, admin, [resources_pb2.ROLE_AGENT])
    token = await staff_login(stub, member.email)
    updated = await stub.UpdateStaffMember(
        pb.UpdateStaffMemberRequest(
            staff_member=Staff(name=member.name, roles=[resources_pb2.ROLE_MARKETER], etag=member.etag),
            update_mask=field_mask_pb2.FieldMask(paths=["roles"]),
        ),
        metadata=admin,
    )
    assert list(updated.roles) == [resources_pb2.ROLE_MARKETER] and updated.display_name == "Mihai"
    refreshed = await stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=token.refresh_token))
    assert list(refreshed.roles) == [resources_pb2.ROLE_MARKETER]
    await expect(
        stub.UpdateStaffMember(
            pb.UpdateStaffMemberRequest(
                staff_member=Staff(name=member.name, display_name="X", etag=member.etag)
            ),
            metadata=admin,
        ),
        grpc.StatusCode.ABORTED,
    )
    # Making them a store associate without a store is refused on the merged result.
    await expect(
        stub.UpdateStaffMember(
            pb.UpdateStaffMemberRequest(
                staff_member=Staff(name=member.name, roles=[resources_pb2.ROLE_STORE_ASSOCIATE]),
                update_mask=field_mask_pb2.FieldMask(paths=["roles"]),
            ),
            metadata=admin,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


async def test_disable_enable_and_password_reset(stub: Stub, admin: Admin) -> None:
    member = await create(stub, admin, [resources_pb2.ROLE_AGENT])
    token = await staff_login(stub, member.email)
    disabled = await stub.DisableStaffMember(pb.DisableStaffMemberRequest(name=member.name), metadata=admin)
    assert disabled.state == Staff.STATE_DISABLED
    await expect(
        stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=token.refresh_token)),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    await expect(staff_login(stub, member.email), grpc.StatusCode.PERMISSION_DENIED, "STAFF_DISABLED")
    await expect(
        staff_login(stub, member.email, "wrong password!"),
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_CREDENTIALS",
    )
    enabled = await stub.EnableStaffMember(
        pb.EnableStaffMemberRequest(name=member.name, etag=disabled.etag), metadata=admin
    )
    assert enabled.state == Staff.STATE_ACTIVE
    token = await staff_login(stub, member.email)
    await stub.SetStaffPassword(
        pb.SetStaffPasswordRequest(name=member.name, new_password="reset by the admin"), metadata=admin
    )
    await expect(
        stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=token.refresh_token)),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    await staff_login(stub, member.email, "reset by the admin")
    # Staff change their own password too.
    token = await staff_login(stub, member.email, "reset by the admin")
    await stub.ChangePassword(
        pb.ChangePasswordRequest(current_password="reset by the admin", new_password="chosen by myself"),
        metadata=auth(token),
    )
    await staff_login(stub, member.email, "chosen by myself")
    await expect(
        stub.GetStaffMember(pb.GetStaffMemberRequest(name="staffMembers/nobody"), metadata=admin),
        grpc.StatusCode.NOT_FOUND,
    )
