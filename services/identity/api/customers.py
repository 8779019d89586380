"""The customer resource: read, rename, lock/unlock (staff), erase (GDPR)."""

from __future__ import annotations

import grpc
from sqlalchemy.ext.asyncio import AsyncSession

from omni.identity.v1 import identity_service_pb2 as pb
from omni.identity.v1 import resources_pb2
from omni_runtime.context import current_principal
from omni_runtime.errors import FailedPrecondition, NotFound
from omni_runtime.validation import Checker
from services.identity import store
from services.identity.api import convert
from services.identity.api.base import CUSTOMER_PATTERN, Customer, HandlerBase, check_etag, customer_is_guest
from services.identity.api.common import DOMAIN, scope, transact
from services.identity.erasure import erase_customer
from services.identity.sessions import Reason


class CustomerHandlers(HandlerBase):
    async def GetCustomer(
        self, request: pb.GetCustomerRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.Customer:
        check = Checker()
        check.name("name", request.name, CUSTOMER_PATTERN)
        check.raise_if_invalid()
        async with self.d.db.read() as reader:
            row = await store.customer_view(reader, request.name.removeprefix("customers/"))
        if row is None:
            raise NotFound(request.name, domain=DOMAIN)
        return convert.customer(row, row.primary_email or "", row.primary_phone or "")

    async def UpdateCustomer(
        self, request: pb.UpdateCustomerRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.Customer:
        check = Checker()
        check.name("customer.name", request.customer.name, CUSTOMER_PATTERN)
        paths = check.update_mask("update_mask", request.update_mask, ["display_name"], request.customer)
        check.length("customer.display_name", request.customer.display_name, max_len=200)
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()
        name = request.customer.name

        async def body(session: AsyncSession) -> resources_pb2.Customer:
            row = await self.customer_row(session, name, for_update=True, usable=True)
            check_etag(name, request.customer.etag, row.version)
            if "display_name" in paths and request.customer.display_name != row.display_name:
                await store.bump_customer(session, row.id, display_name=request.customer.display_name)
            return await self.reload_customer(session, row.id)

        return await transact(self.d.db, scope("UpdateCustomer"), request, resources_pb2.Customer, body)

    async def LockCustomer(
        self, request: pb.LockCustomerRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.Customer:
        check = Checker()
        check.name("name", request.name, CUSTOMER_PATTERN)
        check.length("reason", request.reason, max_len=500)
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()

        async def body(session: AsyncSession) -> resources_pb2.Customer:
            row = await self.customer_row(session, request.name, for_update=True, usable=True)
            check_etag(request.name, request.etag, row.version)
            if row.state == Customer.STATE_GUEST:
                raise customer_is_guest(request.name, "a guest cannot be locked")
            if row.state != Customer.STATE_LOCKED:
                await store.bump_customer(
                    session,
                    row.id,
                    state=Customer.STATE_LOCKED,
                    lock_reason=request.reason or "locked by staff",
                )
                await self.d.sessions.revoke_all(session, request.name, Reason.REASON_PRINCIPAL_DISABLED)
            return await self.reload_customer(session, row.id)

        return await transact(self.d.db, scope("LockCustomer"), request, resources_pb2.Customer, body)

    async def UnlockCustomer(
        self, request: pb.UnlockCustomerRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.Customer:
        check = Checker()
        check.name("name", request.name, CUSTOMER_PATTERN)
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()

        async def body(session: AsyncSession) -> resources_pb2.Customer:
            row = await self.customer_row(session, request.name, for_update=True, usable=True)
            check_etag(request.name, request.etag, row.version)
            if row.state == Customer.STATE_GUEST:
                raise customer_is_guest(request.name, "a guest is never locked")
            if row.state == Customer.STATE_LOCKED or row.locked_until is not None or row.failed_logins:
                await store.bump_customer(
                    session,
                    row.id,
                    state=Customer.STATE_ACTIVE,
                    failed_logins=0,
                    locked_until=None,
                    lock_reason="",
                )
            return await self.reload_customer(session, row.id)

        return await transact(self.d.db, scope("UnlockCustomer"), request, resources_pb2.Customer, body)

    async def EraseCustomer(
        self, request: pb.EraseCustomerRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.Customer:
        check = Checker()
        check.name("name", request.name, CUSTOMER_PATTERN)
        check.length("reason", request.reason, max_len=500)
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()
        requested_by = current_principal.get().subject

        async def body(session: AsyncSession) -> resources_pb2.Customer:
            row = await self.customer_row(session, request.name, for_update=True)
            if row.state == Customer.STATE_ERASED:
                return await self.customer_proto(session, row)
            check_etag(request.name, request.etag, row.version)
            if row.state == Customer.STATE_MERGED:
                raise FailedPrecondition(
                    "a merged guest holds no data of its own; erase the customer it was merged into",
                    reason="CUSTOMER_NOT_USABLE",
                    domain=DOMAIN,
                    violations=[("STATE", request.name, "the customer is in state STATE_MERGED")],
                )
            await erase_customer(session, self.d.outbox, self.d.sessions, row, requested_by)
            return await self.reload_customer(session, row.id)

        return await transact(self.d.db, scope("EraseCustomer"), request, resources_pb2.Customer, body)
