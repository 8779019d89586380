"""Templates through the real service: create, read, list, update with etags, delete; placeholders
checked when written; the default templates exist from start-up; only staff write them."""

from __future__ import annotations

import grpc
from google.protobuf import field_mask_pb2

from omni.messaging.v1 import messaging_service_pb2 as svc
from omni.messaging.v1 import resources_pb2 as res
from omni.preferences.v1 import resources_pb2 as pref
from omni.type.v1 import channel_pb2 as ch
from services.messaging import defaults
from tests.messaging.conftest import Caller, reason, rid, rpc_error, uid, violations


def template(topic: str = "offers", **kw: object) -> res.Template:
    return res.Template(
        display_name=str(kw.get("display", "Weekend offer")),
        topic=topic,
        default_locale="en",
        purpose=pref.CONTACT_PURPOSE_MARKETING,
        contents=kw.get(  # type: ignore[arg-type]
            "contents",
            [
                res.TemplateContent(
                    channel=ch.CHANNEL_EMAIL,
                    locale="en",
                    subject="Hi {{name}}",
                    body="{{discount}} off",
                    html_body="<p>{{discount}} off</p>",
                ),
                res.TemplateContent(
                    channel=ch.CHANNEL_SMS, locale="en", body="{{discount}} off for {{name}}"
                ),
                res.TemplateContent(
                    channel=ch.CHANNEL_EMAIL,
                    locale="ro",
                    subject="Salut {{name}}",
                    body="{{discount}} reducere",
                ),
            ],
        ),
    )


async def test_create_get_list_update_delete(api: Caller) -> None:
    template_id = uid("offer")
    created = await api.CreateTemplate(
        svc.CreateTemplateRequest(template_id=template_id, template=template(), request_id=rid())
    )
    assert created.name == f"templates/{template_id}"
    assert list(created.params) == ["discount", "name"]
    assert created.etag == 'W/"1"'
    assert (await api.GetTemplate(svc.GetTemplateRequest(name=created.name))) == created

    page = await api.ListTemplates(
        svc.ListTemplatesRequest(filter='contents.channel:CHANNEL_SMS AND topic = "offers"', page_size=1000)
    )
    assert created.name in [t.name for t in page.templates]
    ro = await api.ListTemplates(svc.ListTemplatesRequest(filter='contents.locale:"ro"', page_size=1000))
    assert created.name in [t.name for t in ro.templates]

    renamed = await api.UpdateTemplate(
        svc.UpdateTemplateRequest(
            template=res.Template(name=created.name, display_name="Spring offer", etag=created.etag),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        )
    )
    assert renamed.display_name == "Spring offer" and renamed.etag == 'W/"2"'
    assert list(renamed.contents) == list(created.contents)

    stale = await rpc_error(
        api.UpdateTemplate(
            svc.UpdateTemplateRequest(
                template=res.Template(name=created.name, display_name="Lost update", etag=created.etag),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            )
        )
    )
    assert stale.code() is grpc.StatusCode.ABORTED

    await api.DeleteTemplate(svc.DeleteTemplateRequest(name=created.name, etag=renamed.etag))
    gone = await rpc_error(api.GetTemplate(svc.GetTemplateRequest(name=created.name)))
    assert gone.code() is grpc.StatusCode.NOT_FOUND


async def test_placeholders_and_contents_are_checked_when_written(api: Caller) -> None:
    broken = template(
        contents=[
            res.TemplateContent(channel=ch.CHANNEL_EMAIL, locale="ro", subject="x", body="Salut {{name"),
            res.TemplateContent(channel=ch.CHANNEL_STORE_POS, locale="en", body="till"),
        ]
    )
    error = await rpc_error(
        api.CreateTemplate(svc.CreateTemplateRequest(template_id=uid("t"), template=broken))
    )
    assert {
        "template.contents[0].body",
        "template.contents[1].channel",
        "template.default_locale",
    } <= violations(error)

    bad_topic = await rpc_error(
        api.CreateTemplate(
            svc.CreateTemplateRequest(template_id="Bad_Id", template=template(topic="Offers!"))
        )
    )
    assert {"template_id", "template.topic"} <= violations(bad_topic)

    template_id = uid("t")
    await api.CreateTemplate(svc.CreateTemplateRequest(template_id=template_id, template=template()))
    update = await rpc_error(
        api.UpdateTemplate(
            svc.UpdateTemplateRequest(
                template=res.Template(
                    name=f"templates/{template_id}",
                    contents=[res.TemplateContent(channel=ch.CHANNEL_SMS, locale="en", body="{{ oops")],
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["contents"]),
            )
        )
    )
    assert "template.contents[0].body" in violations(update)
    taken = await rpc_error(
        api.CreateTemplate(svc.CreateTemplateRequest(template_id=template_id, template=template()))
    )
    assert taken.code() is grpc.StatusCode.ALREADY_EXISTS and reason(taken) == "TEMPLATE_EXISTS"


async def test_a_retried_create_returns_the_first_answer(api: Caller) -> None:
    request = svc.CreateTemplateRequest(template_id=uid("t"), template=template(), request_id=rid())
    first = await api.CreateTemplate(request)
    assert await api.CreateTemplate(request) == first


async def test_the_default_templates_exist_from_start_up(api: Caller) -> None:
    for default in defaults.DEFAULT_TEMPLATES:
        found = await api.GetTemplate(svc.GetTemplateRequest(name=default.name))
        assert found.topic == default.topic and found.params


async def test_only_staff_and_services_write_templates(as_role: object) -> None:
    customer = as_role("customers/c-1", "customer")  # type: ignore[operator]
    marketer = as_role("staffMembers/m-1", "marketer")  # type: ignore[operator]
    denied = await rpc_error(
        customer.CreateTemplate(svc.CreateTemplateRequest(template_id=uid("t"), template=template()))
    )
    assert denied.code() is grpc.StatusCode.PERMISSION_DENIED
    made = await marketer.CreateTemplate(svc.CreateTemplateRequest(template_id=uid("t"), template=template()))
    assert made.name.startswith("templates/")


async def test_part_two_rpcs_answer_unimplemented(api: Caller) -> None:
    error = await rpc_error(api.ListInboxItems(svc.ListInboxItemsRequest(parent="agents/-")))
    assert error.code() is grpc.StatusCode.UNIMPLEMENTED
