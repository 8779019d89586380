"""Sessions of customers and staff: list, revoke one, log out by refresh token, log out everywhere."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
from google.protobuf import empty_pb2
from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from omni.identity.v1 import identity_service_pb2 as pb
from omni.identity.v1 import resources_pb2
from omni.type.v1 import channel_pb2
from omni_runtime import names
from omni_runtime.errors import NotFound
from omni_runtime.listing import Field, Kind
from omni_runtime.validation import Checker
from services.identity import store
from services.identity.api.base import HandlerBase
from services.identity.api.common import DOMAIN, identity_listing, scope, transact
from services.identity.sessions import ACTIVE, Reason, split_session_name

OWNER_PATTERNS = ("customers/{customer}", "staffMembers/{staff_member}")
SESSION_PATTERNS = (
    "customers/{customer}/sessions/{session}",
    "staffMembers/{staff_member}/sessions/{session}",
)
Session = resources_pb2.Session

# An ACTIVE session whose refresh token lapsed is reported (and filtered) as EXPIRED.
_STATE = case(
    (
        (store.sessions.c.state == ACTIVE) & (store.sessions.c.expire_time <= func.now()),
        Session.STATE_EXPIRED,
    ),
    else_=store.sessions.c.state,
)


SESSIONS = identity_listing(
    fields={
        "state": Field(Kind.ENUM, Session.State, sql=_STATE),
        "auth_method": Field(Kind.ENUM, resources_pb2.AuthMethod, sql=store.sessions.c.auth_method),
        "channel.channel": Field(Kind.ENUM, channel_pb2.Channel, sql=store.sessions.c.channel),
        "create_time": Field(Kind.TIMESTAMP, sql=store.sessions.c.create_time),
    },
    order_by={
        "create_time": store.sessions.c.create_time,
        "last_refresh_time": store.sessions.c.last_refresh_time,
    },
    default_order="last_refresh_time desc",
    tiebreak=[store.sessions.c.id],
)


def _owner(check: Checker, field: str, value: str) -> None:
    if check.require(field, value) and not any(names.matches(p, value) for p in OWNER_PATTERNS):
        check.fail(field, "must be customers/{customer} or staffMembers/{staff_member}", "INVALID_NAME")


def _session_name(check: Checker, field: str, value: str) -> None:
    if check.require(field, value) and not any(names.matches(p, value) for p in SESSION_PATTERNS):
        check.fail(
            field,
            "must be customers/{customer}/sessions/{session} or "
            "staffMembers/{staff_member}/sessions/{session}",
            "INVALID_NAME",
        )


class SessionHandlers(HandlerBase):
    async def _require_owner(self, session: AsyncSession, owner: str) -> None:
        collection, _, ident = owner.partition("/")
        table = store.customers if collection == "customers" else store.staff_members
        found = (await session.execute(select(table.c.id).where(table.c.id == ident))).first()
        if found is None:
            raise NotFound(owner, domain=DOMAIN)

    async def ListSessions(
        self, request: pb.ListSessionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSessionsResponse:
        check = Checker()
        _owner(check, "parent", request.parent)
        check.raise_if_invalid()
        query = SESSIONS.parse(request, scope=(request.parent,))
        statement = select(store.sessions).where(store.sessions.c.principal == request.parent)
        if not query.mentions("state"):
            statement = statement.where(_STATE == Session.STATE_ACTIVE)
        async with self.d.db.transaction() as session:
            await self._require_owner(session, request.parent)
            rows, token = await query.page(session, statement)
        return pb.ListSessionsResponse(
            sessions=[self.d.sessions.to_proto(r) for r in rows], next_page_token=token
        )

    async def RevokeSession(
        self, request: pb.RevokeSessionRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.Session:
        check = Checker()
        _session_name(check, "name", request.name)
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()
        principal, session_id = split_session_name(request.name)

        async def body(session: AsyncSession) -> resources_pb2.Session:
            row = (
                await session.execute(
                    select(store.sessions)
                    .where(store.sessions.c.id == session_id, store.sessions.c.principal == principal)
                    .with_for_update()
                )
            ).first()
            if row is None:
                raise NotFound(request.name, domain=DOMAIN)
            await self.d.sessions.revoke(session, row, Reason.REASON_LOGOUT)
            fresh = (
                await session.execute(select(store.sessions).where(store.sessions.c.id == session_id))
            ).one()
            return self.d.sessions.to_proto(fresh)

        return await transact(self.d.db, scope("RevokeSession"), request, resources_pb2.Session, body)

    async def Logout(self, request: pb.LogoutRequest, context: grpc.aio.ServicerContext) -> empty_pb2.Empty:
        check = Checker()
        if check.require("refresh_token", request.refresh_token):
            check.length("refresh_token", request.refresh_token, max_len=512)
        check.raise_if_invalid()
        async with self.d.db.transaction() as session:
            row = await self.d.sessions.find_by_refresh_token(session, request.refresh_token)
            # Any token of the family ends it; unknown or already revoked: nothing to say (no oracle).
            if row is not None:
                await self.d.sessions.revoke(session, row, Reason.REASON_LOGOUT)
        return empty_pb2.Empty()

    async def RevokeAllSessions(
        self, request: pb.RevokeAllSessionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.RevokeAllSessionsResponse:
        check = Checker()
        _owner(check, "parent", request.parent)
        keep = ""
        if request.except_session:
            _session_name(check, "except_session", request.except_session)
            owner, keep = split_session_name(request.except_session)
            if request.parent and owner != request.parent:
                check.fail("except_session", "must be a session of parent", "INVALID_NAME")
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()

        async def body(session: AsyncSession) -> pb.RevokeAllSessionsResponse:
            await self._require_owner(session, request.parent)
            count = await self.d.sessions.revoke_all(
                session, request.parent, Reason.REASON_LOGOUT_ALL, keep=keep
            )
            return pb.RevokeAllSessionsResponse(revoked_count=count)

        return await transact(
            self.d.db, scope("RevokeAllSessions"), request, pb.RevokeAllSessionsResponse, body
        )


_ = datetime, UTC
