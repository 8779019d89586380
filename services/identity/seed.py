"""Demo principals for the local platform (``make run`` calls ``seed_demo`` after migrating).

Creates, idempotently (a second run changes nothing and reports the same credentials):
- customer ``demo@omni.local`` (verified primary e-mail, display name "Demo Customer");
- staff ``agent@omni.local`` (agent), ``associate@omni.local`` (store associate of
  ``locations/store-1``), ``marketer@omni.local`` (marketer), ``admin@omni.local`` (admin);
- service client ``web-backend`` (channel WEB, role service) with a fixed secret.
All passwords are ``DEMO_PASSWORD``. These credentials are for a developer's machine only;
nothing seeds them anywhere else. The customer's registration is announced like any other
(CustomerRegisteredEvent through the outbox) so that profile and preferences know it too.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from omni.identity.v1 import resources_pb2
from omni.type.v1 import channel_pb2
from omni_runtime.config import Settings
from omni_runtime.context import ChannelInfo
from omni_runtime.db.engine import Database
from omni_runtime.events.bus import EventBus
from omni_runtime.events.outbox import Outbox
from services.identity import domain, events, store
from services.identity.config import IdentityConfig
from services.identity.passwords import Passwords

DEMO_PASSWORD = "omni-demo-password"  # noqa: S105 - local demo only
DEMO_CUSTOMER_EMAIL = "demo@omni.local"
WEB_BACKEND_CLIENT_ID = "web-backend"
WEB_BACKEND_SECRET = "web-backend-local-secret"  # noqa: S105 - local platform only
STAFF = (
    ("agent@omni.local", "Demo Agent", ["agent"], ""),
    ("associate@omni.local", "Demo Store Associate", ["store_associate"], "locations/store-1"),
    ("marketer@omni.local", "Demo Marketer", ["marketer"], ""),
    ("admin@omni.local", "Demo Admin", ["admin"], ""),
)


async def _customer(db: Database, passwords: Passwords) -> str:
    async with db.transaction() as session:
        found = await store.identifier_by_key(session, domain.EMAIL, DEMO_CUSTOMER_EMAIL)
        if found is not None:
            return f"customers/{found.customer_id}"
    password_hash = await passwords.hash(DEMO_PASSWORD)
    customer_id = domain.new_id()
    now = datetime.now(UTC)
    # The outbox only writes a row in this transaction; the running identity service relays it.
    outbox = Outbox("identity", db, cast(EventBus, None))
    try:
        await _insert_customer(db, outbox, customer_id, password_hash, now)
    except _LostRace:
        return await _customer(db, passwords)
    return f"customers/{customer_id}"


class _LostRace(Exception):
    """A concurrent seed created the demo customer first."""


async def _insert_customer(
    db: Database, outbox: Outbox, customer_id: str, password_hash: str, now: datetime
) -> None:
    async with db.transaction() as session:
        await session.execute(
            store.customers.insert().values(
                id=customer_id,
                state=resources_pb2.Customer.STATE_ACTIVE,
                display_name="Demo Customer",
                password_hash=password_hash,
                origin_channel=channel_pb2.CHANNEL_WEB,
            )
        )
        inserted = await store.insert_identifier(
            session,
            {
                "id": domain.new_id(),
                "customer_id": customer_id,
                "kind": domain.EMAIL,
                "value": DEMO_CUSTOMER_EMAIL,
                "verified": True,
                "is_primary": True,
                "linked_by": "seed",
                "create_time": now,
                "verify_time": now,
            },
        )
        if not inserted:
            raise _LostRace
        # As a registration does: the linked e-mail, then the registration (preferences and
        # profile learn the verified address from the first).
        row = await store.identifier_by_key(session, domain.EMAIL, DEMO_CUSTOMER_EMAIL)
        await outbox.emit(session, events.identifier_linked(row))
        await outbox.emit(
            session,
            events.customer_registered(
                customer_id,
                "Demo Customer",
                [(domain.EMAIL, DEMO_CUSTOMER_EMAIL)],
                verified=True,
                upgraded=False,
                channel=ChannelInfo(channel=channel_pb2.CHANNEL_WEB),
            ),
        )


async def _staff(db: Database, passwords: Passwords) -> dict[str, str]:
    out: dict[str, str] = {}
    for email, display_name, roles, location in STAFF:
        async with db.transaction() as session:
            row = (
                await session.execute(
                    select(store.staff_members.c.id).where(store.staff_members.c.email == email)
                )
            ).first()
        if row is None:
            password_hash = await passwords.hash(DEMO_PASSWORD)
            async with db.transaction() as session:
                await session.execute(
                    insert(store.staff_members)
                    .values(
                        id=domain.new_id(),
                        email=email,
                        display_name=display_name,
                        roles=roles,
                        store=location,
                        state=resources_pb2.StaffMember.STATE_ACTIVE,
                        password_hash=password_hash,
                    )
                    .on_conflict_do_nothing(index_elements=["email"])
                )
                row = (
                    await session.execute(
                        select(store.staff_members.c.id).where(store.staff_members.c.email == email)
                    )
                ).one()
        out[email] = f"staffMembers/{row.id}"
    return out


async def _web_backend(db: Database, passwords: Passwords) -> None:
    async with db.transaction() as session:
        exists = (
            await session.execute(
                select(store.service_clients.c.id).where(store.service_clients.c.id == WEB_BACKEND_CLIENT_ID)
            )
        ).first()
    if exists is not None:
        return
    secret_hash = await passwords.hash(WEB_BACKEND_SECRET)
    async with db.transaction() as session:
        await session.execute(
            insert(store.service_clients)
            .values(
                id=WEB_BACKEND_CLIENT_ID,
                display_name="Web shop backend (local demo)",
                channel=channel_pb2.CHANNEL_WEB,
                state=resources_pb2.ServiceClient.STATE_ACTIVE,
                roles=["service"],
                secret_hash=secret_hash,
            )
            .on_conflict_do_nothing(index_elements=["id"])
        )


async def seed_demo(db: Database, *, settings: Settings | None = None) -> dict[str, Any]:
    """Create the demo principals (see the module docstring); returns them and printable lines.

    ``db`` is identity's (migrated) database. ``settings`` only tunes the password hashing.
    """
    config = IdentityConfig.from_settings(settings) if settings is not None else IdentityConfig()
    passwords = Passwords(config)
    customer = await _customer(db, passwords)
    staff = await _staff(db, passwords)
    await _web_backend(db, passwords)
    # How to get a token with each is printed by the local platform (omni_runtime.demo.examples).
    lines = [
        f"customer          {DEMO_CUSTOMER_EMAIL} / {DEMO_PASSWORD}  ({customer})",
        *(f"{roles[0]:<17} {email} / {DEMO_PASSWORD}  ({staff[email]})" for email, _, roles, _ in STAFF),
        f"channel backend   client_id {WEB_BACKEND_CLIENT_ID} / secret {WEB_BACKEND_SECRET}",
    ]
    return {
        "password": DEMO_PASSWORD,
        "customer": {"name": customer, "email": DEMO_CUSTOMER_EMAIL},
        "staff": {
            email: {"name": staff[email], "roles": roles, "store": location}
            for email, _, roles, location in STAFF
        },
        "service_client": {"client_id": WEB_BACKEND_CLIENT_ID, "secret": WEB_BACKEND_SECRET},
        "lines": lines,
    }
