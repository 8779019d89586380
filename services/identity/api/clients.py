"""Service clients (channel backends and Omni's own services), client-credentials tokens, JWKS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf import empty_pb2
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from omni.identity.v1 import identity_service_pb2 as pb
from omni.identity.v1 import resources_pb2
from omni.type.v1 import channel_pb2
from omni_runtime.context import channel_name
from omni_runtime.errors import Unauthenticated
from omni_runtime.listing import Field, Kind
from omni_runtime.validation import Checker
from services.identity import domain, store
from services.identity.api import convert
from services.identity.api.base import HandlerBase, Rows, check_etag, too_many_attempts
from services.identity.api.common import DOMAIN, identity_listing, scope, transact
from services.identity.sessions import Subject

ServiceClient = resources_pb2.ServiceClient
CLIENT_PATTERN = "serviceClients/{service_client}"
EDITABLE = ("display_name", "channel", "state", "token_lifetime")
MAX_PREVIOUS_SECRET_VALIDITY = timedelta(days=7)
_STATES = {v.name: v.number for v in ServiceClient.State.DESCRIPTOR.values if v.number}
_CHANNELS = {v.name: v.number for v in channel_pb2.Channel.DESCRIPTOR.values if v.number}
CLIENTS = identity_listing(
    fields={
        "state": Field(Kind.ENUM, _STATES, sql=store.service_clients.c.state),
        "channel": Field(Kind.ENUM, _CHANNELS, sql=store.service_clients.c.channel),
        "display_name": Field(Kind.STRING, sql=store.service_clients.c.display_name),
    },
    order_by={
        "display_name": store.service_clients.c.display_name,
        "create_time": store.service_clients.c.create_time,
    },
    default_order="display_name",
    tiebreak=[store.service_clients.c.id],
)


def invalid_client() -> Unauthenticated:
    return Unauthenticated("invalid client credentials", reason="INVALID_CLIENT_CREDENTIALS", domain=DOMAIN)


_CLIENT_ROWS = Rows(store.service_clients, "serviceClients/", convert.service_client)


class ClientHandlers(HandlerBase):
    def _check_fields(self, check: Checker, client: resources_pb2.ServiceClient, fields: set[str]) -> None:
        if "display_name" in fields and check.require("service_client.display_name", client.display_name):
            check.length("service_client.display_name", client.display_name, max_len=200)
        if "channel" in fields and client.channel not in (0, *_CHANNELS.values()):
            check.fail("service_client.channel", "is not a known channel", "INVALID_CHANNEL")
        if "state" in fields and client.state not in (0, *_STATES.values()):
            check.fail("service_client.state", "must be STATE_ACTIVE or STATE_DISABLED", "INVALID_STATE")
        if "token_lifetime" in fields and client.HasField("token_lifetime"):
            seconds = client.token_lifetime.seconds
            high = self.d.config.max_service_token_ttl
            if not 60 <= seconds <= high or client.token_lifetime.nanos:
                check.fail(
                    "service_client.token_lifetime",
                    f"must be whole seconds between 60 and {high}",
                    "OUT_OF_RANGE",
                )

    async def CreateServiceClient(
        self, request: pb.CreateServiceClientRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateServiceClientResponse:
        check = Checker()
        self._check_fields(check, request.service_client, set(EDITABLE))
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()
        secret = domain.new_client_secret()
        secret_hash = await self.d.passwords.hash(secret)
        client = request.service_client

        async def body(session: AsyncSession) -> pb.CreateServiceClientResponse:
            client_id = domain.new_id()
            await session.execute(
                store.service_clients.insert().values(
                    id=client_id,
                    display_name=client.display_name,
                    channel=client.channel,
                    state=client.state or ServiceClient.STATE_ACTIVE,
                    roles=["service"],
                    token_lifetime_seconds=client.token_lifetime.seconds
                    if client.HasField("token_lifetime")
                    else None,
                    secret_hash=secret_hash,
                )
            )
            return pb.CreateServiceClientResponse(
                service_client=await _CLIENT_ROWS.reload(session, client_id), client_secret=secret
            )

        return await transact(
            self.d.db, scope("CreateServiceClient"), request, pb.CreateServiceClientResponse, body
        )

    async def GetServiceClient(
        self, request: pb.GetServiceClientRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.ServiceClient:
        check = Checker()
        check.name("name", request.name, CLIENT_PATTERN)
        check.raise_if_invalid()
        async with self.d.db.transaction() as session:
            return convert.service_client(await _CLIENT_ROWS.row(session, request.name))

    async def ListServiceClients(
        self, request: pb.ListServiceClientsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListServiceClientsResponse:
        query = CLIENTS.parse(request)
        async with self.d.db.transaction() as session:
            rows, token = await query.page(session, select(store.service_clients))
        return pb.ListServiceClientsResponse(
            service_clients=[convert.service_client(r) for r in rows], next_page_token=token
        )

    async def UpdateServiceClient(
        self, request: pb.UpdateServiceClientRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.ServiceClient:
        check = Checker()
        check.name("service_client.name", request.service_client.name, CLIENT_PATTERN)
        paths = check.update_mask("update_mask", request.update_mask, EDITABLE, request.service_client)
        self._check_fields(check, request.service_client, set(paths))
        if "state" in paths and not request.service_client.state:
            check.fail("service_client.state", "must be STATE_ACTIVE or STATE_DISABLED", "INVALID_STATE")
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()
        name = request.service_client.name
        given = request.service_client

        async def body(session: AsyncSession) -> resources_pb2.ServiceClient:
            row = await _CLIENT_ROWS.row(session, name, for_update=True)
            check_etag(name, given.etag, row.version)
            values: dict[str, Any] = {}
            if "display_name" in paths:
                values["display_name"] = given.display_name
            if "channel" in paths:
                values["channel"] = given.channel
            if "state" in paths:
                values["state"] = given.state
            if "token_lifetime" in paths:
                values["token_lifetime_seconds"] = (
                    given.token_lifetime.seconds if given.HasField("token_lifetime") else None
                )
            if any(getattr(row, k) != v for k, v in values.items()):
                await _CLIENT_ROWS.bump(session, row.id, **values)
            return await _CLIENT_ROWS.reload(session, row.id)

        return await transact(
            self.d.db, scope("UpdateServiceClient"), request, resources_pb2.ServiceClient, body
        )

    async def DeleteServiceClient(
        self, request: pb.DeleteServiceClientRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        check = Checker()
        check.name("name", request.name, CLIENT_PATTERN)
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()

        async def body(session: AsyncSession) -> empty_pb2.Empty:
            row = await _CLIENT_ROWS.row(session, request.name, for_update=True)
            check_etag(request.name, request.etag, row.version)
            await session.execute(store.service_clients.delete().where(store.service_clients.c.id == row.id))
            return empty_pb2.Empty()

        return await transact(self.d.db, scope("DeleteServiceClient"), request, empty_pb2.Empty, body)

    async def RotateServiceClientSecret(
        self, request: pb.RotateServiceClientSecretRequest, context: grpc.aio.ServicerContext
    ) -> pb.RotateServiceClientSecretResponse:
        check = Checker()
        check.name("name", request.name, CLIENT_PATTERN)
        validity = request.previous_secret_validity.ToTimedelta()
        if validity < timedelta(0) or validity > MAX_PREVIOUS_SECRET_VALIDITY:
            check.fail("previous_secret_validity", "must be between 0 and 7 days", "OUT_OF_RANGE")
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()
        secret = domain.new_client_secret()
        secret_hash = await self.d.passwords.hash(secret)

        async def body(session: AsyncSession) -> pb.RotateServiceClientSecretResponse:
            row = await _CLIENT_ROWS.row(session, request.name, for_update=True)
            check_etag(request.name, request.etag, row.version)
            now = datetime.now(UTC)
            previous_expire = now + validity
            await _CLIENT_ROWS.bump(
                session,
                row.id,
                secret_hash=secret_hash,
                secret_create_time=now,
                previous_secret_hash=row.secret_hash if validity else None,
                previous_secret_expire_time=previous_expire if validity else None,
            )
            response = pb.RotateServiceClientSecretResponse(
                service_client=await _CLIENT_ROWS.reload(session, row.id), client_secret=secret
            )
            response.previous_secret_expire_time.FromDatetime(previous_expire)
            return response

        return await transact(
            self.d.db, scope("RotateServiceClientSecret"), request, pb.RotateServiceClientSecretResponse, body
        )

    async def IssueServiceToken(
        self, request: pb.IssueServiceTokenRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.AuthToken:
        check = Checker()
        if check.require("client_id", request.client_id):
            check.length("client_id", request.client_id, max_len=128)
        if check.require("client_secret", request.client_secret):
            check.length("client_secret", request.client_secret, max_len=512)
        check.raise_if_invalid()
        throttle = domain.throttle_key("client", 0, request.client_id)
        async with self.d.db.transaction() as session:
            blocked = await self.throttled_until(session, throttle)
            row = (
                await session.execute(
                    select(store.service_clients).where(store.service_clients.c.id == request.client_id)
                )
            ).first()
        if blocked is not None:
            raise too_many_attempts(blocked)
        now = datetime.now(UTC)
        ok = await self.d.passwords.verify(
            row.secret_hash if row is not None else None, request.client_secret
        )
        if (
            not ok
            and row is not None
            and row.previous_secret_hash
            and row.previous_secret_expire_time is not None
            and row.previous_secret_expire_time > now
        ):
            ok = await self.d.passwords.verify(row.previous_secret_hash, request.client_secret)
        if not ok or row is None or row.state != ServiceClient.STATE_ACTIVE:
            if not ok:
                async with self.d.db.transaction() as session:
                    await self.count_failure(session, throttle)
            raise invalid_client()
        subject = Subject(f"serviceClients/{row.id}", tuple(sorted(row.roles)))
        return self.d.sessions.auth_token(
            subject,
            channel=channel_name(row.channel) if row.channel else "",
            ttl=row.token_lifetime_seconds or self.d.config.service_token_ttl,
            kind="service",
        )

    async def GetJwks(
        self, request: pb.GetJwksRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetJwksResponse:
        keys = self.d.keyring.jwks()
        return pb.GetJwksResponse(keys=[resources_pb2.JsonWebKey(**key) for key in keys])
