"""The timeline fed by real events on JetStream: lifetime figures, exactly-once application,
out-of-order delivery, segments that follow the events, merge and unmerge, erasure receipts."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import grpc
from google.protobuf import field_mask_pb2

from omni.cart.v1 import events_pb2 as cart_ev
from omni.cart.v1 import resources_pb2 as cart_r
from omni.identity.v1 import events_pb2 as id_ev
from omni.identity.v1 import resources_pb2 as id_r
from omni.profile.v1 import profile_service_pb2 as svc
from omni.profile.v1 import resources_pb2 as r
from omni.type.v1 import address_pb2, channel_pb2, erasure_pb2, money_pb2
from omni_runtime.events.consumer import Event
from omni_runtime.testing.events import publish_event
from omni_runtime.timestamps import to_proto, utcnow
from tests.profile.conftest import eventually, expect, uid

P = "customers/{}/profile"


def placed(
    customer: str, order: str, total: int, channel: int, days_ago: float = 0
) -> cart_ev.OrderPlacedEvent:
    when = to_proto(utcnow() - timedelta(days=days_ago))
    return cart_ev.OrderPlacedEvent(
        customer=f"customers/{customer}",
        order=cart_r.Order(
            name=f"customers/{customer}/orders/{order}",
            order_number=order,
            currency_code="EUR",
            total=money_pb2.Money(currency_code="EUR", minor_units=total),
            channel=channel_pb2.ChannelContext(channel=channel),
        ),
        occur_time=when,
    )


def cancelled(customer: str, order: str) -> cart_ev.OrderCancelledEvent:
    return cart_ev.OrderCancelledEvent(
        customer=f"customers/{customer}",
        order=cart_r.Order(name=f"customers/{customer}/orders/{order}"),
        occur_time=to_proto(utcnow()),
    )


def login(customer: str, channel: int) -> id_ev.SessionStartedEvent:
    return id_ev.SessionStartedEvent(
        session=f"customers/{customer}/sessions/{uuid.uuid4().hex[:8]}",
        principal=f"customers/{customer}",
        auth_method=id_r.AUTH_METHOD_PASSWORD,
        channel=channel_pb2.ChannelContext(channel=channel),
        occur_time=to_proto(utcnow()),
    )


async def figures(agent: Any, customer: str) -> r.LifetimeFigures:
    return (await agent.GetProfile(svc.GetProfileRequest(name=P.format(customer)))).lifetime


async def test_checkout_and_login_on_another_channel_reach_timeline_and_figures(omni_infra, agent) -> None:  # type: ignore[no-untyped-def]
    c = uid()
    await publish_event(omni_infra.nats_url, placed(c, "o1", 4500, channel_pb2.CHANNEL_WEB, days_ago=10))
    await publish_event(omni_infra.nats_url, placed(c, "o2", 5500, channel_pb2.CHANNEL_WEB))
    await publish_event(omni_infra.nats_url, login(c, channel_pb2.CHANNEL_MOBILE_APP))

    async def arrived() -> bool:
        listed = await agent.ListInteractions(svc.ListInteractionsRequest(parent=f"customers/{c}"))
        return len(listed.interactions) == 3

    await eventually(arrived)
    life = await figures(agent, c)
    assert life.order_count == 2 and [(m.currency_code, m.minor_units) for m in life.total_spend] == [
        ("EUR", 10000)
    ]
    assert life.average_order_value[0].minor_units == 5000
    assert 9.9 < life.average_days_between_purchases < 10.1
    usage = {u.channel: u for u in life.channels_used}
    assert (
        usage[channel_pb2.CHANNEL_WEB].order_count == 2
        and usage[channel_pb2.CHANNEL_MOBILE_APP].interaction_count == 1
    )
    timeline = await agent.ListInteractions(svc.ListInteractionsRequest(parent=f"customers/{c}"))
    assert timeline.interactions[0].type in (r.Interaction.TYPE_LOGIN, r.Interaction.TYPE_ORDER_PLACED)


async def test_duplicates_and_out_of_order_events_give_identical_figures(omni_infra, agent, profile) -> None:  # type: ignore[no-untyped-def]
    in_order, reversed_, duplicated = uid(), uid(), uid()
    for message in (
        placed(in_order, "a", 1000, 1),
        placed(in_order, "b", 2000, 3, 2),
        cancelled(in_order, "a"),
    ):
        await publish_event(omni_infra.nats_url, message)
    for message in (
        cancelled(reversed_, "a"),
        placed(reversed_, "b", 2000, 3, 2),
        placed(reversed_, "a", 1000, 1),
    ):
        await publish_event(omni_infra.nats_url, message)
    consumer = next(c for c in profile.host.runtime.consumers if c.name == "cart-events")
    for message in (
        placed(duplicated, "a", 1000, 1),
        placed(duplicated, "b", 2000, 3, 2),
        cancelled(duplicated, "a"),
    ):
        event = Event(
            str(uuid.uuid4()), "omni.cart.x", message.DESCRIPTOR.full_name, message.SerializeToString(), {}, 1
        )
        assert await consumer._process_batch([event, event]) == 1  # twice in one fetch
        assert await consumer._process_batch([event]) == 0  # and delivered again later

    async def settled() -> bool:
        return [(await figures(agent, c)).order_count for c in (in_order, reversed_)] == [1, 1]

    await eventually(settled)
    shapes = []
    for c in (in_order, reversed_, duplicated):
        life = await figures(agent, c)
        shapes.append(
            (
                life.order_count,
                [(m.currency_code, m.minor_units) for m in life.total_spend],
                life.first_purchase_time.seconds // 60,
                sorted((u.channel, u.interaction_count, u.order_count) for u in life.channels_used),
            )
        )
    assert shapes[0] == shapes[1] == shapes[2]
    assert shapes[0][1] == [("EUR", 2000)]


async def test_a_segment_gains_and_loses_a_member_on_the_events_that_cross_its_rule(
    omni_infra, stub, make_token, agent
) -> None:  # type: ignore[no-untyped-def]
    from tests.profile.conftest import Caller

    marketer = Caller(stub, make_token("staffMembers/m1", roles=["marketer"]))
    c = uid()
    segment = await marketer.CreateSegment(
        svc.CreateSegmentRequest(
            segment=r.Segment(
                display_name="Big spenders",
                rule=r.SegmentRule(
                    filter="lifetime.total_spend.EUR >= 5000 AND lifetime.order_count >= 1 "
                    f'AND NOT traits.banned = "yes" OR traits.test_id = "{c}-never"'
                ),
            )
        )
    )

    async def ready() -> bool:
        return (
            await marketer.GetSegment(svc.GetSegmentRequest(name=segment.name))
        ).state == r.Segment.STATE_READY

    await eventually(ready)

    async def members() -> list[str]:
        listed = await marketer.ListSegmentMembers(svc.ListSegmentMembersRequest(parent=segment.name))
        return [m.customer for m in listed.members]

    await publish_event(omni_infra.nats_url, placed(c, "big", 6000, 1))

    async def joined() -> bool:
        return f"customers/{c}" in await members()

    await eventually(joined)
    await publish_event(omni_infra.nats_url, cancelled(c, "big"))

    async def left() -> bool:
        return f"customers/{c}" not in await members()

    await eventually(left)
    bad = await expect(
        marketer.CreateSegment(
            svc.CreateSegmentRequest(
                segment=r.Segment(display_name="x", rule=r.SegmentRule(filter="lifetime.bogus > 1"))
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert {v.field for v in bad["BadRequest"].field_violations} == {"segment.rule.filter"}
    await expect(
        marketer.CreateSegment(
            svc.CreateSegmentRequest(
                segment=r.Segment(display_name="x", rule=r.SegmentRule(filter="(given_name = "))
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


async def test_merge_then_unmerge_restores_both_profiles_field_by_field(service, agent) -> None:  # type: ignore[no-untyped-def]
    target, source = uid(), uid()
    for c, given, traits, email in (
        (target, "Ana", {"vip": "true"}, "ana@t.example"),
        (source, "", {"size": "39"}, "ana@s.example"),
    ):
        await service.UpdateProfile(
            svc.UpdateProfileRequest(
                profile=r.Profile(
                    name=P.format(c),
                    given_name=given,
                    family_name="Pop" if c == source else "",
                    traits=traits,
                    contact_points=[r.ContactPoint(kind=r.ContactPoint.KIND_EMAIL, value=email)],
                ),
                update_mask=field_mask_pb2.FieldMask(
                    paths=["given_name", "family_name", "traits", "contact_points"]
                ),
            )
        )
        await service.CreateAddress(
            svc.CreateAddressRequest(
                parent=f"customers/{c}",
                address=r.Address(
                    postal_address=address_pb2.PostalAddress(region_code="RO", address_lines=[f"{c} street"])
                ),
            )
        )
        await service.RecordInteraction(
            svc.RecordInteractionRequest(
                parent=f"customers/{c}", interaction=r.Interaction(type=r.Interaction.TYPE_STORE_VISIT)
            )
        )
    before = {c: await service.GetProfile(svc.GetProfileRequest(name=P.format(c))) for c in (target, source)}
    merged = await agent.MergeProfiles(
        svc.MergeProfilesRequest(name=P.format(target), source_profile=P.format(source))
    )
    assert (
        merged.family_name == "Pop"
        and dict(merged.traits) == {"vip": "true", "size": "39"}
        and len(merged.contact_points) == 2
    )
    gone = await agent.GetProfile(svc.GetProfileRequest(name=P.format(source)))
    assert gone.state == r.Profile.STATE_MERGED and gone.merged_into == P.format(target)
    assert (
        len(
            (
                await agent.ListInteractions(svc.ListInteractionsRequest(parent=f"customers/{target}"))
            ).interactions
        )
        == 2
    )
    await expect(
        agent.MergeProfiles(svc.MergeProfilesRequest(name=P.format(target), source_profile=P.format(target))),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    await expect(
        agent.MergeProfiles(svc.MergeProfilesRequest(name=P.format(target), source_profile=P.format(source))),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    # The target gains something after the merge: it stays the target's.
    await service.RecordInteraction(
        svc.RecordInteractionRequest(
            parent=f"customers/{target}", interaction=r.Interaction(type=r.Interaction.TYPE_CALL)
        )
    )
    undone = await agent.UnmergeProfiles(svc.UnmergeProfilesRequest(name=P.format(source)))
    assert undone.returned_interaction_count == 1 and undone.returned_address_count == 1
    after = {c: await service.GetProfile(svc.GetProfileRequest(name=P.format(c))) for c in (target, source)}
    for c in (target, source):
        a, b = before[c], after[c]
        for name in (
            "state",
            "given_name",
            "family_name",
            "display_name",
            "language_code",
            "primary_email",
            "default_shipping_address",
        ):
            assert getattr(a, name) == getattr(b, name), (c, name)
        assert dict(a.traits) == dict(b.traits) and list(a.contact_points) == list(b.contact_points)
        assert a.create_time == b.create_time
    assert after[target].lifetime.channels_used[0].interaction_count == 2  # its own visit and the later call
    assert after[source].lifetime.channels_used[0].interaction_count == 1
    await expect(
        agent.UnmergeProfiles(svc.UnmergeProfilesRequest(name=P.format(source))),
        grpc.StatusCode.FAILED_PRECONDITION,
    )


async def test_erasure_collects_a_receipt_per_service_and_export_finds_nothing(
    omni_infra, admin, service
) -> None:  # type: ignore[no-untyped-def]
    from omni.inventory.v1 import events_pb2 as inv_ev

    c = uid()
    await service.RecordInteraction(
        svc.RecordInteractionRequest(
            parent=f"customers/{c}", interaction=r.Interaction(type=r.Interaction.TYPE_STORE_VISIT)
        )
    )
    erased = await admin.EraseCustomerData(svc.EraseCustomerDataRequest(name=P.format(c)))
    assert erased.profile.state == r.Profile.STATE_ERASED and erased.erased_interaction_count == 1
    states = {x.service: x.state for x in erased.erasure.receipts}
    assert states["profile"] == r.ErasureServiceReceipt.STATE_DONE
    assert states["cart"] == states["identity"] == r.ErasureServiceReceipt.STATE_PENDING
    assert erased.erasure.state == r.Erasure.STATE_IN_PROGRESS
    await expect(
        admin.MergeProfiles(svc.MergeProfilesRequest(name=P.format(uid()), source_profile=P.format(c))),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    await publish_event(
        omni_infra.nats_url,
        id_ev.CustomerErasedEvent(
            customer=f"customers/{c}", requested_by="staffMembers/root", occur_time=to_proto(utcnow())
        ),
    )
    for message in (cart_ev.CustomerErasureProcessedEvent, inv_ev.CustomerErasureProcessedEvent):
        receipt = erasure_pb2.ErasureReceipt(
            customer=f"customers/{c}",
            service=message.DESCRIPTOR.full_name.split(".")[1],
            state=erasure_pb2.ErasureReceipt.STATE_DONE,
            erased_counts={"rows": 1},
            occur_time=to_proto(utcnow()),
        )
        await publish_event(omni_infra.nats_url, message(receipt=receipt))
    from omni.preferences.v1 import events_pb2 as pref_ev

    failed = erasure_pb2.ErasureReceipt(
        customer=f"customers/{c}",
        service="preferences",
        state=erasure_pb2.ErasureReceipt.STATE_DONE,
        occur_time=to_proto(utcnow()),
    )
    await publish_event(omni_infra.nats_url, pref_ev.CustomerErasureProcessedEvent(receipt=failed))

    async def completed() -> bool:
        return (
            await admin.GetErasure(svc.GetErasureRequest(name=f"customers/{c}/erasure"))
        ).state == r.Erasure.STATE_COMPLETED

    await eventually(completed)
    erasure = await admin.GetErasure(svc.GetErasureRequest(name=f"customers/{c}/erasure"))
    assert {x.service for x in erasure.receipts} == {
        "profile",
        "identity",
        "cart",
        "inventory",
        "preferences",
    }
    assert all(x.HasField("complete_time") for x in erasure.receipts) and erasure.HasField("complete_time")
    export = await admin.ExportCustomerData(svc.ExportCustomerDataRequest(name=P.format(c)))
    assert export.profile.state == r.Profile.STATE_ERASED and not export.interactions and not export.addresses
    assert export.total_interaction_count == 0
    parts = {p.service: p.state for p in export.service_exports}
    assert parts["messaging"] == svc.ServiceDataExport.STATE_NOT_DEPLOYED
    assert parts["cart"] == svc.ServiceDataExport.STATE_UNAVAILABLE  # configured, but stopped here


async def test_customer_view_names_the_services_that_do_not_answer(agent, service) -> None:  # type: ignore[no-untyped-def]
    c = uid()
    await service.RecordInteraction(
        svc.RecordInteractionRequest(
            parent=f"customers/{c}", interaction=r.Interaction(type=r.Interaction.TYPE_STORE_VISIT)
        )
    )
    view = await agent.GetCustomerView(
        svc.GetCustomerViewRequest(name=f"customers/{c}/customerView"), timeout=2.0
    )
    assert list(view.unavailable_sources) == ["cart", "messaging", "preferences"]
    assert view.profile.name == P.format(c) and len(view.recent_interactions) == 1
    assert view.last_channel.channel == channel_pb2.CHANNEL_STORE_POS
    assert view.recent_channel_usage[0].interaction_count == 1


async def test_journey_report_counts_channel_sequences_before_purchases(service, make_token, stub) -> None:  # type: ignore[no-untyped-def]
    from tests.profile.conftest import Caller

    base = utcnow() - timedelta(days=50)  # a window of its own (offline uploads may be old)
    start = base - timedelta(hours=1)
    for _ in range(2):
        c = uid()
        for hours_ago, channel, kind in (
            (30, "social", r.Interaction.TYPE_PAGE_VIEW),
            (20, "web", r.Interaction.TYPE_PRODUCT_VIEW),
            (0.1, "store_pos", r.Interaction.TYPE_ORDER_PLACED),
        ):
            caller = Caller(stub, make_token("serviceClients/pos", roles=["service"]), channel=channel)
            await caller.RecordInteraction(
                svc.RecordInteractionRequest(
                    parent=f"customers/{c}",
                    interaction=r.Interaction(
                        type=kind, occur_time=to_proto(base - timedelta(hours=hours_ago))
                    ),
                )
            )
    marketer = Caller(stub, make_token("staffMembers/m1", roles=["marketer"]))
    report = await marketer.GetJourneyReport(
        svc.GetJourneyReportRequest(
            start_time=to_proto(start), end_time=to_proto(base + timedelta(hours=1)), lookback_days=7
        )
    )
    top = report.paths[0]
    assert list(top.channels) == [
        channel_pb2.CHANNEL_SOCIAL,
        channel_pb2.CHANNEL_WEB,
        channel_pb2.CHANNEL_STORE_POS,
    ]
    assert top.purchase_count == 2 and report.purchase_count == 2 and report.customer_count == 2
    assert (
        report.first_touch[0].channel == channel_pb2.CHANNEL_SOCIAL
        and report.last_touch[0].channel == channel_pb2.CHANNEL_WEB
    )
    assert 29.5 * 3600 < report.median_time_to_purchase.seconds < 30.5 * 3600
    await expect(
        marketer.GetJourneyReport(
            svc.GetJourneyReportRequest(start_time=to_proto(utcnow()), end_time=to_proto(start))
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
