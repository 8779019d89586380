"""Templates: create, read, list, update (etag-guarded) and delete.

A template is validated as a whole on every write (contents, locales, placeholders), so an
update of one field can never leave a template that cannot render. Notifications render from
the template when they are sent: an update reaches notifications still waiting, while a sent
notification keeps the subject and body it was sent with (``rendered_*``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from google.protobuf import empty_pb2
from sqlalchemy import literal, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ColumnElement

from omni.messaging.v1 import messaging_service_pb2 as svc
from omni.messaging.v1 import resources_pb2 as res
from omni.preferences.v1 import resources_pb2 as pref
from omni.type.v1 import channel_pb2
from omni_runtime.db.idempotency import once
from omni_runtime.errors import Aborted, AlreadyExists, FieldViolation, InvalidArgument, NotFound
from omni_runtime.listing import Condition, Field, Kind, Listing, ListQuery
from omni_runtime.timestamps import utcnow
from services.messaging import convert, store
from services.messaging.domain import DOMAIN
from services.messaging.domain import templates as rules
from services.messaging.unit import Unit

T = store.templates
UPDATABLE = ("display_name", "topic", "contents", "default_locale", "purpose")


def _contents_has(key: str) -> Callable[[Condition], ColumnElement[bool]]:
    def compile_(cond: Condition) -> ColumnElement[bool]:
        value = cond.value if key == "channel" else str(cond.value)
        return T.c.contents.contains([{key: value}])

    return compile_


TEMPLATES = Listing(
    fields={
        "topic": Field(Kind.STRING, sql=T.c.topic),
        "display_name": Field(Kind.STRING, sql=T.c.display_name),
        "contents.channel": Field(
            Kind.ENUM, channel_pb2.Channel, repeated=True, sql=_contents_has("channel")
        ),  # type: ignore[arg-type]
        "contents.locale": Field(Kind.STRING, repeated=True, sql=_contents_has("locale")),  # type: ignore[arg-type]
    },
    order_by={"name": T.c.id, "display_name": T.c.display_name, "update_time": T.c.update_time},
    default_order="name",
    tiebreak=[T.c.id],
    unique=("name",),
    domain=DOMAIN,
)


def invalid(problems: Sequence[tuple[str, str]], reason: str = "INVALID_TEMPLATE") -> InvalidArgument:
    return InvalidArgument([FieldViolation(f, d, reason) for f, d in problems], domain=DOMAIN)


def validate(template: res.Template, field: str = "template") -> list[rules.Content]:
    """The template's contents, or INVALID_ARGUMENT listing every problem."""
    contents = convert.contents_of(template.contents)
    problems = rules.check_contents(contents, template.default_locale, f"{field}.contents")
    if not template.topic:
        problems.append((f"{field}.topic", "is required"))
    if template.purpose not in pref.ContactPurpose.values():
        problems.append((f"{field}.purpose", "is not a known contact purpose"))
    if problems:
        raise invalid(problems)
    return contents


async def load(session: AsyncSession, template_id: str, *, lock: bool = False) -> store.AnyRow:
    statement = select(T).where(T.c.id == template_id)
    row = (await session.execute(statement.with_for_update() if lock else statement)).first()
    if row is None:
        raise NotFound(convert.template_name(template_id), domain=DOMAIN)
    return row


async def create(unit: Unit, request: svc.CreateTemplateRequest) -> res.Template:
    contents = validate(request.template)

    async def work(session: AsyncSession) -> res.Template:
        now = utcnow()
        row = (
            await session.execute(
                insert(T)
                .values(
                    id=request.template_id,
                    display_name=request.template.display_name,
                    topic=request.template.topic,
                    purpose=request.template.purpose,
                    default_locale=request.template.default_locale,
                    contents=convert.contents_json(contents),
                    params=rules.params_of(contents),
                    create_time=now,
                    update_time=now,
                )
                .on_conflict_do_nothing()
                .returning(*T.c)
            )
        ).first()
        if row is None:
            raise AlreadyExists(
                f"{convert.template_name(request.template_id)} already exists",
                reason="TEMPLATE_EXISTS",
                domain=DOMAIN,
                metadata={"resource": convert.template_name(request.template_id)},
            )
        return convert.template(row)

    return await once(unit.db, "messaging.CreateTemplate", request.request_id, request, res.Template, work)


async def get(unit: Unit, template_id: str) -> res.Template:
    async with unit.db.transaction() as session:
        return convert.template(await load(session, template_id))


async def list_(unit: Unit, query: ListQuery) -> svc.ListTemplatesResponse:
    async with unit.db.transaction() as session:
        rows, token = await query.page(session, select(T))
    return svc.ListTemplatesResponse(templates=[convert.template(r) for r in rows], next_page_token=token)


def _check_etag(row: store.AnyRow, given: str) -> None:
    if given and convert.version_of(given) != row.version:
        raise Aborted(
            f"{convert.template_name(row.id)} changed since it was read",
            current_etag=convert.etag(row.version),
            domain=DOMAIN,
        )


async def update_template(
    unit: Unit, request: svc.UpdateTemplateRequest, template_id: str, fields: Sequence[str]
) -> res.Template:
    async def work(session: AsyncSession) -> res.Template:
        row = await load(session, template_id, lock=True)
        _check_etag(row, request.template.etag)
        merged = convert.template(row)
        for name in fields:
            if name == "contents":
                del merged.contents[:]
                merged.contents.extend(request.template.contents)
            else:
                setattr(merged, name, getattr(request.template, name))
        contents = validate(merged)
        updated = (
            await session.execute(
                update(T)
                .where(T.c.id == template_id)
                .values(
                    display_name=merged.display_name,
                    topic=merged.topic,
                    purpose=merged.purpose,
                    default_locale=merged.default_locale,
                    contents=convert.contents_json(contents),
                    params=rules.params_of(contents),
                    version=T.c.version + 1,
                    update_time=utcnow(),
                )
                .returning(*T.c)
            )
        ).one()
        return convert.template(updated)

    return await once(unit.db, "messaging.UpdateTemplate", request.request_id, request, res.Template, work)


async def delete(unit: Unit, request: svc.DeleteTemplateRequest, template_id: str) -> empty_pb2.Empty:
    """Delete; PENDING notifications of the template become SUPPRESSED (NO_TEMPLATE_CONTENT)."""
    from services.messaging import notifications  # the suppression is the notifications' rule

    async def work(session: AsyncSession) -> empty_pb2.Empty:
        row = await load(session, template_id, lock=True)
        _check_etag(row, request.etag)
        await session.execute(T.delete().where(T.c.id == template_id))
        await notifications.suppress_pending(
            unit,
            session,
            store.notifications.c.template_id == template_id,
            res.SUPPRESSION_REASON_NO_TEMPLATE_CONTENT,
        )
        return empty_pb2.Empty()

    return await once(unit.db, "messaging.DeleteTemplate", request.request_id, request, empty_pb2.Empty, work)


async def ensure(session: AsyncSession, templates: Sequence[res.Template]) -> int:
    """Create the templates that do not exist yet (never overwrite an edited one); how many."""
    created = 0
    now = utcnow()
    for template in templates:
        contents = validate(template)
        result = await session.execute(
            insert(T)
            .values(
                id=template.name.removeprefix("templates/"),
                display_name=template.display_name,
                topic=template.topic,
                purpose=template.purpose,
                default_locale=template.default_locale,
                contents=convert.contents_json(contents),
                params=rules.params_of(contents),
                create_time=now,
                update_time=now,
            )
            .on_conflict_do_nothing()
            .returning(literal(1))
        )
        created += len(result.all())
    return created
