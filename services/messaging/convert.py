"""Rows ↔ protobuf resources, in one place so every RPC and event shows a resource the same way."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from omni.messaging.v1 import resources_pb2 as res
from omni.type.v1 import channel_pb2
from omni_runtime.timestamps import to_proto as ts
from services.messaging.domain.templates import Content
from services.messaging.store import AnyRow

NOTIFICATION = "notifications/{notification}"
TEMPLATE = "templates/{template}"
CUSTOMER = "customers/{customer}"


def notification_name(notification_id: str) -> str:
    return f"notifications/{notification_id}"


def template_name(template_id: str) -> str:
    return f"templates/{template_id}"


def etag(version: int) -> str:
    """AIP-154 etag of a row version (weak: it names a version, not a byte representation)."""
    return f'W/"{version}"'


def version_of(tag: str) -> int | None:
    if tag.startswith('W/"') and tag.endswith('"') and tag[3:-1].isdigit():
        return int(tag[3:-1])
    return None


def contents_of(message: Iterable[res.TemplateContent]) -> list[Content]:
    return [Content(c.channel, c.locale, c.subject, c.body, c.html_body) for c in message]


def contents_json(contents: Sequence[Content]) -> list[dict[str, Any]]:
    return [
        {
            "channel": c.channel,
            "locale": c.locale,
            "subject": c.subject,
            "body": c.body,
            "html_body": c.html_body,
        }
        for c in contents
    ]


def contents_from_json(data: Sequence[Mapping[str, Any]]) -> list[Content]:
    return [
        Content(int(c["channel"]), str(c["locale"]), str(c["subject"]), str(c["body"]), str(c["html_body"]))
        for c in data
    ]


def template(row: AnyRow) -> res.Template:
    return res.Template(
        name=template_name(row.id),
        display_name=row.display_name,
        topic=row.topic,
        purpose=row.purpose,
        contents=[
            res.TemplateContent(
                channel=c.channel,  # type: ignore[arg-type]
                locale=c.locale,
                subject=c.subject,
                body=c.body,
                html_body=c.html_body,
            )
            for c in contents_from_json(row.contents)
        ],
        default_locale=row.default_locale,
        params=list(row.params),
        etag=etag(row.version),
        create_time=ts(row.create_time),
        update_time=ts(row.update_time),
    )


def attempt(row: AnyRow) -> res.DeliveryAttempt:
    return res.DeliveryAttempt(
        channel=row.channel,
        state=row.state,
        destination=row.destination,
        error_code=row.error_code,
        error_message=row.error_message,
        provider_message_id=row.provider_message_id or "",
        attempt_time=ts(row.attempt_time),
        update_time=ts(row.update_time),
        provider=row.provider,
    )


def notification(row: AnyRow, attempts: Iterable[AnyRow] = ()) -> res.Notification:
    out = res.Notification(
        name=notification_name(row.id),
        customer=row.customer,
        topic=row.topic,
        template=template_name(row.template_id),
        params=dict(row.params),
        requested_channel=row.requested_channel,
        chosen_channel=row.chosen_channel,
        locale=row.locale,
        attempts=[attempt(a) for a in attempts],
        state=row.state,
        suppression_reason=row.suppression_reason,
        subject_resource=row.subject_resource,
        rendered_subject=row.rendered_subject,
        rendered_body=row.rendered_body,
        request_id=row.request_id,
        requested_by_channel=channel_pb2.ChannelContext(
            channel=row.by_channel, store=row.by_store, device=row.by_device
        ),
        create_time=ts(row.create_time),
        update_time=ts(row.update_time),
        purpose=row.purpose,
    )
    for field_name, value in (
        ("expire_time", row.expire_time),
        ("schedule_time", row.due_time),
        ("deliver_time", row.deliver_time),
        ("open_time", row.open_time),
        ("click_time", row.click_time),
    ):
        if value is not None:
            getattr(out, field_name).CopyFrom(ts(value))
    return out
