"""Publishing a service's event into JetStream exactly as its outbox relay would, for tests.

A consumer under test then sees a real event on a real stream (same subject, ``Nats-Msg-Id`` and
``Omni-Event-Type`` headers) without starting the producing service.
"""

from __future__ import annotations

import uuid

from google.protobuf.message import Message

from omni_runtime.events.bus import EventBus, service_of_subject, subject_for
from omni_runtime.events.outbox import EVENT_TYPE_HEADER, MSG_ID_HEADER


async def publish_event(nats_url: str, message: Message, *, event_id: str | None = None) -> str:
    """Publish ``message`` (an ``…Event``) on its subject; returns the event id used."""
    event_id = event_id or str(uuid.uuid4())
    full_name = message.DESCRIPTOR.full_name
    subject = subject_for(full_name)
    bus = EventBus(nats_url, name="omni-test-publisher")
    await bus.start()
    try:
        await bus.wait_connected(10)
        await bus.ensure_stream(service_of_subject(subject))
        await bus.js.publish(
            subject,
            message.SerializeToString(),
            headers={MSG_ID_HEADER: event_id, EVENT_TYPE_HEADER: full_name},
        )
    finally:
        await bus.close()
    return event_id
