"""Profiles, addresses and recorded interactions over real gRPC, PostgreSQL and tokens."""

from __future__ import annotations

from datetime import timedelta

import grpc
from google.protobuf import field_mask_pb2

from omni.profile.v1 import profile_service_pb2 as svc
from omni.profile.v1 import resources_pb2 as r
from omni.type.v1 import address_pb2
from omni_runtime.timestamps import to_proto, utcnow
from tests.profile.conftest import Caller, expect, rid, uid, violated

OK = grpc.StatusCode


def home(line: str = "Str. Lunga 1") -> r.Address:
    return r.Address(
        display_name="Home",
        postal_address=address_pb2.PostalAddress(region_code="RO", address_lines=[line], locality="Cluj"),
    )


async def test_profile_update_with_etag_and_request_id(customer_of) -> None:  # type: ignore[no-untyped-def]
    c = uid()
    me: Caller = customer_of(c)
    empty = await me.GetProfile(svc.GetProfileRequest(name=f"customers/{c}/profile"))
    assert empty.state == r.Profile.STATE_ACTIVE and not empty.HasField("create_time")
    request = svc.UpdateProfileRequest(
        profile=r.Profile(
            name=f"customers/{c}/profile",
            given_name="Ana",
            traits={"vip": "true"},
            contact_points=[
                r.ContactPoint(kind=r.ContactPoint.KIND_EMAIL, value="ana@example.com", verified=True)
            ],
            etag=empty.etag,
        ),
        update_mask=field_mask_pb2.FieldMask(paths=["given_name", "traits", "contact_points"]),
        request_id=rid(),
    )
    updated = await me.UpdateProfile(request)
    again = await me.UpdateProfile(request)  # a retry: the same answer, nothing twice
    assert updated == again and updated.given_name == "Ana" and updated.traits["vip"] == "true"
    assert (
        updated.primary_email == "ana@example.com" and not updated.contact_points[0].verified
    )  # callers cannot verify
    assert updated.HasField("create_time") and updated.etag != empty.etag
    stale = svc.UpdateProfileRequest(
        profile=r.Profile(name=f"customers/{c}/profile", display_name="x", etag=empty.etag),
        update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
    )
    await expect(me.UpdateProfile(stale), OK.ABORTED)
    one = svc.UpdateProfileRequest(
        profile=r.Profile(name=f"customers/{c}/profile", traits={"size": "39"}),
        update_mask=field_mask_pb2.FieldMask(paths=["traits.size"]),
    )
    assert dict((await me.UpdateProfile(one)).traits) == {"vip": "true", "size": "39"}


async def test_bad_profile_input_is_refused_with_every_field(customer_of) -> None:  # type: ignore[no-untyped-def]
    c = uid()
    me: Caller = customer_of(c)
    bad = svc.UpdateProfileRequest(
        profile=r.Profile(
            name=f"customers/{c}/profile",
            traits={f"k{i}": "v" for i in range(101)},
            contact_points=[r.ContactPoint(kind=r.ContactPoint.KIND_PHONE, value="0712")],
            language_code="not a tag!",
        ),
        update_mask=field_mask_pb2.FieldMask(paths=["traits", "contact_points", "language_code", "lifetime"]),
    )
    details = await expect(me.UpdateProfile(bad), OK.INVALID_ARGUMENT)
    assert {
        "profile.traits",
        "profile.contact_points[0].value",
        "profile.language_code",
        "update_mask.paths[3]",
    } <= violated(details)


async def test_customers_read_only_their_own_profile(customer_of, agent) -> None:  # type: ignore[no-untyped-def]
    a, b = uid(), uid()
    await expect(
        customer_of(a).GetProfile(svc.GetProfileRequest(name=f"customers/{b}/profile")), OK.PERMISSION_DENIED
    )
    assert (
        await agent.GetProfile(svc.GetProfileRequest(name=f"customers/{b}/profile"))
    ).state == r.Profile.STATE_ACTIVE
    merge = svc.MergeProfilesRequest(name=f"customers/{a}/profile", source_profile=f"customers/{b}/profile")
    await expect(customer_of(a).MergeProfiles(merge), OK.PERMISSION_DENIED)


