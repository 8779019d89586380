"""GetPreferences and UpdatePreferences: the customer's own choices about being contacted.

Preferences exist for every customer; nobody has to create them. An unwritten customer reads the
defaults (etag ``W/"0"``, no update_time) and the first update writes the row. Only fields that
really change are announced (PreferencesUpdatedEvent.changed_fields); an update that changes
nothing writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from omni.preferences.v1 import events_pb2 as ev
from omni.preferences.v1 import preferences_service_pb2 as svc
from omni.preferences.v1 import resources_pb2 as res
from omni_runtime.context import current_principal
from omni_runtime.db.engine import Reader
from omni_runtime.db.idempotency import once
from omni_runtime.errors import Aborted
from omni_runtime.timestamps import to_proto, utcnow
from services.preferences import convert, store
from services.preferences.consents import require_contactable
from services.preferences.domain import DOMAIN
from services.preferences.txn import Unit

FIELDS = (
    "preferred_channels",
    "quiet_hours",
    "time_zone",
    "language_code",
    "frequency_caps",
    "preferred_store",
)
p = store.preferences


async def row_of(session: Reader, customer_id: str, *, lock: bool = False) -> Any:
    statement = select(p).where(p.c.customer_id == customer_id)
    return (await session.execute(statement.with_for_update() if lock else statement)).first()


def _column_values(prefs: res.Preferences, fields: Sequence[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for f in fields:
        if f == "preferred_channels":
            values[f] = [int(x) for x in prefs.preferred_channels]
        elif f == "quiet_hours":
            values[f] = convert.quiet_json(prefs.quiet_hours)
        elif f == "frequency_caps":
            values[f] = convert.caps_json(prefs.frequency_caps)
        else:
            values[f] = getattr(prefs, f)
    return values


async def get_preferences(unit: Unit, customer_id: str) -> res.Preferences:
    async with unit.db.read() as session:
        return convert.preferences(customer_id, await row_of(session, customer_id))


async def update_preferences(
    unit: Unit, request: svc.UpdatePreferencesRequest, customer_id: str, fields: Sequence[str]
) -> res.Preferences:
    async def work(session: AsyncSession) -> res.Preferences:
        await require_contactable(session, customer_id)
        now = utcnow()
        current = await row_of(session, customer_id, lock=True)
        version = current.version if current is not None else 0
        given = request.preferences.etag
        if given and convert.version_of(given) != version:
            raise Aborted(
                "the preferences changed since they were read",
                current_etag=convert.etag(version),
                domain=DOMAIN,
            )
        before = convert.preferences(customer_id, current)
        values = _column_values(request.preferences, fields)
        after_values = {**_column_values(before, FIELDS), **values}
        changed = [f for f in FIELDS if f in values and _column_values(before, [f])[f] != values[f]]
        if current is not None and not changed:
            return before
        statement = (
            insert(p)
            .values(customer_id=customer_id, update_time=now, **after_values)
            .on_conflict_do_update(
                index_elements=[p.c.customer_id],
                set_={**values, "update_time": now, "version": p.c.version + 1},
            )
            .returning(*p.c)
        )
        row = (await session.execute(statement)).one()
        snapshot = convert.preferences(customer_id, row)
        await unit.outbox.emit(
            session,
            ev.PreferencesUpdatedEvent(
                preferences=snapshot.name,
                customer=convert.customer_name(customer_id),
                changed_fields=changed,
                snapshot=snapshot,
                changed_by=current_principal.get().subject,
                occur_time=to_proto(now),
            ),
        )
        return snapshot

    return await once(
        unit.db,
        f"preferences.UpdatePreferences/{customer_id}",
        request.request_id,
        request,
        res.Preferences,
        work,
    )
