"""MergeProfiles and the UnmergeProfiles no anchor has.

A merge keeps a record (``merges.record``) of what came from which side: the source's own
fields, traits and contact points as they were, the fields, traits and contact points it gave
the target, and its addresses (including exact duplicates the target already had, which are
dropped from the target's list). Interactions, addresses and purchases keep ``origin``, the
customer they were recorded for. An unmerge sends back everything whose origin is the source
(or a profile merged into the source before), restores the source from the record, and takes
back from the target only what is still as the merge left it: what the target's owner changed
or gained since stays theirs.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from omni.profile.v1 import events_pb2 as ev
from omni.profile.v1 import profile_service_pb2 as svc
from omni.profile.v1 import resources_pb2 as r
from omni_runtime.context import current_principal
from omni_runtime.db import idempotency
from omni_runtime.db.engine import after_commit
from omni_runtime.errors import Aborted, FailedPrecondition, FieldViolation, InvalidArgument
from omni_runtime.server import Runtime
from omni_runtime.timestamps import to_proto, utcnow
from services.profile import convert, metrics
from services.profile.domain.profile import SCALAR_FIELDS, conflicting_identifiers, key, plan_merge
from services.profile.profiles import DOMAIN, Profiles, load, not_active, profile_row
from services.profile.segments import Segments
from services.profile.store import BLANK_PERSONAL_DATA, addresses, interactions, merges, profiles, purchases
from services.profile.timeline import lock_profiles, recompute_all

ACTIVE = r.Profile.STATE_ACTIVE
_SNAPSHOT = (
    "given_name",
    "family_name",
    "display_name",
    "language_code",
    "birthday_year",
    "birthday_month",
    "birthday_day",
    "traits",
    "contact_points",
    "contact_kinds",
    "create_time",
)
_ADDRESS = (
    "id",
    "origin",
    "display_name",
    "postal_address",
    "phone",
    "instructions",
    "default_shipping",
    "default_billing",
    "version",
    "create_time",
    "update_time",
)


def _plain(row: Any, columns: tuple[str, ...]) -> dict[str, Any]:
    out = {}
    for name in columns:
        value = getattr(row, name)
        out[name] = value.isoformat() if hasattr(value, "isoformat") else value
    return out


def _restore(data: dict[str, Any]) -> dict[str, Any]:
    from datetime import datetime

    out = dict(data)
    for name in ("create_time", "update_time"):
        if isinstance(out.get(name), str):
            out[name] = datetime.fromisoformat(out[name])
    return out


class Merges:
    def __init__(self, runtime: Runtime, profiles_: Profiles, segments_: Segments) -> None:
        assert runtime.db is not None and runtime.outbox is not None
        self.db = runtime.db
        self.outbox = runtime.outbox
        self.profiles = profiles_
        self.segments = segments_

    async def merge_request(self, request: svc.MergeProfilesRequest, target: str, source: str) -> r.Profile:
        async def work(session: AsyncSession) -> r.Profile:
            await self.merge(
                session,
                target,
                source,
                request.reason or r.MERGE_REASON_DUPLICATE,
                etag=request.etag,
                merged_by=current_principal.get().subject,
            )
            return await load(session, target)

        return await idempotency.once(
            self.db, f"profile.MergeProfiles:{target}", request.request_id, request, r.Profile, work
        )

    async def merge(
        self,
        session: AsyncSession,
        target: str,
        source: str,
        reason: int,
        *,
        etag: str = "",
        merged_by: str = "",
        automatic: bool = False,
    ) -> bool:
        """Merge ``source`` into ``target`` in the caller's transaction; False when an automatic
        merge was refused by merge protection."""
        if source == target:
            raise InvalidArgument(
                [FieldViolation("source_profile", "must differ from the target profile", "SELF_MERGE")],
                domain=DOMAIN,
            )
        await lock_profiles(session, [source, target])
        t_row = await profile_row(session, target)
        s_row = await profile_row(session, source)
        for who, row in ((target, t_row), (source, s_row)):
            if row.state != ACTIVE:
                raise not_active(who, row.state)
        if etag and etag != convert.etag(t_row.version):
            raise Aborted(
                "the target profile changed since it was read",
                current_etag=convert.etag(t_row.version),
                domain=DOMAIN,
            )
        t, s = await load(session, target), await load(session, source)
        conflicts = conflicting_identifiers(t.contact_points, s.contact_points)
        if conflicts and automatic:
            return False
        plan = plan_merge(t, s)
        now = utcnow()
        own_addresses = (await session.execute(select(addresses).where(addresses.c.customer == source))).all()
        target_postal = {
            json_format.MessageToJson(a.postal_address, sort_keys=True)
            for a in await self._addresses(session, target)
        }
        record = {
            "source": _plain(s_row, _SNAPSHOT),
            "filled": plan.filled,
            "birthday": plan.birthday,
            "added_traits": plan.added_traits,
            "added_points": convert.contact_points_json(plan.added_points),
            "addresses": [_plain(a, _ADDRESS) for a in own_addresses],
        }
        merge_id = (
            await session.execute(
                merges.insert()
                .values(
                    source=source,
                    target=target,
                    reason=reason,
                    record=record,
                    merged_by=merged_by,
                    merge_time=now,
                    unmerged_by="",
                )
                .returning(merges.c.id)
            )
        ).scalar_one()
        moved = (
            await session.execute(
                update(interactions).where(interactions.c.customer == source).values(customer=target)
            )
        ).rowcount  # type: ignore[attr-defined]
        await session.execute(update(purchases).where(purchases.c.customer == source).values(customer=target))
        copied = 0
        for a in own_addresses:
            postal = json_format.MessageToJson(convert.address(a).postal_address, sort_keys=True)
            if postal in target_postal:
                await session.execute(addresses.delete().where(addresses.c.id == a.id))
                continue
            copied += 1
            await session.execute(
                update(addresses)
                .where(addresses.c.id == a.id)
                .values(customer=target, merge_id=merge_id, default_shipping=False, default_billing=False)
            )
        values: dict[str, Any] = dict(plan.filled)
        if plan.birthday:
            values |= dict(
                zip(("birthday_year", "birthday_month", "birthday_day"), plan.birthday, strict=True)
            )
        changed = list(plan.filled) + (["birthday"] if plan.birthday else [])
        if plan.added_traits:
            values["traits"] = {**t.traits, **plan.added_traits}
            changed.append("traits")
        if plan.added_points:
            points = [*t.contact_points, *plan.added_points]
            values["contact_points"] = convert.contact_points_json(points)
            values["contact_kinds"] = sorted({p.kind for p in points})
            changed.append("contact_points")
        await session.execute(
            update(profiles)
            .where(profiles.c.customer == source)
            .values(
                state=r.Profile.STATE_MERGED,
                merged_into=target,
                **BLANK_PERSONAL_DATA,
                version=profiles.c.version + 1,
                update_time=now,
            )
        )
        await self.segments.remove(session, [source])
        await recompute_all(session, [source, target])
        await self.profiles.write(session, target, values, changed or ["merged"])
        await self.outbox.emit(
            session,
            ev.ProfilesMergedEvent(
                source_profile=convert.profile_name(source),
                source_customer=f"customers/{source}",
                target_profile=convert.profile_name(target),
                target_customer=f"customers/{target}",
                reason=reason,  # type: ignore[arg-type]
                moved_interaction_count=int(moved or 0),
                copied_address_count=copied,
                merged_by=merged_by,
                occur_time=to_proto(now),
                gained_contact_points=plan.added_points,
            ),
        )
        after_commit(session, lambda: metrics.MERGES.labels("merge").inc())
        return True

    async def _addresses(self, session: AsyncSession, customer: str) -> list[r.Address]:
        rows = (await session.execute(select(addresses).where(addresses.c.customer == customer))).all()
        return [convert.address(row) for row in rows]

    async def unmerge_request(
        self, request: svc.UnmergeProfilesRequest, source: str
    ) -> svc.UnmergeProfilesResponse:
        async def work(session: AsyncSession) -> svc.UnmergeProfilesResponse:
            return await self.unmerge(session, source, current_principal.get().subject)

        return await idempotency.once(
            self.db,
            f"profile.UnmergeProfiles:{source}",
            request.request_id,
            request,
            svc.UnmergeProfilesResponse,
            work,
        )

    async def unmerge(self, session: AsyncSession, source: str, by: str) -> svc.UnmergeProfilesResponse:
        m = (
            await session.execute(
                select(merges).where(merges.c.source == source, merges.c.unmerge_time.is_(None))
            )
        ).first()
        if m is None:
            raise FailedPrecondition(
                f"customers/{source}/profile is not merged into another profile",
                reason="PROFILE_NOT_MERGED",
                domain=DOMAIN,
                violations=[
                    ("PROFILE_STATE", convert.profile_name(source), "only a merged profile can be unmerged")
                ],
            )
        target = m.target
        await lock_profiles(session, [source, target])
        t_row = await profile_row(session, target)
        if t_row.state != ACTIVE:
            raise FailedPrecondition(
                f"the profile it was merged into ({convert.profile_name(target)}) is no longer active; "
                "unmerge that first",
                reason="TARGET_NOT_ACTIVE",
                domain=DOMAIN,
                violations=[
                    ("PROFILE_STATE", convert.profile_name(target), "the merge target must be active")
                ],
            )
        record = m.record
        now = utcnow()
        origins = list(
            (
                await session.execute(
                    text(
                        "WITH RECURSIVE d(c) AS (SELECT CAST(:s AS text) UNION "
                        "SELECT p.customer FROM profiles p JOIN d ON p.merged_into = d.c) SELECT c FROM d"
                    ),
                    {"s": source},
                )
            ).scalars()
        )
        returned = (
            await session.execute(
                update(interactions)
                .where(interactions.c.customer == target, interactions.c.origin.in_(origins))
                .values(customer=source)
            )
        ).rowcount  # type: ignore[attr-defined]
        await session.execute(
            update(purchases)
            .where(purchases.c.customer == target, purchases.c.origin.in_(origins))
            .values(customer=source)
        )
        kept_ids = set()
        for saved in record.get("addresses", []):
            data = _restore(saved)
            kept_ids.add(data["id"])
            exists = (
                await session.execute(select(addresses.c.id).where(addresses.c.id == data["id"]))
            ).first()
            flags = {"default_shipping": data["default_shipping"], "default_billing": data["default_billing"]}
            if exists is None:  # an exact duplicate dropped at the merge
                await session.execute(addresses.insert().values(**data, customer=source, merge_id=None))
            else:
                await session.execute(
                    update(addresses)
                    .where(addresses.c.id == data["id"], addresses.c.merge_id == m.id)
                    .values(customer=source, merge_id=None, **flags)
                )
        snapshot = _restore(record["source"])
        await session.execute(
            update(profiles)
            .where(profiles.c.customer == source)
            .values(
                **snapshot, state=ACTIVE, merged_into=None, version=profiles.c.version + 1, update_time=now
            )
        )
        current = await load(session, target)
        values: dict[str, Any] = {
            name: ""
            for name, value in record.get("filled", {}).items()
            if name in SCALAR_FIELDS and getattr(current, name) == value
        }
        if record.get("birthday") and [
            current.birthday.year,
            current.birthday.month,
            current.birthday.day,
        ] == list(record["birthday"]):
            values |= {"birthday_year": 0, "birthday_month": 0, "birthday_day": 0}
        traits = dict(current.traits)
        for name, value in record.get("added_traits", {}).items():
            if traits.get(name) == value:
                del traits[name]
        if traits != dict(current.traits):
            values["traits"] = traits
        added = {key(p) for p in convert.contact_points(record.get("added_points", []))}
        points = [p for p in current.contact_points if key(p) not in added]
        if len(points) != len(current.contact_points):
            values["contact_points"] = convert.contact_points_json(points)
            values["contact_kinds"] = sorted({p.kind for p in points})
        await session.execute(
            update(merges).where(merges.c.id == m.id).values(unmerge_time=now, unmerged_by=by)
        )
        await recompute_all(session, [source, target])
        await self.profiles.write(session, target, values, sorted(values) or ["unmerged"])
        await self.segments.evaluate(session, [source])
        returned_points = convert.contact_points(record["source"].get("contact_points", []))
        await self.outbox.emit(
            session,
            ev.ProfilesUnmergedEvent(
                source_profile=convert.profile_name(source),
                source_customer=f"customers/{source}",
                target_profile=convert.profile_name(target),
                target_customer=f"customers/{target}",
                reason=m.reason,
                returned_contact_points=returned_points,
                returned_interaction_count=int(returned or 0),
                returned_address_count=len(kept_ids),
                merge_time=to_proto(m.merge_time),
                unmerged_by=by,
                occur_time=to_proto(now),
            ),
        )
        after_commit(session, lambda: metrics.MERGES.labels("unmerge").inc())
        return svc.UnmergeProfilesResponse(
            source_profile=await load(session, source),
            target_profile=await load(session, target),
            returned_interaction_count=int(returned or 0),
            returned_address_count=len(kept_ids),
        )
