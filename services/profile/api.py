"""The ProfileService servicer: validates requests (every bad field at once) and hands them to
the use cases (profiles.py, interactions.py, views.py, segment_admin.py, merges.py,
privacy.py, journeys.py)."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta

import grpc
from google.protobuf import empty_pb2

from omni.profile.v1 import profile_service_pb2 as svc
from omni.profile.v1 import profile_service_pb2_grpc as svc_grpc
from omni.profile.v1 import resources_pb2 as r
from omni.type.v1 import erasure_pb2
from omni_runtime.errors import OmniError, Unavailable
from omni_runtime.listing import decode_page_token, encode_page_token, query_fingerprint
from omni_runtime.timestamps import to_proto, utcnow
from omni_runtime.validation import Checker
from services.profile.adapters.peers import Peers
from services.profile.config import ProfileConfig
from services.profile.domain import rules
from services.profile.domain.profile import LANGUAGE, MAX_NAME, check_contact_points, check_traits
from services.profile.interactions import FUTURE_BOUND, Interactions
from services.profile.journeys import Journeys
from services.profile.merges import Merges
from services.profile.privacy import Privacy
from services.profile.profiles import DOMAIN, Profiles
from services.profile.segment_admin import SegmentAdmin
from services.profile.views import Views

PROFILE = "customers/{customer}/profile"
VIEW = "customers/{customer}/customerView"
CUSTOMER = "customers/{customer}"
ADDRESS = "customers/{customer}/addresses/{address}"
INTERACTION = "customers/{customer}/interactions/{interaction}"
SEGMENT = "segments/{segment}"
ERASURE = "customers/{customer}/erasure"
PROFILE_FIELDS = (
    "given_name",
    "family_name",
    "display_name",
    "contact_points",
    "language_code",
    "birthday",
    "traits",
)
ADDRESS_FIELDS = (
    "display_name",
    "postal_address",
    "phone",
    "instructions",
    "default_shipping",
    "default_billing",
)
SEGMENT_FIELDS = ("display_name", "description", "rule", "mode")
MAX_ATTRIBUTES = 50


def _profile_values(check: Checker, profile: r.Profile, paths: list[str]) -> None:
    for path in paths:
        if path in ("given_name", "family_name", "display_name"):
            check.length(f"profile.{path}", getattr(profile, path), max_len=MAX_NAME)
        elif (
            path == "language_code"
            and profile.language_code
            and not LANGUAGE.fullmatch(profile.language_code)
        ):
            check.fail("profile.language_code", "must be a BCP-47 tag such as ro-RO", "INVALID_LANGUAGE")
        elif path == "birthday" and profile.HasField("birthday"):
            b = profile.birthday
            if not (1 <= b.month <= 12 and 1 <= b.day <= 31) or (
                b.year and not 1900 <= b.year <= utcnow().year
            ):
                check.fail("profile.birthday", "must be a real date (year 0 when unknown)", "INVALID_DATE")
        elif path == "contact_points":
            check_contact_points(check, "profile.contact_points", profile.contact_points)
        elif path == "traits" or path.startswith("traits."):
            check_traits(check, "profile.traits", profile.traits)


def _postal(check: Checker, field: str, address: r.Address) -> None:
    p = address.postal_address
    if not address.HasField("postal_address"):
        check.fail(field, "is required", "REQUIRED")
        return
    if not p.region_code or len(p.region_code) != 2 or not p.region_code.isupper():
        check.fail(f"{field}.region_code", "must be a CLDR region code such as RO", "INVALID_REGION")
    if not any(line.strip() for line in p.address_lines):
        check.fail(f"{field}.address_lines", "needs at least one line", "REQUIRED")


def _rule(check: Checker, field: str, text: str) -> None:
    try:
        rules.parse(text)
    except rules.RuleError as exc:
        check.fail(field, str(exc), "INVALID_FILTER")


class ProfileServicer(svc_grpc.ProfileServiceServicer):
    def __init__(
        self,
        config: ProfileConfig,
        profiles: Profiles,
        interactions: Interactions,
        views: Views,
        segments: SegmentAdmin,
        merges: Merges,
        privacy: Privacy,
        journeys: Journeys,
        peers: Peers,
    ) -> None:
        self.config = config
        self.profiles = profiles
        self.interactions = interactions
        self.views = views
        self.segments = segments
        self.merges = merges
        self.privacy = privacy
        self.journeys = journeys
        self.peers = peers

    # -- profiles -------------------------------------------------------------------------------

    async def GetProfile(
        self, request: svc.GetProfileRequest, context: grpc.aio.ServicerContext
    ) -> r.Profile:
        check = Checker()
        customer = check.name("name", request.name, PROFILE).get("customer", "")
        check.raise_if_invalid()
        return await self.profiles.get(customer)

    async def UpdateProfile(
        self, request: svc.UpdateProfileRequest, context: grpc.aio.ServicerContext
    ) -> r.Profile:
        check = Checker()
        customer = check.name("profile.name", request.profile.name, PROFILE).get("customer", "")
        paths = check.update_mask("update_mask", request.update_mask, PROFILE_FIELDS, r.Profile())
        for i, path in enumerate(paths):
            if path.startswith("traits.") and not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", path[7:]):
                check.fail(f"update_mask.paths[{i}]", "trait keys are lower_snake_case", "INVALID_KEY")
            elif "." in path and not path.startswith("traits."):
                check.fail(f"update_mask.paths[{i}]", f"{path!r} cannot be updated alone", "INVALID_PATH")
        _profile_values(check, request.profile, paths)
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()
        return await self.profiles.update(request, customer, paths)

    async def GetCustomerView(
        self, request: svc.GetCustomerViewRequest, context: grpc.aio.ServicerContext
    ) -> r.CustomerView:
        check = Checker()
        customer = check.name("name", request.name, VIEW).get("customer", "")
        check.range("recent_interaction_count", request.recent_interaction_count, low=0, high=100)
        check.range("recent_order_count", request.recent_order_count, low=0, high=20)
        window = (
            timedelta(seconds=request.activity_window.seconds)
            if request.HasField("activity_window")
            else timedelta(days=90)
        )
        if not timedelta(0) < window <= timedelta(days=730):
            check.fail("activity_window", "must be more than 0 and at most 730 days", "OUT_OF_RANGE")
        check.raise_if_invalid()
        return await self.views.view(
            customer, request.recent_interaction_count or 20, window, request.recent_order_count or 5
        )

    # -- addresses ------------------------------------------------------------------------------

    async def CreateAddress(
        self, request: svc.CreateAddressRequest, context: grpc.aio.ServicerContext
    ) -> r.Address:
        check = Checker()
        customer = check.name("parent", request.parent, CUSTOMER).get("customer", "")
        _postal(check, "address.postal_address", request.address)
        check.length("address.display_name", request.address.display_name, max_len=100)
        check.length("address.instructions", request.address.instructions, max_len=500)
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()
        return await self.profiles.create_address(request, customer)

    async def GetAddress(
        self, request: svc.GetAddressRequest, context: grpc.aio.ServicerContext
    ) -> r.Address:
        check = Checker()
        found = check.name("name", request.name, ADDRESS)
        check.raise_if_invalid()
        return await self.profiles.get_address(found["customer"], found["address"])

    async def ListAddresses(
        self, request: svc.ListAddressesRequest, context: grpc.aio.ServicerContext
    ) -> svc.ListAddressesResponse:
        check = Checker()
        customer = check.name("parent", request.parent, CUSTOMER).get("customer", "")
        check.raise_if_invalid()
        return await self.profiles.list_addresses(request, customer)

    async def UpdateAddress(
        self, request: svc.UpdateAddressRequest, context: grpc.aio.ServicerContext
    ) -> r.Address:
        check = Checker()
        found = check.name("address.name", request.address.name, ADDRESS)
        paths = check.update_mask("update_mask", request.update_mask, ADDRESS_FIELDS, r.Address())
        if "postal_address" in paths:
            _postal(check, "address.postal_address", request.address)
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()
        return await self.profiles.update_address(request, found["customer"], found["address"], paths)

    async def DeleteAddress(
        self, request: svc.DeleteAddressRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        check = Checker()
        found = check.name("name", request.name, ADDRESS)
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()
        await self.profiles.delete_address(request, found["customer"], found["address"])
        return empty_pb2.Empty()

    # -- interactions ---------------------------------------------------------------------------

    async def RecordInteraction(
        self, request: svc.RecordInteractionRequest, context: grpc.aio.ServicerContext
    ) -> r.Interaction:
        check = Checker()
        customer = check.name("parent", request.parent, CUSTOMER).get("customer", "")
        i = request.interaction
        if i.type not in r.Interaction.Type.values() or i.type == r.Interaction.TYPE_UNSPECIFIED:
            check.fail("interaction.type", "is required: one of the Interaction.Type values", "REQUIRED")
        if (
            i.HasField("occur_time")
            and i.occur_time.ToDatetime(tzinfo=utcnow().tzinfo) > utcnow() + FUTURE_BOUND
        ):
            check.fail("interaction.occur_time", "is more than 5 minutes in the future", "FUTURE_TIME")
        if len(i.attributes) > MAX_ATTRIBUTES:
            check.fail("interaction.attributes", f"at most {MAX_ATTRIBUTES} attributes", "TOO_MANY")
        for name, value in i.attributes.items():
            if len(name) > 64 or len(value) > 1024:
                check.fail(
                    f"interaction.attributes.{name[:64]}",
                    "keys are at most 64 and values 1024 characters",
                    "INVALID_LENGTH",
                )
        check.length("interaction.summary", i.summary, max_len=500)
        check.length("interaction.subject", i.subject, max_len=300)
        check.length("interaction.visit_id", i.visit_id, max_len=128)
        if i.staff_member:
            check.name("interaction.staff_member", i.staff_member, "staffMembers/{staff_member}")
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()
        return await self.interactions.record(request, customer)

    async def GetInteraction(
        self, request: svc.GetInteractionRequest, context: grpc.aio.ServicerContext
    ) -> r.Interaction:
        check = Checker()
        found = check.name("name", request.name, INTERACTION)
        check.raise_if_invalid()
        return await self.interactions.get(found["customer"], found["interaction"])

    async def ListInteractions(
        self, request: svc.ListInteractionsRequest, context: grpc.aio.ServicerContext
    ) -> svc.ListInteractionsResponse:
        check = Checker()
        customer = check.name("parent", request.parent, CUSTOMER).get("customer", "")
        check.raise_if_invalid()
        return await self.interactions.list(request, customer)

    # -- segments -------------------------------------------------------------------------------

    async def CreateSegment(
        self, request: svc.CreateSegmentRequest, context: grpc.aio.ServicerContext
    ) -> r.Segment:
        check = Checker()
        if check.require("segment.display_name", request.segment.display_name.strip()):
            check.length("segment.display_name", request.segment.display_name, max_len=200)
        check.length("segment.description", request.segment.description, max_len=2000)
        _rule(check, "segment.rule.filter", request.segment.rule.filter)
        if request.segment.mode not in r.Segment.Mode.values():
            check.fail("segment.mode", "must be MODE_DYNAMIC or MODE_SNAPSHOT", "INVALID_ENUM")
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()
        return await self.segments.create(request)

    async def GetSegment(
        self, request: svc.GetSegmentRequest, context: grpc.aio.ServicerContext
    ) -> r.Segment:
        check = Checker()
        ident = check.name("name", request.name, SEGMENT).get("segment", "")
        check.raise_if_invalid()
        return await self.segments.get(ident)

    async def ListSegments(
        self, request: svc.ListSegmentsRequest, context: grpc.aio.ServicerContext
    ) -> svc.ListSegmentsResponse:
        return await self.segments.list(request)

    async def UpdateSegment(
        self, request: svc.UpdateSegmentRequest, context: grpc.aio.ServicerContext
    ) -> r.Segment:
        check = Checker()
        ident = check.name("segment.name", request.segment.name, SEGMENT).get("segment", "")
        paths = check.update_mask(
            "update_mask", request.update_mask, (*SEGMENT_FIELDS, "rule.filter"), r.Segment()
        )
        if "display_name" in paths and check.require(
            "segment.display_name", request.segment.display_name.strip()
        ):
            check.length("segment.display_name", request.segment.display_name, max_len=200)
        if "rule" in paths or "rule.filter" in paths:
            _rule(check, "segment.rule.filter", request.segment.rule.filter)
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()
        return await self.segments.update(request, ident, paths)

    async def DeleteSegment(
        self, request: svc.DeleteSegmentRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        check = Checker()
        ident = check.name("name", request.name, SEGMENT).get("segment", "")
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()
        await self.segments.delete(request, ident)
        return empty_pb2.Empty()

    async def RecomputeSegment(
        self, request: svc.RecomputeSegmentRequest, context: grpc.aio.ServicerContext
    ) -> r.Segment:
        check = Checker()
        ident = check.name("name", request.name, SEGMENT).get("segment", "")
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()
        return await self.segments.recompute(request, ident)

    async def ListSegmentMembers(
        self, request: svc.ListSegmentMembersRequest, context: grpc.aio.ServicerContext
    ) -> svc.ListSegmentMembersResponse:
        check = Checker()
        ident = check.name("parent", request.parent, SEGMENT).get("segment", "")
        check.raise_if_invalid()
        return await self.segments.members(request, ident)

    # -- merges ---------------------------------------------------------------------------------

    async def MergeProfiles(
        self, request: svc.MergeProfilesRequest, context: grpc.aio.ServicerContext
    ) -> r.Profile:
        check = Checker()
        target = check.name("name", request.name, PROFILE).get("customer", "")
        source = check.name("source_profile", request.source_profile, PROFILE).get("customer", "")
        if target and target == source:
            check.fail("source_profile", "must differ from the target profile", "SELF_MERGE")
        if request.reason not in r.MergeReason.values():
            check.fail("reason", "must be a MergeReason", "INVALID_ENUM")
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()
        return await self.merges.merge_request(request, target, source)

    async def UnmergeProfiles(
        self, request: svc.UnmergeProfilesRequest, context: grpc.aio.ServicerContext
    ) -> svc.UnmergeProfilesResponse:
        check = Checker()
        source = check.name("name", request.name, PROFILE).get("customer", "")
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()
        return await self.merges.unmerge_request(request, source)

    # -- journeys -------------------------------------------------------------------------------

    async def GetJourneyReport(
        self, request: svc.GetJourneyReportRequest, context: grpc.aio.ServicerContext
    ) -> svc.JourneyReport:
        check = Checker()
        end = (
            request.end_time.ToDatetime(tzinfo=utcnow().tzinfo) if request.HasField("end_time") else utcnow()
        )
        start = (
            request.start_time.ToDatetime(tzinfo=utcnow().tzinfo)
            if request.HasField("start_time")
            else end - timedelta(days=30)
        )
        if start >= end:
            check.fail("start_time", "must be before end_time", "INVALID_WINDOW")
        elif end - start > timedelta(days=366):
            check.fail("end_time", "the window is at most 366 days", "OUT_OF_RANGE")
        check.range("lookback_days", request.lookback_days, low=0, high=365)
        check.range("max_paths", request.max_paths, low=0, high=100)
        check.range("max_path_length", request.max_path_length, low=0, high=10)
        check.raise_if_invalid()
        return await self.journeys.report(
            start, end, request.lookback_days or 30, request.max_paths or 10, request.max_path_length or 5
        )

    # -- privacy --------------------------------------------------------------------------------

    async def EraseCustomerData(
        self, request: svc.EraseCustomerDataRequest, context: grpc.aio.ServicerContext
    ) -> svc.EraseCustomerDataResponse:
        check = Checker()
        customer = check.name("name", request.name, PROFILE).get("customer", "")
        check.request_id("request_id", request.request_id)
        check.raise_if_invalid()
        return await self.privacy.erase_request(request, customer)

    async def GetErasure(
        self, request: svc.GetErasureRequest, context: grpc.aio.ServicerContext
    ) -> r.Erasure:
        check = Checker()
        customer = check.name("name", request.name, ERASURE).get("customer", "")
        check.raise_if_invalid()
        return await self.privacy.get_erasure(customer)

    async def ExportCustomerData(
        self, request: svc.ExportCustomerDataRequest, context: grpc.aio.ServicerContext
    ) -> svc.ExportCustomerDataResponse:
        check = Checker()
        customer = check.name("name", request.name, PROFILE).get("customer", "")
        size = min(check.page_size("page_size", request.page_size) if request.page_size else 500, 2000)
        fingerprint = query_fingerprint(customer, "export")
        position = None
        try:
            position = decode_page_token(request.page_token, fingerprint, domain=DOMAIN)
        except OmniError as exc:
            check.violations.extend(getattr(exc, "violations", []))
        check.raise_if_invalid()
        if position is None:
            at, after_id, first = utcnow(), 0, True
        else:
            from datetime import datetime

            at, after_id, first = datetime.fromisoformat(str(position[0])), int(str(position[1])), False
        page, last = await self.privacy.export_page(customer, size, after_id, first, at)
        if last is not None:
            page.next_page_token = encode_page_token([at.isoformat(), last], fingerprint)
        if first:
            page.service_exports.extend(await self._service_exports(f"customers/{customer}"))
        return page

    async def _service_exports(self, customer: str) -> list[svc.ServiceDataExport]:
        async def one(service: str) -> svc.ServiceDataExport:
            part = svc.ServiceDataExport(service=service)
            if service not in self.config.peers:
                part.state = svc.ServiceDataExport.STATE_NOT_DEPLOYED
                return part
            try:
                for record in await self.peers.export(service, customer):
                    part.records.add().Pack(record)
                part.state = svc.ServiceDataExport.STATE_INCLUDED
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:  # holds nothing about the customer
                    part.state = svc.ServiceDataExport.STATE_INCLUDED
                    del part.records[:]
                else:
                    part.state = svc.ServiceDataExport.STATE_UNAVAILABLE
                    part.failure_reason = f"{exc.code().name}: {exc.details() or ''}"[:300]
            return part

        return list(
            await asyncio.gather(
                *(one(s) for s in ("identity", "cart", "inventory", "preferences", "messaging"))
            )
        )


_ = (erasure_pb2, to_proto, Unavailable)
