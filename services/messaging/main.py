"""Wiring of the messaging service into the shared runtime (nothing else lives here).

``definition(clock=…)`` lets tests run the real service on a clock they move; ``SERVICE`` is the
one ``omni serve messaging`` runs.
"""

from __future__ import annotations

import logging

import grpc

from omni.messaging.v1 import events_pb2 as messaging_events
from omni.messaging.v1 import messaging_service_pb2_grpc
from omni_runtime.events.erasure import consume_erasures
from omni_runtime.server import Runtime, ServiceDefinition
from services.messaging import contacts, defaults, metrics, template_admin
from services.messaging.adapters.identity import IdentityClient
from services.messaging.adapters.preferences import PreferencesClient
from services.messaging.api import MessagingServicer
from services.messaging.config import MessagingConfig, Providers
from services.messaging.erasure import eraser
from services.messaging.reactions import (
    CONFIRMATION_REQUESTED,
    CONSENT_CHANGED,
    ONE_TIME_CODE_ISSUED,
    ORDER_CANCELLED,
    ORDER_PLACED,
    ORDER_READY,
    ORDER_SHIPPED,
    SUBSCRIPTION_FIRED,
    Reactions,
)
from services.messaging.schedule import DeliveryWorker
from services.messaging.unit import Clock, SystemClock, Unit

log = logging.getLogger("omni.messaging")


def definition(clock: Clock | None = None) -> ServiceDefinition:
    async def register(server: grpc.aio.Server, runtime: Runtime) -> None:
        if runtime.db is None or runtime.outbox is None:
            raise RuntimeError("the messaging service needs its database and the event bus")
        config = MessagingConfig.from_settings(runtime.settings)
        providers = Providers(config.build_providers(), config.channel_providers)
        unit = Unit(
            db=runtime.db,
            outbox=runtime.outbox,
            config=config,
            providers=providers,
            preferences=PreferencesClient(runtime.peers),
            identity=IdentityClient(runtime.peers),
            clock=clock or SystemClock(),
        )
        if config.seed_default_templates:
            async with runtime.db.transaction() as session:
                created = await template_admin.ensure(session, defaults.DEFAULT_TEMPLATES)
            if created:
                log.info("created %d default template(s)", created)
        log.info("providers: %s", providers.describe())
        metrics.initialise_providers({c: [p.name for p in ps] for c, ps in providers.by_channel.items()})
        messaging_service_pb2_grpc.add_MessagingServiceServicer_to_server(MessagingServicer(unit), server)  # type: ignore[abstract]
        reactions = Reactions(unit)
        runtime.consume("one-time-codes", [ONE_TIME_CODE_ISSUED], reactions.on_one_time_code)
        runtime.consume(
            "orders", [ORDER_PLACED, ORDER_READY, ORDER_SHIPPED, ORDER_CANCELLED], _orders(reactions)
        )
        runtime.consume("stock-subscriptions", [SUBSCRIPTION_FIRED], reactions.on_subscription_fired)
        runtime.consume(
            "consent-confirmations", [CONFIRMATION_REQUESTED], reactions.on_confirmation_requested
        )
        runtime.consume("consent-changes", [CONSENT_CHANGED], reactions.on_consent_changed)
        runtime.consume(
            "identifiers", [contacts.IDENTIFIER_LINKED, contacts.IDENTIFIER_UNLINKED], _identifiers
        )
        runtime.consume("profiles", [contacts.PROFILE_UPDATED], contacts.on_profile_updated)
        consume_erasures(runtime, eraser(unit), messaging_events.CustomerErasureProcessedEvent)
        worker = DeliveryWorker(unit)
        runtime.background.append(worker.run)
        runtime.after_drain.append(providers.close)

    return ServiceDefinition(
        name="messaging", grpc_services=["omni.messaging.v1.MessagingService"], register=register
    )


def _orders(reactions: Reactions):  # type: ignore[no-untyped-def]
    handlers = {
        ORDER_PLACED: reactions.on_order_placed,
        ORDER_READY: reactions.on_order_ready,
        ORDER_SHIPPED: reactions.on_order_shipped,
        ORDER_CANCELLED: reactions.on_order_cancelled,
    }

    async def handle(session, event):  # type: ignore[no-untyped-def]
        await handlers[event.subject](session, event)

    return handle


async def _identifiers(session, event):  # type: ignore[no-untyped-def]
    if event.subject == contacts.IDENTIFIER_LINKED:
        await contacts.on_identifier_linked(session, event)
    else:
        await contacts.on_identifier_unlinked(session, event)


SERVICE = definition()
