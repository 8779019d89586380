"""Profiles and addresses: reads, updates under etags, request-id idempotency.

Every write locks the profile row first (``timeline.lock_profiles``), so an update, an address
change, a merge and the timeline's figure updates of one customer serialise on one row, while
different customers never wait on each other.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from google.protobuf import json_format
from sqlalchemy import Integer, cast, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from omni.profile.v1 import events_pb2 as ev
from omni.profile.v1 import profile_service_pb2 as svc
from omni.profile.v1 import resources_pb2 as r
from omni.type.v1 import channel_pb2
from omni_runtime.context import current_principal
from omni_runtime.db import idempotency
from omni_runtime.errors import Aborted, FailedPrecondition, NotFound
from omni_runtime.events.outbox import Outbox
from omni_runtime.listing import Field, Kind, Listing
from omni_runtime.server import Runtime
from omni_runtime.timestamps import to_proto, utcnow
from services.profile import convert
from services.profile.domain.profile import ensure_primaries, key, with_verified
from services.profile.segments import Segments
from services.profile.store import addresses, channel_usage, profiles, purchases
from services.profile.timeline import lock_profiles

DOMAIN = "omni.profile"
ACTIVE = r.Profile.STATE_ACTIVE

ADDRESSES = Listing(
    fields={
        "default_shipping": Field(Kind.BOOL, sql=addresses.c.default_shipping),
        "default_billing": Field(Kind.BOOL, sql=addresses.c.default_billing),
        "postal_address.region_code": Field(
            Kind.STRING, sql=addresses.c.postal_address["region_code"].astext
        ),
    },
    order_by={
        # Not documented as a field: the default order puts the default addresses first.
        "defaults": cast(or_(addresses.c.default_shipping, addresses.c.default_billing), Integer),
        "create_time": addresses.c.create_time,
        "update_time": addresses.c.update_time,
        "display_name": addresses.c.display_name,
    },
    default_order="defaults desc, update_time desc",
    tiebreak=(addresses.c.id,),
    domain=DOMAIN,
    max_page_size=100,
)


def not_active(customer: str, state: int) -> FailedPrecondition:
    word = r.Profile.State.Name(state).removeprefix("STATE_").lower()  # type: ignore[arg-type]
    return FailedPrecondition(
        f"the profile of customers/{customer} is {word}",
        reason=f"PROFILE_{word.upper()}",
        domain=DOMAIN,
        violations=[("PROFILE_STATE", convert.profile_name(customer), f"the profile is {word}")],
    )


async def profile_row(session: AsyncSession, customer: str, *, lock: bool = False) -> Any:
    if lock:
        await lock_profiles(session, [customer])
    return (await session.execute(select(profiles).where(profiles.c.customer == customer))).first()


async def usage_rows(session: AsyncSession, customer: str) -> list[Any]:
    orders = (
        select(purchases.c.channel, func.count().label("n"))
        .where(purchases.c.customer == customer, purchases.c.placed_time.is_not(None), ~purchases.c.cancelled)
        .group_by(purchases.c.channel)
        .subquery()
    )
    statement = (
        select(channel_usage, func.coalesce(orders.c.n, 0).label("order_count"))
        .outerjoin(orders, orders.c.channel == channel_usage.c.channel)
        .where(channel_usage.c.customer == customer)
        .order_by(channel_usage.c.last_seen.desc())
    )
    return list((await session.execute(statement)).all())


async def defaults(session: AsyncSession, customer: str) -> tuple[str, str]:
    rows = (
        await session.execute(
            select(addresses.c.id, addresses.c.default_shipping, addresses.c.default_billing).where(
                addresses.c.customer == customer,
                or_(addresses.c.default_shipping, addresses.c.default_billing),
            )
        )
    ).all()
    ship = next((row.id for row in rows if row.default_shipping), "")
    bill = next((row.id for row in rows if row.default_billing), "")
    return ship, bill


async def load(session: AsyncSession, customer: str) -> r.Profile:
    row = await profile_row(session, customer)
    if row is None:
        empty = convert.profile(None)
        empty.name = convert.profile_name(customer)
        return empty
    return convert.profile(
        row, usage=await usage_rows(session, customer), defaults=await defaults(session, customer)
    )


def profile_updated(customer: str, fields: Sequence[str], snapshot: r.Profile) -> ev.ProfileUpdatedEvent:
    return ev.ProfileUpdatedEvent(
        profile=convert.profile_name(customer),
        customer=f"customers/{customer}",
        changed_fields=list(fields),
        snapshot=snapshot,
        changed_by=current_principal.get().subject,
        occur_time=to_proto(utcnow()),
    )


def _columns(profile: r.Profile, paths: Sequence[str], current: Any) -> dict[str, Any]:
    """Column values for the masked fields of ``profile`` (validated by the servicer)."""
    values: dict[str, Any] = {}
    traits = dict(current.traits) if current is not None else {}
    for path in paths:
        if path in ("given_name", "family_name", "display_name", "language_code"):
            values[path] = getattr(profile, path).strip()
        elif path == "birthday":
            values |= {
                "birthday_year": profile.birthday.year,
                "birthday_month": profile.birthday.month,
                "birthday_day": profile.birthday.day,
            }
        elif path == "contact_points":
            verified = (
                {key(p) for p in convert.contact_points(current.contact_points) if p.verified}
                if current is not None
                else set()
            )
            points = with_verified(profile.contact_points, verified)
            values["contact_points"] = convert.contact_points_json(points)
            values["contact_kinds"] = sorted({p.kind for p in points})
        elif path == "traits":
            traits = dict(profile.traits)
        elif path.startswith("traits."):
            name = path.removeprefix("traits.")
            if name in profile.traits:
                traits[name] = profile.traits[name]
            else:
                traits.pop(name, None)
    if any(p == "traits" or p.startswith("traits.") for p in paths):
        values["traits"] = traits
    return values


class Profiles:
    def __init__(self, runtime: Runtime, segments: Segments) -> None:
        assert runtime.db is not None and runtime.outbox is not None
        self.db = runtime.db
        self.outbox: Outbox = runtime.outbox
        self.segments = segments

    async def get(self, customer: str) -> r.Profile:
        async with self.db.transaction() as session:
            return await load(session, customer)

    async def update(
        self, request: svc.UpdateProfileRequest, customer: str, paths: Sequence[str]
    ) -> r.Profile:
        async def work(session: AsyncSession) -> r.Profile:
            row = await profile_row(session, customer, lock=True)
            if row.state != ACTIVE:
                raise not_active(customer, row.state)
            if request.profile.etag and request.profile.etag != convert.etag(row.version):
                raise Aborted(
                    "the profile changed since it was read",
                    current_etag=convert.etag(row.version),
                    domain=DOMAIN,
                )
            await self.write(session, customer, _columns(request.profile, paths, row), paths)
            return await load(session, customer)

        return await idempotency.once(
            self.db, f"profile.UpdateProfile:{customer}", request.request_id, request, r.Profile, work
        )

    async def write(
        self, session: AsyncSession, customer: str, values: dict[str, Any], fields: Sequence[str]
    ) -> None:
        """Write profile fields of a locked row, bump its etag, publish ProfileUpdatedEvent and
        re-evaluate segments (the row must exist)."""
        now = utcnow()
        await session.execute(
            update(profiles)
            .where(profiles.c.customer == customer)
            .values(
                **values,
                version=profiles.c.version + 1,
                update_time=now,
                create_time=func.coalesce(profiles.c.create_time, now),
            )
        )
        await self.outbox.emit(session, profile_updated(customer, fields, await load(session, customer)))
        await self.segments.evaluate(session, [customer])

    async def sync_contact_point(
        self, session: AsyncSession, customer: str, point: r.ContactPoint, *, remove: bool = False
    ) -> None:
        """Mirror an identity identifier: add or refresh it (verified as identity says), or drop it."""
        row = await profile_row(session, customer, lock=True)
        if row.state != ACTIVE:
            return
        points = convert.contact_points(row.contact_points)
        others = [p for p in points if key(p) != key(point)]
        if not remove:
            existing = next((p for p in points if key(p) == key(point)), None)
            merged = r.ContactPoint()
            merged.CopyFrom(existing or point)
            merged.value = point.value
            merged.verified = point.verified
            if point.primary:
                for other in others:
                    if other.kind == point.kind:
                        other.primary = False
                merged.primary = True
            others.append(merged)
        new = ensure_primaries(others) if others else []
        if convert.contact_points_json(new) == list(row.contact_points):
            return
        await self.write(
            session,
            customer,
            {
                "contact_points": convert.contact_points_json(new),
                "contact_kinds": sorted({p.kind for p in new}),
            },
            ["contact_points"],
        )

    # -- addresses --------------------------------------------------------------------------

    async def _writable(self, session: AsyncSession, customer: str) -> Any:
        row = await profile_row(session, customer, lock=True)
        if row.state != ACTIVE:
            raise not_active(customer, row.state)
        return row

    async def _clear_defaults(
        self, session: AsyncSession, customer: str, keep: str, ship: bool, bill: bool
    ) -> None:
        if ship:
            await session.execute(
                update(addresses)
                .where(addresses.c.customer == customer, addresses.c.id != keep, addresses.c.default_shipping)
                .values(default_shipping=False, version=addresses.c.version + 1, update_time=utcnow())
            )
        if bill:
            await session.execute(
                update(addresses)
                .where(addresses.c.customer == customer, addresses.c.id != keep, addresses.c.default_billing)
                .values(default_billing=False, version=addresses.c.version + 1, update_time=utcnow())
            )

    async def create_address(self, request: svc.CreateAddressRequest, customer: str) -> r.Address:
        async def work(session: AsyncSession) -> r.Address:
            await self._writable(session, customer)
            first = (
                await session.execute(select(func.count()).where(addresses.c.customer == customer))
            ).scalar_one() == 0
            a = request.address
            ident = uuid.uuid4().hex[:16]
            now = utcnow()
            ship, bill = a.default_shipping or first, a.default_billing or first
            await self._clear_defaults(session, customer, ident, ship, bill)
            await session.execute(
                addresses.insert().values(
                    id=ident,
                    customer=customer,
                    origin=customer,
                    display_name=a.display_name.strip(),
                    postal_address=convert.postal_json(a.postal_address),
                    phone=a.phone.strip(),
                    instructions=a.instructions.strip(),
                    default_shipping=ship,
                    default_billing=bill,
                    version=1,
                    create_time=now,
                    update_time=now,
                )
            )
            return await self.address(session, customer, ident)

        return await idempotency.once(
            self.db, f"profile.CreateAddress:{customer}", request.request_id, request, r.Address, work
        )

    async def address(
        self, session: AsyncSession, customer: str, ident: str, *, lock: bool = False
    ) -> r.Address:
        statement = select(addresses).where(addresses.c.customer == customer, addresses.c.id == ident)
        row = (await session.execute(statement.with_for_update() if lock else statement)).first()
        if row is None:
            raise NotFound(f"customers/{customer}/addresses/{ident}", domain=DOMAIN)
        return convert.address(row)

    async def get_address(self, customer: str, ident: str) -> r.Address:
        async with self.db.transaction() as session:
            return await self.address(session, customer, ident)

    async def list_addresses(
        self, request: svc.ListAddressesRequest, customer: str
    ) -> svc.ListAddressesResponse:
        query = ADDRESSES.parse(request, scope=(customer,))
        async with self.db.transaction() as session:
            rows, token = await query.page(session, select(addresses).where(addresses.c.customer == customer))
        return svc.ListAddressesResponse(
            addresses=[convert.address(row) for row in rows], next_page_token=token
        )

    async def update_address(
        self, request: svc.UpdateAddressRequest, customer: str, ident: str, paths: Sequence[str]
    ) -> r.Address:
        async def work(session: AsyncSession) -> r.Address:
            await self._writable(session, customer)
            current = await self.address(session, customer, ident, lock=True)
            a = request.address
            if a.etag and a.etag != current.etag:
                raise Aborted(
                    "the address changed since it was read", current_etag=current.etag, domain=DOMAIN
                )
            values: dict[str, Any] = {}
            for path in paths:
                if path == "postal_address":
                    values["postal_address"] = convert.postal_json(a.postal_address)
                elif path in ("display_name", "phone", "instructions"):
                    values[path] = getattr(a, path).strip()
                elif path in ("default_shipping", "default_billing"):
                    values[path] = getattr(a, path)
            await self._clear_defaults(
                session,
                customer,
                ident,
                bool(values.get("default_shipping")),
                bool(values.get("default_billing")),
            )
            await session.execute(
                update(addresses)
                .where(addresses.c.id == ident)
                .values(**values, version=addresses.c.version + 1, update_time=utcnow())
            )
            return await self.address(session, customer, ident)

        return await idempotency.once(
            self.db, f"profile.UpdateAddress:{customer}", request.request_id, request, r.Address, work
        )

    async def delete_address(self, request: svc.DeleteAddressRequest, customer: str, ident: str) -> None:
        from google.protobuf import empty_pb2

        async def work(session: AsyncSession) -> empty_pb2.Empty:
            await self._writable(session, customer)
            current = await self.address(session, customer, ident, lock=True)
            if request.etag and request.etag != current.etag:
                raise Aborted(
                    "the address changed since it was read", current_etag=current.etag, domain=DOMAIN
                )
            await session.execute(addresses.delete().where(addresses.c.id == ident))
            return empty_pb2.Empty()

        await idempotency.once(
            self.db, f"profile.DeleteAddress:{customer}", request.request_id, request, empty_pb2.Empty, work
        )


def channel_context(value: channel_pb2.ChannelContext) -> dict[str, Any]:
    return json_format.MessageToDict(value, preserving_proto_field_name=True)
