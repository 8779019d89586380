"""Segment definitions: create, read, list, update (a new rule or mode recomputes), delete,
recompute on request, and the member list."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from google.protobuf import empty_pb2
from google.rpc import code_pb2, status_pb2
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from omni.profile.v1 import profile_service_pb2 as svc
from omni.profile.v1 import resources_pb2 as r
from omni_runtime.context import current_principal
from omni_runtime.db import idempotency
from omni_runtime.db.engine import after_commit
from omni_runtime.errors import Aborted, NotFound
from omni_runtime.listing import Field, Kind, Listing
from omni_runtime.server import Runtime
from omni_runtime.timestamps import to_proto, utcnow
from services.profile.convert import etag
from services.profile.profiles import DOMAIN
from services.profile.segments import Segments
from services.profile.store import segment_members, segments

Segment = r.Segment

SEGMENTS = Listing(
    fields={
        "display_name": Field(Kind.STRING, sql=segments.c.display_name),
        "mode": Field(Kind.ENUM, enum=Segment.Mode, sql=segments.c.mode),
        "state": Field(Kind.ENUM, enum=Segment.State, sql=segments.c.state),
        "creator": Field(Kind.STRING, sql=segments.c.creator),
    },
    order_by={
        "display_name": segments.c.display_name,
        "create_time": segments.c.create_time,
        "member_count": segments.c.member_count,
    },
    default_order="display_name",
    tiebreak=(segments.c.id,),
    domain=DOMAIN,
    max_page_size=200,
)
MEMBERS = Listing(
    fields={"join_time": Field(Kind.TIMESTAMP, sql=segment_members.c.join_time)},
    order_by={"join_time": segment_members.c.join_time, "customer": segment_members.c.customer},
    default_order="customer",
    tiebreak=(segment_members.c.customer,),
    unique=("customer",),
    domain=DOMAIN,
)


def to_proto_segment(row: Any) -> Segment:
    out = Segment(
        name=f"segments/{row.id}",
        display_name=row.display_name,
        description=row.description,
        rule=r.SegmentRule(filter=row.filter),
        mode=row.mode,
        state=row.state,
        member_count=row.member_count,
        creator=row.creator,
        create_time=to_proto(row.create_time),
        update_time=to_proto(row.update_time),
        etag=etag(row.version),
    )
    if row.compute_error:
        out.compute_error.CopyFrom(
            status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=row.compute_error)
        )
    if row.last_compute_time is not None:
        out.last_compute_time.CopyFrom(to_proto(row.last_compute_time))
    return out


class SegmentAdmin:
    def __init__(self, runtime: Runtime, segments_: Segments) -> None:
        assert runtime.db is not None
        self.db = runtime.db
        self.segments = segments_

    async def _row(self, session: AsyncSession, ident: str, *, lock: bool = False) -> Any:
        statement = select(segments).where(segments.c.id == ident)
        row = (await session.execute(statement.with_for_update() if lock else statement)).first()
        if row is None:
            raise NotFound(f"segments/{ident}", domain=DOMAIN)
        return row

    async def create(self, request: svc.CreateSegmentRequest) -> Segment:
        async def work(session: AsyncSession) -> Segment:
            s = request.segment
            ident = uuid.uuid4().hex[:16]
            now = utcnow()
            await session.execute(
                segments.insert().values(
                    id=ident,
                    display_name=s.display_name.strip(),
                    description=s.description.strip(),
                    filter=s.rule.filter,
                    mode=s.mode or Segment.MODE_DYNAMIC,
                    state=Segment.STATE_COMPUTING,
                    member_count=0,
                    creator=current_principal.get().subject,
                    version=1,
                    create_time=now,
                    update_time=now,
                )
            )
            after_commit(session, self.segments.wake)
            return to_proto_segment(await self._row(session, ident))

        scope = f"profile.CreateSegment:{current_principal.get().subject}"
        return await idempotency.once(self.db, scope, request.request_id, request, Segment, work)

    async def get(self, ident: str) -> Segment:
        async with self.db.transaction() as session:
            return to_proto_segment(await self._row(session, ident))

    async def list(self, request: svc.ListSegmentsRequest) -> svc.ListSegmentsResponse:
        query = SEGMENTS.parse(request)
        async with self.db.transaction() as session:
            rows, token = await query.page(session, select(segments))
        return svc.ListSegmentsResponse(
            segments=[to_proto_segment(row) for row in rows], next_page_token=token
        )

    async def update(self, request: svc.UpdateSegmentRequest, ident: str, paths: Sequence[str]) -> Segment:
        async def work(session: AsyncSession) -> Segment:
            row = await self._row(session, ident, lock=True)
            s = request.segment
            if s.etag and s.etag != etag(row.version):
                raise Aborted(
                    "the segment changed since it was read", current_etag=etag(row.version), domain=DOMAIN
                )
            values: dict[str, Any] = {}
            if "display_name" in paths:
                values["display_name"] = s.display_name.strip()
            if "description" in paths:
                values["description"] = s.description.strip()
            if "rule" in paths or "rule.filter" in paths:
                values["filter"] = s.rule.filter
            if "mode" in paths:
                values["mode"] = s.mode or Segment.MODE_DYNAMIC
            if values.get("filter", row.filter) != row.filter or values.get("mode", row.mode) != row.mode:
                values["state"] = Segment.STATE_COMPUTING
                after_commit(session, self.segments.wake)
            await session.execute(
                update(segments)
                .where(segments.c.id == ident)
                .values(**values, version=row.version + 1, update_time=utcnow())
            )
            return to_proto_segment(await self._row(session, ident))

        return await idempotency.once(
            self.db, f"profile.UpdateSegment:{ident}", request.request_id, request, Segment, work
        )

    async def delete(self, request: svc.DeleteSegmentRequest, ident: str) -> None:
        async def work(session: AsyncSession) -> empty_pb2.Empty:
            row = await self._row(session, ident, lock=True)
            if request.etag and request.etag != etag(row.version):
                raise Aborted(
                    "the segment changed since it was read", current_etag=etag(row.version), domain=DOMAIN
                )
            await session.execute(segments.delete().where(segments.c.id == ident))
            return empty_pb2.Empty()

        await idempotency.once(
            self.db, f"profile.DeleteSegment:{ident}", request.request_id, request, empty_pb2.Empty, work
        )

    async def recompute(self, request: svc.RecomputeSegmentRequest, ident: str) -> Segment:
        async def work(session: AsyncSession) -> Segment:
            row = await self._row(session, ident, lock=True)
            if row.state != Segment.STATE_COMPUTING:
                await session.execute(
                    update(segments)
                    .where(segments.c.id == ident)
                    .values(state=Segment.STATE_COMPUTING, update_time=utcnow())
                )
                after_commit(session, self.segments.wake)
            return to_proto_segment(await self._row(session, ident))

        return await idempotency.once(
            self.db, f"profile.RecomputeSegment:{ident}", request.request_id, request, Segment, work
        )

    async def members(
        self, request: svc.ListSegmentMembersRequest, ident: str
    ) -> svc.ListSegmentMembersResponse:
        query = MEMBERS.parse(request, scope=(ident,))
        async with self.db.transaction() as session:
            await self._row(session, ident)
            rows, token = await query.page(
                session, select(segment_members).where(segment_members.c.segment == ident)
            )
            total = await query.count(session, segment_members, segment_members.c.segment == ident)
        return svc.ListSegmentMembersResponse(
            members=[
                r.SegmentMember(customer=f"customers/{row.customer}", join_time=to_proto(row.join_time))
                for row in rows
            ],
            next_page_token=token,
            total_size=total,
        )


_ = func
