"""Staff members (agents, store associates, marketers, administrators) and their log-in."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import grpc
from sqlalchemy import ColumnElement, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from omni.identity.v1 import identity_service_pb2 as pb
from omni.identity.v1 import resources_pb2
from omni_runtime import names
from omni_runtime.context import current_channel
from omni_runtime.db.idempotency import recall
from omni_runtime.errors import AlreadyExists, OmniError, PermissionDenied
from omni_runtime.listing import Condition, Field, Kind, compare
from omni_runtime.validation import Checker
from services.identity import domain, metrics, store
from services.identity.api import convert
from services.identity.api.base import (
    HandlerBase,
    Rows,
    check_etag,
    invalid_credentials,
    new_password,
    too_many_attempts,
)
from services.identity.api.common import DOMAIN, client_info, identity_listing, scope, transact
from services.identity.sessions import Reason, staff_subject

StaffMember = resources_pb2.StaffMember
STAFF_PATTERN = "staffMembers/{staff_member}"
EDITABLE = ("email", "display_name", "roles", "store")
_STAFF_ROLE_NAMES = {
    v.name: v.number
    for v in resources_pb2.Role.DESCRIPTOR.values
    if domain.ROLE_NAMES.get(v.number) in domain.STAFF_ROLES
}
_STAFF = store.staff_members


def _has_role(cond: Condition) -> ColumnElement[bool]:
    """Roles are stored by name (``agent``) and filtered by enum value (``ROLE_AGENT``)."""
    assert isinstance(cond.value, int)
    return compare(_STAFF.c.roles, cond.op, domain.ROLE_NAMES[cond.value])


STAFF = identity_listing(
    fields={
        "roles": Field(
            Kind.ENUM,
            _STAFF_ROLE_NAMES,
            repeated=True,
            sql=_has_role,
        ),
        "store": Field(Kind.STRING, sql=_STAFF.c.store),
        "state": Field(Kind.ENUM, StaffMember.State, sql=_STAFF.c.state),
        "email": Field(Kind.STRING, sql=_STAFF.c.email),
        "display_name": Field(Kind.STRING, sql=_STAFF.c.display_name),
    },
    order_by={
        "display_name": _STAFF.c.display_name,
        "email": _STAFF.c.email,
        "create_time": _STAFF.c.create_time,
    },
    default_order="display_name",
    tiebreak=[_STAFF.c.id],
)


def _check_staff_fields(
    check: Checker, prefix: str, staff: resources_pb2.StaffMember, fields: set[str]
) -> str:
    """Validate the given fields of a staff member; returns the normalized e-mail (if checked)."""
    email = ""
    if "email" in fields and check.require(f"{prefix}.email", staff.email):
        try:
            email = domain.normalize_email(staff.email)
        except domain.InvalidIdentifier as exc:
            check.fail(f"{prefix}.email", str(exc), "INVALID_EMAIL")
    if "display_name" in fields and check.require(f"{prefix}.display_name", staff.display_name):
        check.length(f"{prefix}.display_name", staff.display_name, max_len=200)
    if "roles" in fields and check.require(f"{prefix}.roles", list(staff.roles)):
        for i, role in enumerate(staff.roles):
            if domain.ROLE_NAMES.get(role) not in domain.STAFF_ROLES:
                check.fail(
                    f"{prefix}.roles[{i}]",
                    "must be ROLE_AGENT, ROLE_STORE_ASSOCIATE, ROLE_MARKETER or ROLE_ADMIN",
                    "INVALID_ROLE",
                )
    if "store" in fields or "roles" in fields:
        associate = resources_pb2.ROLE_STORE_ASSOCIATE in staff.roles
        if associate and not staff.store:
            check.fail(f"{prefix}.store", "is required for a store associate", "REQUIRED")
        elif staff.store and not names.matches("locations/{location}", staff.store):
            check.fail(f"{prefix}.store", "must be a location name like locations/{location}", "INVALID_NAME")
        elif staff.store and not associate:
            check.fail(f"{prefix}.store", "is only for store associates", "STORE_WITHOUT_ASSOCIATE")
    return email


def _role_names(roles: Any) -> list[str]:
    return sorted({domain.ROLE_NAMES[r] for r in roles})


def _email_taken() -> AlreadyExists:
    return AlreadyExists(
        "another staff member has this e-mail address", reason="STAFF_EMAIL_TAKEN", domain=DOMAIN
    )


_STAFF_ROWS = Rows(store.staff_members, "staffMembers/", convert.staff_member)


class StaffHandlers(HandlerBase):
    # -- StaffLogin ---------------------------------------------------------------------------

    async def StaffLogin(
        self, request: pb.StaffLoginRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.AuthToken:
        check = Checker()
        email = ""
        if check.require("email", request.email):
            try:
                email = domain.normalize_email(request.email)
            except domain.InvalidIdentifier as exc:
                check.fail("email", str(exc), "INVALID_EMAIL")
        if check.require("password", request.password):
            check.length("password", request.password, max_len=domain.MAX_PASSWORD_LENGTH)
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()
        throttle = domain.throttle_key("staff", domain.EMAIL, email)
        scope_name = scope("StaffLogin", per_caller=False)
        async with self.d.db.transaction() as session:
            if request.request_id:
                prior = await recall(
                    session, scope_name, request.request_id, request, resources_pb2.AuthToken
                )
                if prior is not None:
                    return prior
            blocked = await self.throttled_until(session, throttle)
            row = (
                None
                if blocked
                else (
                    await session.execute(
                        select(store.staff_members).where(store.staff_members.c.email == email)
                    )
                ).first()
            )
        if blocked is not None:
            metrics.LOGINS.labels("throttled").inc()
            raise too_many_attempts(blocked)
        stored = row.password_hash if row is not None else None
        if not await self.d.passwords.verify(stored, request.password):
            async with self.d.db.transaction() as session:
                await self.count_failure(
                    session, throttle, (store.staff_members, row.id) if row is not None else None
                )
            metrics.LOGINS.labels("bad_credentials" if row is not None else "unknown_identifier").inc()
            raise invalid_credentials()
        assert row is not None
        client = client_info(context)

        async def body(session: AsyncSession) -> resources_pb2.AuthToken | OmniError:
            now = datetime.now(UTC)
            current = await _STAFF_ROWS.row(session, f"staffMembers/{row.id}", for_update=True)
            if current.password_hash != stored:
                return invalid_credentials()
            if current.state != StaffMember.STATE_ACTIVE:
                metrics.LOGINS.labels("locked").inc()
                return PermissionDenied(
                    "this staff account is disabled", reason="STAFF_DISABLED", domain=DOMAIN
                )
            if current.locked_until is not None and current.locked_until > now:
                metrics.LOGINS.labels("locked").inc()
                return PermissionDenied(
                    "this staff account is locked after failed log-ins; try again later",
                    reason="STAFF_LOCKED",
                    domain=DOMAIN,
                )
            await store.clear_throttle(session, throttle)
            await session.execute(
                update(store.staff_members)
                .where(store.staff_members.c.id == row.id)
                .values(failed_logins=0, locked_until=None)
            )
            subject = staff_subject(current)
            assert subject is not None
            metrics.LOGINS.labels("success").inc()
            return await self.d.sessions.open(
                session, subject, resources_pb2.AUTH_METHOD_PASSWORD, current_channel.get(), client
            )

        return await transact(self.d.db, scope_name, request, resources_pb2.AuthToken, body)

    # -- CRUD ---------------------------------------------------------------------------------

    async def CreateStaffMember(
        self, request: pb.CreateStaffMemberRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.StaffMember:
        check = Checker()
        email = _check_staff_fields(check, "staff_member", request.staff_member, set(EDITABLE))
        new_password(check, "initial_password", request.initial_password)
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()
        password_hash = await self.d.passwords.hash(request.initial_password)
        staff = request.staff_member

        async def body(session: AsyncSession) -> resources_pb2.StaffMember:
            staff_id = domain.new_id()
            inserted = (
                await session.execute(
                    insert(store.staff_members)
                    .values(
                        id=staff_id,
                        email=email,
                        display_name=staff.display_name,
                        roles=_role_names(staff.roles),
                        store=staff.store,
                        state=StaffMember.STATE_ACTIVE,
                        password_hash=password_hash,
                    )
                    .on_conflict_do_nothing(index_elements=["email"])
                    .returning(store.staff_members.c.id)
                )
            ).first()
            if inserted is None:
                raise _email_taken()
            return await _STAFF_ROWS.reload(session, staff_id)

        return await transact(self.d.db, scope("CreateStaffMember"), request, resources_pb2.StaffMember, body)

    async def GetStaffMember(
        self, request: pb.GetStaffMemberRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.StaffMember:
        check = Checker()
        check.name("name", request.name, STAFF_PATTERN)
        check.raise_if_invalid()
        async with self.d.db.transaction() as session:
            return convert.staff_member(await _STAFF_ROWS.row(session, request.name))

    async def ListStaffMembers(
        self, request: pb.ListStaffMembersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListStaffMembersResponse:
        query = STAFF.parse(request)
        async with self.d.db.transaction() as session:
            rows, token = await query.page(session, select(_STAFF))
            total = await query.count(session, _STAFF)
        return pb.ListStaffMembersResponse(
            staff_members=[convert.staff_member(r) for r in rows], next_page_token=token, total_size=total
        )

    async def UpdateStaffMember(
        self, request: pb.UpdateStaffMemberRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.StaffMember:
        check = Checker()
        check.name("staff_member.name", request.staff_member.name, STAFF_PATTERN)
        paths = check.update_mask("update_mask", request.update_mask, EDITABLE, request.staff_member)
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()
        name = request.staff_member.name

        async def body(session: AsyncSession) -> resources_pb2.StaffMember:
            row = await _STAFF_ROWS.row(session, name, for_update=True)
            check_etag(name, request.staff_member.etag, row.version)
            merged = convert.staff_member(row)
            for path in paths:
                if path == "roles":
                    merged.ClearField("roles")
                    merged.roles.extend(request.staff_member.roles)
                else:
                    setattr(merged, path, getattr(request.staff_member, path))
            check = Checker()
            email = _check_staff_fields(check, "staff_member", merged, set(EDITABLE))
            check.raise_if_invalid()
            values = {
                "email": email,
                "display_name": merged.display_name,
                "roles": _role_names(merged.roles),
                "store": merged.store,
            }
            if values["email"] != row.email:
                taken = (
                    await session.execute(
                        select(store.staff_members.c.id).where(store.staff_members.c.email == values["email"])
                    )
                ).first()
                if taken is not None:
                    raise _email_taken()
            if any(values[k] != (list(row.roles) if k == "roles" else getattr(row, k)) for k in values):
                await _STAFF_ROWS.bump(session, row.id, **values)
            return await _STAFF_ROWS.reload(session, row.id)

        return await transact(self.d.db, scope("UpdateStaffMember"), request, resources_pb2.StaffMember, body)

    async def _set_state(self, method: str, request: Any, state: int) -> resources_pb2.StaffMember:
        check = Checker()
        check.name("name", request.name, STAFF_PATTERN)
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()

        async def body(session: AsyncSession) -> resources_pb2.StaffMember:
            row = await _STAFF_ROWS.row(session, request.name, for_update=True)
            check_etag(request.name, request.etag, row.version)
            if row.state != state:
                await _STAFF_ROWS.bump(session, row.id, state=state, failed_logins=0, locked_until=None)
                if state == StaffMember.STATE_DISABLED:
                    await self.d.sessions.revoke_all(session, request.name, Reason.REASON_PRINCIPAL_DISABLED)
            return await _STAFF_ROWS.reload(session, row.id)

        return await transact(self.d.db, scope(method), request, resources_pb2.StaffMember, body)

    async def DisableStaffMember(
        self, request: pb.DisableStaffMemberRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.StaffMember:
        return await self._set_state("DisableStaffMember", request, StaffMember.STATE_DISABLED)

    async def EnableStaffMember(
        self, request: pb.EnableStaffMemberRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.StaffMember:
        return await self._set_state("EnableStaffMember", request, StaffMember.STATE_ACTIVE)

    async def SetStaffPassword(
        self, request: pb.SetStaffPasswordRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.StaffMember:
        check = Checker()
        check.name("name", request.name, STAFF_PATTERN)
        new_password(check, "new_password", request.new_password)
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()
        password_hash = await self.d.passwords.hash(request.new_password)

        async def body(session: AsyncSession) -> resources_pb2.StaffMember:
            row = await _STAFF_ROWS.row(session, request.name, for_update=True)
            await _STAFF_ROWS.bump(
                session, row.id, password_hash=password_hash, failed_logins=0, locked_until=None
            )
            await self.d.sessions.revoke_all(session, request.name, Reason.REASON_PASSWORD_CHANGED)
            return await _STAFF_ROWS.reload(session, row.id)

        return await transact(self.d.db, scope("SetStaffPassword"), request, resources_pb2.StaffMember, body)
