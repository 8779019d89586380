"""The delivery schedule under failure and load, with only the replicas under test working it: a
worker killed in the middle of a batch (its SMTP transactions cut off before the mail server had
the message) leaves every due notification to be sent exactly once by the replica that takes
over; two replicas share one schedule without sending anything twice."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from omni.messaging.v1 import messaging_service_pb2 as svc
from omni.messaging.v1 import messaging_service_pb2_grpc
from omni.messaging.v1 import resources_pb2 as res
from omni.preferences.v1 import resources_pb2 as pref
from omni_runtime.auth.keys import StaticKeySource
from omni_runtime.config import Settings
from omni_runtime.db.engine import Database
from omni_runtime.testing.plugin import Infra, bearer
from omni_runtime.testing.services import RunningService
from tests.messaging.conftest import Sinks, eventually, messaging_replica, needs_preferences, rid
from tests.messaging.customers import EMAIL, Customer, known_by_both, new_customer

pytestmark = needs_preferences
Token = Callable[..., str]


def order_shipped(customer: Customer, n: int) -> svc.SendNotificationRequest:
    return svc.SendNotificationRequest(
        notification=res.Notification(
            customer=customer.name,
            template="templates/order-shipped",
            purpose=pref.CONTACT_PURPOSE_TRANSACTIONAL,
            params={"order_number": f"O-{n}", "tracking_reference": f"T{n}"},
        ),
        request_id=rid(),
    )


@pytest.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url, pool_size=2, max_overflow=2)
    yield database
    await database.close()


async def customers(
    infra: Infra, preferences: RunningService, db: Database, token: str, count: int
) -> list[Customer]:
    """Customers whose e-mail both projections know (a replica must be running to consume it)."""
    made = [await new_customer(infra.nats_url, preferences, token) for _ in range(count)]
    for customer in made:

        async def known(c: Customer = customer) -> bool:
            return await known_by_both(db, c)

        await eventually(known)
        await customer.preferences(EMAIL)
    return made


def kill(replica: RunningService) -> Awaitable[Any]:
    """Cancel every task of the replica where it stands (mid-send): nothing after it is recorded."""
    tasks = list(replica.host._tasks)
    replica.host._tasks.clear()
    for task in tasks:
        task.cancel()
    return asyncio.gather(*tasks, return_exceptions=True)


async def test_a_worker_killed_mid_batch_leaves_every_notification_sent_exactly_once(
    omni_infra: Infra,
    preferences: RunningService,
    db: Database,
    messaging_settings: Callable[..., Settings],
    key_source: StaticKeySource,
    make_token: Token,
    sinks: Sinks,
) -> None:
    token = make_token("serviceClients/web-backend", ["service"], ttl_seconds=3600)
    md = (*bearer(token), ("x-omni-channel", "web"))
    settings = messaging_settings(LEASE_SECONDS="1", SMTP_CONNECTIONS="3")
    names: list[str] = []
    sinks.smtp.holding.clear()
    try:
        async with messaging_replica(settings, key_source, make_token) as doomed:
            people = await customers(omni_infra, preferences, db, token, 4)
            sinks.smtp.hold = asyncio.Event()  # every SMTP transaction waits: the batch is caught mid-send
            stub = messaging_service_pb2_grpc.MessagingServiceStub(doomed.channel)
            for i in range(20):
                names.append((await stub.SendNotification(order_shipped(people[i % 4], i), metadata=md)).name)
            await asyncio.wait_for(sinks.smtp.holding.wait(), 10)
            await kill(doomed)
    finally:
        hold, sinks.smtp.hold = sinks.smtp.hold, None
        if hold is not None:
            hold.set()
    assert not [m for c in people for m in sinks.smtp.to(c.email)], (
        "the mail server had nothing when the worker died"
    )

    async with messaging_replica(settings, key_source, make_token) as survivor:
        stub = messaging_service_pb2_grpc.MessagingServiceStub(survivor.channel)

        async def all_sent() -> bool:
            for name in names:
                found = await stub.GetNotification(svc.GetNotificationRequest(name=name), metadata=md)
                if found.state != res.NOTIFICATION_STATE_SENT:
                    return False
            return True

        await eventually(all_sent, 30)
        await asyncio.sleep(0.5)  # a duplicate would have arrived by now
        resumed = await stub.GetNotification(svc.GetNotificationRequest(name=names[0]), metadata=md)
    mails = [m for c in people for m in sinks.smtp.to(c.email)]
    assert sorted(str(m["Subject"]).split()[2] for m in mails) == sorted(f"O-{i}" for i in range(20))
    assert len({str(m["Message-ID"]) for m in mails}) == 20
    # The attempt the dead worker began was resumed with its idempotency key, not duplicated.
    assert [a.state for a in resumed.attempts] == [res.DELIVERY_ATTEMPT_STATE_SENT]


async def test_two_replicas_share_the_schedule_without_duplicates(
    omni_infra: Infra,
    preferences: RunningService,
    db: Database,
    messaging_settings: Callable[..., Settings],
    key_source: StaticKeySource,
    make_token: Token,
    sinks: Sinks,
) -> None:
    token = make_token("serviceClients/web-backend", ["service"], ttl_seconds=3600)
    md = (*bearer(token), ("x-omni-channel", "web"))
    async with contextlib.AsyncExitStack() as stack:
        replicas = [
            await stack.enter_async_context(messaging_replica(messaging_settings(), key_source, make_token))
            for _ in range(2)
        ]
        people = await customers(omni_infra, preferences, db, token, 5)
        stubs = [messaging_service_pb2_grpc.MessagingServiceStub(r.channel) for r in replicas]
        await asyncio.gather(
            *(
                stubs[i % 2].SendNotification(order_shipped(people[i % 5], 100 + i), metadata=md)
                for i in range(60)
            )
        )

        async def delivered() -> bool:
            return sum(len(sinks.smtp.to(c.email)) for c in people) >= 60

        await eventually(delivered, 30)
        await asyncio.sleep(0.5)
    mails = [m for c in people for m in sinks.smtp.to(c.email)]
    assert len(mails) == 60 and len({str(m["Subject"]) for m in mails}) == 60