async def test_addresses_with_defaults(customer_of) -> None:  # type: ignore[no-untyped-def]
    c = uid()
    me: Caller = customer_of(c)
    first = await me.CreateAddress(
        svc.CreateAddressRequest(parent=f"customers/{c}", address=home(), request_id=rid())
    )
    assert first.default_shipping and first.default_billing  # the first address is both defaults
    office = home("Bd. Eroilor 5")
    office.display_name, office.default_shipping = "Office", True
    second = await me.CreateAddress(svc.CreateAddressRequest(parent=f"customers/{c}", address=office))
    listed = await me.ListAddresses(svc.ListAddressesRequest(parent=f"customers/{c}"))
    assert len(listed.addresses) == 2
    by_name = {a.name: a for a in listed.addresses}
    assert by_name[second.name].default_shipping and not by_name[first.name].default_shipping
    assert by_name[first.name].default_billing
    profile = await me.GetProfile(svc.GetProfileRequest(name=f"customers/{c}/profile"))
    assert profile.default_shipping_address == second.name and profile.default_billing_address == first.name
    assert by_name[first.name].etag != first.etag  # losing the shipping default changed it
    await expect(
        me.UpdateAddress(
            svc.UpdateAddressRequest(
                address=r.Address(name=first.name, etag=first.etag),
                update_mask=field_mask_pb2.FieldMask(paths=["phone"]),
            )
        ),
        OK.ABORTED,
    )
    current = by_name[first.name]
    changed = await me.UpdateAddress(
        svc.UpdateAddressRequest(
            address=r.Address(name=first.name, instructions="ring twice", etag=current.etag),
            update_mask=field_mask_pb2.FieldMask(paths=["instructions"]),
        )
    )
    assert changed.instructions == "ring twice"
    await expect(me.DeleteAddress(svc.DeleteAddressRequest(name=first.name, etag=first.etag)), OK.ABORTED)
    await me.DeleteAddress(svc.DeleteAddressRequest(name=first.name, etag=changed.etag))
    await expect(me.GetAddress(svc.GetAddressRequest(name=first.name)), OK.NOT_FOUND)
    details = await expect(
        me.CreateAddress(svc.CreateAddressRequest(parent=f"customers/{c}", address=r.Address())),
        OK.INVALID_ARGUMENT,
    )
    assert "address.postal_address" in violated(details)


async def test_record_interaction_bounds_and_listing(service, customer_of) -> None:  # type: ignore[no-untyped-def]
    c = uid()
    parent = f"customers/{c}"
    future = r.Interaction(
        type=r.Interaction.TYPE_STORE_VISIT, occur_time=to_proto(utcnow() + timedelta(minutes=6))
    )
    details = await expect(
        service.RecordInteraction(svc.RecordInteractionRequest(parent=parent, interaction=future)),
        OK.INVALID_ARGUMENT,
    )
    assert "interaction.occur_time" in violated(details)
    crowded = r.Interaction(type=r.Interaction.TYPE_CALL, attributes={f"a{i}": "x" for i in range(51)})
    details = await expect(
        service.RecordInteraction(svc.RecordInteractionRequest(parent=parent, interaction=crowded)),
        OK.INVALID_ARGUMENT,
    )
    assert "interaction.attributes" in violated(details)
    offline = r.Interaction(
        type=r.Interaction.TYPE_ORDER_PLACED,
        occur_time=to_proto(utcnow() - timedelta(days=3)),  # an offline POS upload
        subject=f"{parent}/orders/pos-1",
        attributes={"currency_code": "EUR", "total_minor_units": "12000"},
    )
    request = svc.RecordInteractionRequest(parent=parent, interaction=offline, request_id=rid())
    recorded = await service.RecordInteraction(request)
    assert (await service.RecordInteraction(request)).name == recorded.name  # recorded once
    assert recorded.channel.channel == 3 and recorded.recorded_by == "serviceClients/pos"  # from metadata
    await service.RecordInteraction(
        svc.RecordInteractionRequest(
            parent=parent, interaction=r.Interaction(type=r.Interaction.TYPE_PAGE_VIEW)
        )
    )
    listed = await customer_of(c).ListInteractions(svc.ListInteractionsRequest(parent=parent))
    assert [i.type for i in listed.interactions] == [
        r.Interaction.TYPE_PAGE_VIEW,
        r.Interaction.TYPE_ORDER_PLACED,
    ]
    only = await service.ListInteractions(
        svc.ListInteractionsRequest(parent=parent, filter="type = TYPE_ORDER_PLACED")
    )
    assert [i.name for i in only.interactions] == [recorded.name]
    assert (
        await service.GetInteraction(svc.GetInteractionRequest(name=recorded.name))
    ).subject == offline.subject
    figures = (await service.GetProfile(svc.GetProfileRequest(name=f"{parent}/profile"))).lifetime
    assert figures.order_count == 1 and figures.total_spend[0].minor_units == 12000
    assert {u.channel for u in figures.channels_used} == {3}
    await expect(
        service.ListInteractions(svc.ListInteractionsRequest(parent=parent, filter="nope = 1")),
        OK.INVALID_ARGUMENT,
    )
