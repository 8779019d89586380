"""Messaging's demo data for the local platform (``omni_runtime.demo`` runs ``DEMO``).

The platform's own templates (codes, orders, back in stock, double opt-in) exist from start-up
(``defaults``); the demo makes sure of them through MessagingService, as the demo admin, and adds
one marketing template, ``weekend-offer`` (e-mail in English and Romanian, SMS), that a marketer
can send with SendNotification to see consent, quiet hours and caps at work. Fixed ids: an
interrupted load is finished by the next start without a second template.
"""

from __future__ import annotations

import grpc

from omni.messaging.v1 import messaging_service_pb2 as pb
from omni.messaging.v1 import messaging_service_pb2_grpc
from omni.messaging.v1 import resources_pb2 as res
from omni.preferences.v1 import resources_pb2 as pref
from omni.type.v1 import channel_pb2 as ch
from omni_runtime.demo import DemoContext, DemoResult, DemoSeed
from services.messaging.defaults import DEFAULT_TEMPLATES

OFFER = "weekend-offer"
OFFER_TEMPLATE = res.Template(
    display_name="Weekend offer",
    topic="offers",
    purpose=pref.CONTACT_PURPOSE_MARKETING,
    default_locale="en",
    contents=[
        res.TemplateContent(
            channel=ch.CHANNEL_EMAIL,
            locale="en",
            subject="{{discount}} off this weekend, {{name}}",
            body="Hi {{name}}, everything is {{discount}} off until Sunday, online and in our stores.",
            html_body=(
                "<p>Hi {{name}}, everything is <b>{{discount}} off</b> until Sunday,"
                " online and in our stores.</p>"
            ),
        ),
        res.TemplateContent(
            channel=ch.CHANNEL_EMAIL,
            locale="ro",
            subject="{{discount}} reducere în weekend, {{name}}",
            body="Salut {{name}}, totul are {{discount}} reducere până duminică, online și în magazine.",
        ),
        res.TemplateContent(
            channel=ch.CHANNEL_SMS,
            locale="en",
            body="Omni: {{discount}} off everything until Sunday, {{name}}!",
        ),
    ],
)


def _stub(demo: DemoContext) -> messaging_service_pb2_grpc.MessagingServiceStub:
    return messaging_service_pb2_grpc.MessagingServiceStub(demo.channel("messaging"))


async def is_empty(demo: DemoContext) -> bool:
    try:
        await _stub(demo).GetTemplate(pb.GetTemplateRequest(name=f"templates/{OFFER}"))
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return True
        raise
    return False


async def load(demo: DemoContext) -> DemoResult:
    stub = _stub(demo)
    wanted = [(t.name.removeprefix("templates/"), t) for t in DEFAULT_TEMPLATES] + [(OFFER, OFFER_TEMPLATE)]
    for template_id, template in wanted:
        body = res.Template()
        body.CopyFrom(template)
        body.ClearField("name")
        try:
            await stub.CreateTemplate(
                pb.CreateTemplateRequest(
                    template=body,
                    template_id=template_id,
                    request_id=demo.request_id(f"template:{template_id}"),
                )
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.ALREADY_EXISTS:  # the service created it at start-up
                raise
    names = ", ".join(template_id for template_id, _ in wanted)
    return DemoResult(
        lines=[
            f"templates         {names}",
            "outbox            what the platform sends lands in .omni/outbox/: .venv/bin/omni dev outbox",
        ],
        facts={"templates": [f"templates/{t}" for t, _ in wanted], "offer": f"templates/{OFFER}"},
    )


DEMO = DemoSeed(is_empty=is_empty, load=load)
