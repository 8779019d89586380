"""Customers' ways in: registration, password and one-time-code log-in, guests, refresh, password
change.

Log-in never tells which part was wrong and costs the same whether the account exists: unknown
identifiers are verified against a dummy hash, and the per-identifier back-off applies to
unknown identifiers exactly as to known ones. Argon2 runs outside database transactions so a
slow hash never holds a pooled connection.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf import empty_pb2
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from omni.identity.v1 import identity_service_pb2 as pb
from omni.identity.v1 import resources_pb2
from omni_runtime.context import current_channel, current_principal
from omni_runtime.db.idempotency import recall
from omni_runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    OmniError,
    Unauthenticated,
)
from omni_runtime.validation import Checker
from services.identity import domain, events, metrics, store
from services.identity.api.base import (
    Customer,
    HandlerBase,
    customer_locked,
    identifier_key,
    invalid_credentials,
    new_password,
    too_many_attempts,
)
from services.identity.api.common import DOMAIN, client_info, scope, transact
from services.identity.sessions import Reason, Subject, split_session_name

PASSWORD = resources_pb2.AUTH_METHOD_PASSWORD
ONE_TIME_CODE = resources_pb2.AUTH_METHOD_ONE_TIME_CODE
GUEST = resources_pb2.AUTH_METHOD_GUEST
LOGIN_PURPOSE = resources_pb2.ONE_TIME_CODE_PURPOSE_LOGIN
# ChangePassword without the current password: only this soon after a one-time-code log-in.
RECENT_CODE_LOGIN = timedelta(minutes=10)


def _locked(row: Any, now: datetime) -> bool:
    return bool(
        row.state == Customer.STATE_LOCKED or (row.locked_until is not None and row.locked_until > now)
    )


class AuthHandlers(HandlerBase):
    async def _clear_failures(self, session: AsyncSession, customer_id: str, key: bytes) -> None:
        """A successful log-in ends the back-off; not a change of the resource (etag unchanged)."""
        await store.clear_throttle(session, key)
        await session.execute(
            update(store.customers)
            .where(store.customers.c.id == customer_id)
            .values(failed_logins=0, locked_until=None)
        )

    async def _device_keys(self, session: AsyncSession, customer_id: str) -> list[tuple[int, str]]:
        rows = await store.customer_identifiers(session, customer_id)
        return [(r.kind, r.value) for r in rows if r.kind == domain.DEVICE_ID]

    async def _register(
        self,
        session: AsyncSession,
        *,
        kind: int,
        value: str,
        display_name: str,
        password_hash: str | None,
        verified: bool,
        guest_id: str | None,
    ) -> str:
        """Create (or upgrade the guest into) an ACTIVE customer holding ``(kind, value)``."""
        now = datetime.now(UTC)
        channel = current_channel.get()
        customer_id = guest_id or domain.new_id()
        held = await store.identifier_by_key(session, kind, value, for_update=True)
        if held is not None and not held.verified and held.customer_id != customer_id:
            holder = await store.customer(session, held.customer_id)
            if holder is not None and holder.state == Customer.STATE_GUEST:
                # An unverified handle a guest got from a message never blocks a registration;
                # the guest keeps its history (a profile merge can join them later).
                await self.claim_from(session, held)
        if guest_id is None:
            await session.execute(
                store.customers.insert().values(
                    id=customer_id,
                    state=Customer.STATE_ACTIVE,
                    display_name=display_name,
                    password_hash=password_hash,
                    origin_channel=channel.channel,
                    origin_store=channel.store,
                    origin_device=channel.device,
                    create_time=now,
                    update_time=now,
                )
            )
        values = self.identifier_values(
            customer_id,
            kind,
            value,
            verified=verified,
            primary=True,
            linked_by=f"customers/{customer_id}",
            channel=channel,
            now=now,
        )
        if not await store.insert_identifier(session, values):
            metrics.REGISTRATIONS.labels("identifier_taken").inc()
            raise AlreadyExists(
                "this e-mail address or phone number already belongs to an account",
                reason="IDENTIFIER_ALREADY_LINKED",
                domain=DOMAIN,
                metadata={"kind": resources_pb2.IdentifierKind.Name(kind)},  # type: ignore[arg-type]
            )
        if guest_id is not None:
            guest = await store.customer(session, guest_id)
            assert guest is not None
            await store.bump_customer(
                session,
                guest_id,
                state=Customer.STATE_ACTIVE,
                password_hash=password_hash,
                display_name=display_name or guest.display_name,
                register_time=now,
            )
        row = await store.identifier_by_key(session, kind, value)
        await self.d.outbox.emit(session, events.identifier_linked(row))
        keys = [(kind, value), *(await self._device_keys(session, customer_id))]
        await self.d.outbox.emit(
            session,
            events.customer_registered(
                customer_id,
                display_name,
                keys,
                verified=verified,
                upgraded=guest_id is not None,
                channel=channel,
            ),
        )
        if guest_id is not None:
            await self.d.outbox.emit(
                session, events.guest_upgraded(guest_id, customer_id, merged=False, channel=channel)
            )
        metrics.REGISTRATIONS.labels("upgraded_guest" if guest_id else "created").inc()
        return customer_id

    # -- RegisterCustomer ---------------------------------------------------------------------

    async def RegisterCustomer(
        self, request: pb.RegisterCustomerRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterCustomerResponse:
        check = Checker()
        key = identifier_key(check, "identifier", request.identifier, domain.LOGIN_KINDS)
        new_password(check, "password", request.password)
        check.length("display_name", request.display_name, max_len=200)
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()
        assert key is not None
        kind, value = key
        password_hash = await self.d.passwords.hash(request.password)
        client = client_info(context)

        async def body(session: AsyncSession) -> pb.RegisterCustomerResponse:
            guest_id = (
                await self.guest_from_token(session, request.guest_token) if request.guest_token else None
            )
            customer_id = await self._register(
                session,
                kind=kind,
                value=value,
                display_name=request.display_name,
                password_hash=password_hash,
                verified=False,
                guest_id=guest_id,
            )
            token = await self.d.sessions.open(
                session,
                Subject(f"customers/{customer_id}", ("customer",)),
                PASSWORD,
                current_channel.get(),
                client,
            )
            response = pb.RegisterCustomerResponse(
                customer=await self.reload_customer(session, customer_id), token=token
            )
            if guest_id is not None:
                response.guest_resolution.CopyFrom(self.resolution(guest_id, customer_id, merged=False))
            return response

        return await transact(
            self.d.db, scope("RegisterCustomer", per_caller=False), request, pb.RegisterCustomerResponse, body
        )

    # -- Login ----------------------------------------------------------------------------------

    async def Login(self, request: pb.LoginRequest, context: grpc.aio.ServicerContext) -> pb.LoginResponse:
        check = Checker()
        key = identifier_key(check, "identifier", request.identifier, domain.LOGIN_KINDS)
        if check.require("password", request.password):
            check.length("password", request.password, max_len=domain.MAX_PASSWORD_LENGTH)
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()
        assert key is not None
        kind, value = key
        throttle = domain.throttle_key("customer", kind, value)
        scope_name = scope("Login", per_caller=False)
        db = self.d.db

        async with db.transaction() as session:
            if request.request_id:
                prior = await recall(session, scope_name, request.request_id, request, pb.LoginResponse)
                if prior is not None:
                    return prior
            blocked = await self.throttled_until(session, throttle)
            ident = None if blocked else await store.identifier_by_key(session, kind, value)
            row = await store.customer(session, ident.customer_id) if ident is not None else None
        if blocked is not None:
            metrics.LOGINS.labels("throttled").inc()
            raise too_many_attempts(blocked)
        usable = row is not None and row.state in (Customer.STATE_ACTIVE, Customer.STATE_LOCKED)
        stored_hash = row.password_hash if usable and row is not None else None
        if not await self.d.passwords.verify(stored_hash, request.password):
            async with db.transaction() as session:
                account = (store.customers, row.id) if stored_hash is not None and row is not None else None
                await self.count_failure(session, throttle, account)
            metrics.LOGINS.labels("bad_credentials" if stored_hash else "unknown_identifier").inc()
            raise invalid_credentials()
        assert row is not None and stored_hash is not None
        rehashed = (
            await self.d.passwords.hash(request.password)
            if self.d.passwords.needs_rehash(stored_hash)
            else None
        )
        client = client_info(context)

        async def body(session: AsyncSession) -> pb.LoginResponse | OmniError:
            now = datetime.now(UTC)
            current = await store.customer_for_update(session, row.id)
            if current is None or current.password_hash != stored_hash:
                return invalid_credentials()  # the password changed while we were hashing
            if _locked(current, now):
                metrics.LOGINS.labels("locked").inc()
                return customer_locked()
            if current.state != Customer.STATE_ACTIVE:
                return invalid_credentials()
            guest_id = (
                await self.guest_from_token(session, request.guest_token) if request.guest_token else None
            )
            await self._clear_failures(session, row.id, throttle)
            if rehashed is not None:
                await session.execute(
                    update(store.customers)
                    .where(store.customers.c.id == row.id)
                    .values(password_hash=rehashed)
                )
            if guest_id is not None:
                await self.merge_guest(session, guest_id, row.id)
            token = await self.d.sessions.open(
                session,
                Subject(f"customers/{row.id}", ("customer",)),
                PASSWORD,
                current_channel.get(),
                client,
            )
            response = pb.LoginResponse(customer=await self.customer_proto(session, current), token=token)
            if guest_id is not None:
                response.guest_resolution.CopyFrom(self.resolution(guest_id, row.id, merged=True))
            metrics.LOGINS.labels("success").inc()
            return response

        return await transact(db, scope_name, request, pb.LoginResponse, body)

    # -- one-time codes -------------------------------------------------------------------------

    async def StartOneTimeCodeLogin(
        self, request: pb.StartOneTimeCodeLoginRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.OneTimeCodeChallenge:
        check = Checker()
        key = identifier_key(check, "destination", request.destination, domain.LOGIN_KINDS)
        check.length("language_code", request.language_code, max_len=35)
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()
        assert key is not None
        kind, value = key

        async def body(session: AsyncSession) -> resources_pb2.OneTimeCodeChallenge | OmniError:
            ident = await store.identifier_by_key(session, kind, value)
            holder = (
                await store.customer(session, ident.customer_id)
                if ident is not None and ident.verified
                else None
            )
            known = holder is not None and holder.state in (Customer.STATE_ACTIVE, Customer.STATE_LOCKED)
            held_verified = ident is not None and ident.verified
            return await self.issue_challenge(
                session,
                purpose=LOGIN_PURPOSE,
                kind=kind,
                value=value,
                customer_id=holder.id if known and holder is not None else None,
                real=known or (request.allow_registration and not held_verified),
                allow_registration=request.allow_registration,
                language_code=request.language_code,
            )

        return await transact(
            self.d.db,
            scope("StartOneTimeCodeLogin", per_caller=False),
            request,
            resources_pb2.OneTimeCodeChallenge,
            body,
        )

    async def VerifyOneTimeCode(
        self, request: pb.VerifyOneTimeCodeRequest, context: grpc.aio.ServicerContext
    ) -> pb.VerifyOneTimeCodeResponse:
        check = Checker()
        if check.require("challenge_id", request.challenge_id):
            check.length("challenge_id", request.challenge_id, max_len=64)
        if check.require("code", request.code):
            check.length("code", request.code, max_len=16)
        check.length("display_name", request.display_name, max_len=200)
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()
        client = client_info(context)

        async def body(session: AsyncSession) -> pb.VerifyOneTimeCodeResponse | OmniError:
            challenge = await self.answer_challenge(
                session, request.challenge_id, request.code, LOGIN_PURPOSE
            )
            if isinstance(challenge, OmniError):
                return challenge
            guest_id = (
                await self.guest_from_token(session, request.guest_token) if request.guest_token else None
            )
            now = datetime.now(UTC)
            channel = current_channel.get()
            ident = await store.identifier_by_key(session, challenge.kind, challenge.value, for_update=True)
            if ident is not None and ident.verified:
                holder = await store.customer_for_update(session, ident.customer_id)
                assert holder is not None
                if _locked(holder, now):
                    return customer_locked()
                if holder.state != Customer.STATE_ACTIVE:
                    return Unauthenticated(
                        "the code is wrong or has expired", reason="INVALID_ONE_TIME_CODE", domain=DOMAIN
                    )
                await self._clear_failures(
                    session, holder.id, domain.throttle_key("customer", challenge.kind, challenge.value)
                )
                if guest_id is not None:
                    await self.merge_guest(session, guest_id, holder.id)
                token = await self.d.sessions.open(
                    session, Subject(f"customers/{holder.id}", ("customer",)), ONE_TIME_CODE, channel, client
                )
                response = pb.VerifyOneTimeCodeResponse(
                    customer=await self.customer_proto(session, holder), token=token, registered=False
                )
                if guest_id is not None:
                    response.guest_resolution.CopyFrom(self.resolution(guest_id, holder.id, merged=True))
                return response
            if not challenge.allow_registration:
                return Unauthenticated(
                    "the code is wrong or has expired", reason="INVALID_ONE_TIME_CODE", domain=DOMAIN
                )
            if ident is not None:
                holder = await store.customer(session, ident.customer_id)
                await self.claim_from(session, ident)
                if guest_id is None and holder is not None and holder.state == Customer.STATE_GUEST:
                    # A guest made for messages from this address or number (ResolveIdentity's
                    # create_guest): the code proves it is this person's, so its history follows.
                    guest_id = holder.id
            customer_id = await self._register(
                session,
                kind=challenge.kind,
                value=challenge.value,
                display_name=request.display_name,
                password_hash=None,
                verified=True,
                guest_id=guest_id,
            )
            token = await self.d.sessions.open(
                session, Subject(f"customers/{customer_id}", ("customer",)), ONE_TIME_CODE, channel, client
            )
            response = pb.VerifyOneTimeCodeResponse(
                customer=await self.reload_customer(session, customer_id), token=token, registered=True
            )
            if guest_id is not None:
                response.guest_resolution.CopyFrom(self.resolution(guest_id, customer_id, merged=False))
            return response

        return await transact(
            self.d.db,
            scope("VerifyOneTimeCode", per_caller=False),
            request,
            pb.VerifyOneTimeCodeResponse,
            body,
        )

    # -- guests -------------------------------------------------------------------------------

    async def CreateGuest(
        self, request: pb.CreateGuestRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateGuestResponse:
        check = Checker()
        device = ""
        if request.device_id:
            try:
                device = domain.normalize(domain.DEVICE_ID, request.device_id)
            except domain.InvalidIdentifier as exc:
                check.fail("device_id", str(exc), "INVALID_IDENTIFIER")
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()
        client = client_info(context)

        async def existing_guest(session: AsyncSession) -> Any:
            ident = await store.identifier_by_key(session, domain.DEVICE_ID, device)
            if ident is None:
                return None, False
            holder = await store.customer(session, ident.customer_id)
            return (holder if holder is not None and holder.state == Customer.STATE_GUEST else None), True

        async def reuse(session: AsyncSession, guest: Any) -> pb.CreateGuestResponse:
            token = await self.d.sessions.open(
                session,
                Subject(f"customers/{guest.id}", ("guest",), guest=True),
                GUEST,
                current_channel.get(),
                client,
            )
            return pb.CreateGuestResponse(
                customer=await self.customer_proto(session, guest), token=token, created=False
            )

        async def body(session: AsyncSession) -> pb.CreateGuestResponse:
            now = datetime.now(UTC)
            channel = current_channel.get()
            link_device = bool(device)
            if device:
                guest, taken = await existing_guest(session)
                if guest is not None:
                    return await reuse(session, guest)
                link_device = not taken  # a registered customer's device: not linked to the guest
            guest_id = domain.new_id()
            await session.execute(
                store.customers.insert().values(
                    id=guest_id,
                    state=Customer.STATE_GUEST,
                    origin_channel=channel.channel,
                    origin_store=channel.store,
                    origin_device=channel.device or device,
                    create_time=now,
                    update_time=now,
                )
            )
            if link_device:
                values = self.identifier_values(
                    guest_id,
                    domain.DEVICE_ID,
                    device,
                    verified=True,
                    primary=True,
                    linked_by=f"customers/{guest_id}",
                    channel=channel,
                    now=now,
                )
                if not await store.insert_identifier(session, values):
                    # A concurrent CreateGuest for the same device won: answer with its guest.
                    await session.execute(store.customers.delete().where(store.customers.c.id == guest_id))
                    guest, _ = await existing_guest(session)
                    if guest is not None:
                        return await reuse(session, guest)
                else:
                    row = await store.identifier_by_key(session, domain.DEVICE_ID, device)
                    await self.d.outbox.emit(session, events.identifier_linked(row))
            token = await self.d.sessions.open(
                session, Subject(f"customers/{guest_id}", ("guest",), guest=True), GUEST, channel, client
            )
            return pb.CreateGuestResponse(
                customer=await self.reload_customer(session, guest_id), token=token, created=True
            )

        return await transact(
            self.d.db, scope("CreateGuest", per_caller=False), request, pb.CreateGuestResponse, body
        )

    # -- refresh --------------------------------------------------------------------------------

    async def RefreshToken(
        self, request: pb.RefreshTokenRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.AuthToken:
        check = Checker()
        if check.require("refresh_token", request.refresh_token):
            check.length("refresh_token", request.refresh_token, max_len=512)
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()

        async def body(session: AsyncSession) -> resources_pb2.AuthToken | OmniError:
            return await self.d.sessions.refresh(session, request.refresh_token)

        return await transact(
            self.d.db, scope("RefreshToken", per_caller=False), request, resources_pb2.AuthToken, body
        )

    # -- ChangePassword -----------------------------------------------------------------------

    async def ChangePassword(
        self, request: pb.ChangePasswordRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        principal = current_principal.get()
        check = Checker()
        new_password(check, "new_password", request.new_password)
        check.length("current_password", request.current_password, max_len=domain.MAX_PASSWORD_LENGTH)
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()
        collection, _, ident = principal.subject.partition("/")
        tables = {"customers": store.customers, "staffMembers": store.staff_members}
        table = tables.get(collection)
        if table is None:
            raise FailedPrecondition(
                "only customers and staff members have passwords", reason="NO_PASSWORD", domain=DOMAIN
            )
        throttle = domain.throttle_key("change-password", 0, principal.subject)
        async with self.d.db.transaction() as session:
            row = (await session.execute(select(table).where(table.c.id == ident))).first()
            blocked = await self.throttled_until(session, throttle)
            session_row = None
            if principal.session:
                _, session_id = split_session_name(principal.session)
                session_row = (
                    await session.execute(select(store.sessions).where(store.sessions.c.id == session_id))
                ).first()
        if row is None or (table is store.customers and row.state != Customer.STATE_ACTIVE):
            raise FailedPrecondition(
                "guests and closed accounts have no password to change; register first",
                reason="NO_PASSWORD",
                domain=DOMAIN,
            )
        if blocked is not None:
            raise too_many_attempts(blocked)
        if request.current_password:
            if not await self.d.passwords.verify(row.password_hash, request.current_password):
                async with self.d.db.transaction() as session:
                    await self.count_failure(session, throttle)
                raise InvalidArgument(
                    [FieldViolation("current_password", "is not the current password", "INVALID_CREDENTIALS")]
                )
        else:
            recent = (
                session_row is not None
                and session_row.auth_method == ONE_TIME_CODE
                and session_row.principal == principal.subject
                and session_row.create_time > datetime.now(UTC) - RECENT_CODE_LOGIN
            )
            if not recent:
                raise InvalidArgument(
                    [
                        FieldViolation(
                            "current_password",
                            "is required unless the session was opened with a one-time code "
                            "in the last ten minutes",
                            "REQUIRED",
                        )
                    ]
                )
        new_hash = await self.d.passwords.hash(request.new_password)

        async def body(session: AsyncSession) -> empty_pb2.Empty:
            await session.execute(
                update(table)
                .where(table.c.id == ident)
                .values(password_hash=new_hash, update_time=datetime.now(UTC), version=table.c.version + 1)
            )
            await store.clear_throttle(session, throttle)
            if request.revoke_other_sessions:
                keep = split_session_name(principal.session)[1] if principal.session else ""
                await self.d.sessions.revoke_all(
                    session, principal.subject, Reason.REASON_PASSWORD_CHANGED, keep=keep
                )
            return empty_pb2.Empty()

        return await transact(self.d.db, scope("ChangePassword"), request, empty_pb2.Empty, body)
