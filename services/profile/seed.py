"""Profile's demo data for the local platform (``omni_runtime.demo`` runs ``DEMO``).

The demo customer (identity's seed; its registration reaches profile as an event) gets a name,
a language, a birthday, a loyalty trait, a home address as the default for shipping and billing,
and a short history on three channels before the demo journey: a product page on the web, a
visit to the demo store (``locations/store-1``) and a call to the call center. Two segments show
the rule language: active in the last 30 days (``days_since``) and the loyalty tier. All through
ProfileService as the demo admin, with fixed request ids, so an interrupted load is finished by
the next start without a second address or a repeated touchpoint.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf import field_mask_pb2
from google.type import date_pb2

from omni.profile.v1 import profile_service_pb2 as pb
from omni.profile.v1 import profile_service_pb2_grpc, resources_pb2
from omni.type.v1 import address_pb2, channel_pb2
from omni_runtime.demo import DemoContext, DemoResult, DemoSeed
from omni_runtime.timestamps import to_proto

IT = resources_pb2.Interaction
SEGMENTS = (
    ("active-30d", "Active in the last 30 days", "days_since(lifetime.last_interaction_time) < 30"),
    ("silver-members", "Silver loyalty members", 'traits.loyalty_tier = "silver"'),
)


def _stub(demo: DemoContext) -> profile_service_pb2_grpc.ProfileServiceStub:
    return profile_service_pb2_grpc.ProfileServiceStub(demo.channel("profile"))


async def is_empty(demo: DemoContext) -> bool:
    return not (await _stub(demo).ListSegments(pb.ListSegmentsRequest(page_size=1))).segments


def _history(store: str, item: str, now: datetime) -> list[tuple[str, resources_pb2.Interaction]]:
    def at(days: float) -> object:
        return to_proto(now - timedelta(days=days))

    return [
        (
            "web-product-view",
            IT(
                type=IT.TYPE_PRODUCT_VIEW,
                channel=channel_pb2.ChannelContext(channel=channel_pb2.CHANNEL_WEB, device="browser-demo"),
                occur_time=at(3),  # type: ignore[arg-type]
                subject=item,
                summary="Looked at the product page",
            ),
        ),
        (
            "store-visit",
            IT(
                type=IT.TYPE_STORE_VISIT,
                channel=channel_pb2.ChannelContext(channel=channel_pb2.CHANNEL_STORE_POS, store=store),
                occur_time=at(2),  # type: ignore[arg-type]
                subject=store,
                summary="Tried the item on in the store",
                visit_id="demo-visit-1",
            ),
        ),
        (
            "call",
            IT(
                type=IT.TYPE_CALL,
                channel=channel_pb2.ChannelContext(channel=channel_pb2.CHANNEL_CALL_CENTER),
                occur_time=at(1),  # type: ignore[arg-type]
                summary="Asked whether the store can keep a size for pickup",
                attributes={"intent": "pickup_question"},
            ),
        ),
    ]


async def load(demo: DemoContext) -> DemoResult:
    stub = _stub(demo)
    customer = demo.facts["identity"]["customer"]
    inventory = demo.facts.get("inventory", {})
    store = inventory.get("associate_store") or "locations/store-1"
    item = f"items/{inventory['item']}" if inventory.get("item") else ""
    await stub.UpdateProfile(
        pb.UpdateProfileRequest(
            profile=resources_pb2.Profile(
                name=f"{customer}/profile",
                given_name="Demo",
                family_name="Customer",
                language_code="ro-RO",
                birthday=date_pb2.Date(year=1990, month=5, day=17),
                traits={"loyalty_tier": "silver", "shoe_size": "39"},
            ),
            update_mask=field_mask_pb2.FieldMask(
                paths=["given_name", "family_name", "language_code", "birthday", "traits"]
            ),
            request_id=demo.request_id("profile"),
        )
    )
    await stub.CreateAddress(
        pb.CreateAddressRequest(
            parent=customer,
            address=resources_pb2.Address(
                display_name="Home",
                postal_address=address_pb2.PostalAddress(
                    region_code="RO",
                    postal_code="400001",
                    locality="Cluj-Napoca",
                    address_lines=["Strada Memorandumului 10"],
                    recipient="Demo Customer",
                ),
                default_shipping=True,
                default_billing=True,
            ),
            request_id=demo.request_id("address-home"),
        )
    )
    now = datetime.now(UTC)
    for key, interaction in _history(store, item, now):
        await stub.RecordInteraction(
            pb.RecordInteractionRequest(
                parent=customer, interaction=interaction, request_id=demo.request_id(f"interaction-{key}")
            )
        )
    for segment_id, title, rule in SEGMENTS:
        await stub.CreateSegment(
            pb.CreateSegmentRequest(
                segment=resources_pb2.Segment(
                    display_name=title, rule=resources_pb2.SegmentRule(filter=rule)
                ),
                request_id=demo.request_id(f"segment-{segment_id}"),
            )
        )
    return DemoResult(
        lines=[
            f"profile           {customer}: name, language, birthday, home address, 3 touchpoints"
            " (web, store, call center) before the demo journey",
            f"segments          {', '.join(t for _, t, _ in SEGMENTS)}",
        ],
        facts={"customer_view": f"{customer}/customerView"},
    )


DEMO = DemoSeed(is_empty=is_empty, load=load)
