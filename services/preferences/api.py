"""The PreferencesService servicer: validates requests, calls the use cases, converts.

Every request is validated completely before any work (one INVALID_ARGUMENT listing every bad
field). Authentication and role checks (a customer acts on their own resources only) already ran
in the runtime's interceptors, from the contract's ``omni.type.v1.auth`` options.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import grpc
from google.protobuf import empty_pb2

from omni.preferences.v1 import preferences_service_pb2 as svc
from omni.preferences.v1 import preferences_service_pb2_grpc
from omni.preferences.v1 import resources_pb2 as res
from omni.type.v1 import channel_pb2 as ch
from omni_runtime.errors import InvalidArgument
from omni_runtime.validation import Checker
from services.preferences import audiences, consents, decisions, preferences
from services.preferences.convert import CONSENT, CUSTOMER, PREFERENCES
from services.preferences.domain import DOMAIN, channels, checks
from services.preferences.txn import Unit

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

SETTABLE_STATES = (res.CONSENT_STATE_GRANTED, res.CONSENT_STATE_DENIED, res.CONSENT_STATE_WITHDRAWN)
PURPOSES = (res.CONTACT_PURPOSE_MARKETING, res.CONTACT_PURPOSE_TRANSACTIONAL, res.CONTACT_PURPOSE_URGENT)
MAX_EVIDENCE = 2000
MAX_TOKEN = 200


def _raise_if_invalid(check: Checker) -> None:
    if check.violations:
        raise InvalidArgument(check.violations, domain=DOMAIN)


def _purpose(check: Checker, value: int) -> int:
    if value == res.CONTACT_PURPOSE_UNSPECIFIED:
        return res.CONTACT_PURPOSE_MARKETING
    if value not in PURPOSES:
        check.fail("purpose", "must be MARKETING, TRANSACTIONAL or URGENT", "INVALID_PURPOSE")
    return value


def _populated(prefs: res.Preferences) -> list[str]:
    """AIP-134: without a mask, the fields the request sets."""
    out = [f for f in ("preferred_channels", "quiet_hours", "frequency_caps") if len(getattr(prefs, f))]
    return out + [f for f in ("time_zone", "language_code", "preferred_store") if getattr(prefs, f)]


class PreferencesServicer(preferences_service_pb2_grpc.PreferencesServiceServicer):
    def __init__(self, unit: Unit) -> None:
        self.unit = unit

    # --- preferences ----------------------------------------------------------------------------

    async def GetPreferences(self, request: svc.GetPreferencesRequest, context: Context) -> res.Preferences:
        check = Checker()
        ids = check.name("name", request.name, PREFERENCES)
        _raise_if_invalid(check)
        return await preferences.get_preferences(self.unit, ids["customer"])

    async def UpdatePreferences(
        self, request: svc.UpdatePreferencesRequest, context: Context
    ) -> res.Preferences:
        check = Checker()
        ids = check.name("preferences.name", request.preferences.name, PREFERENCES)
        if request.update_mask.paths:
            fields = check.update_mask(
                "update_mask", request.update_mask, preferences.FIELDS, res.Preferences()
            )
        else:
            fields = _populated(request.preferences)
        checks.preferences(check, request.preferences, fields)
        check.request_id("request_id", request.request_id)
        _raise_if_invalid(check)
        return await preferences.update_preferences(self.unit, request, ids["customer"], fields)

    # --- decisions ------------------------------------------------------------------------------

    async def DecideContact(
        self, request: svc.DecideContactRequest, context: Context
    ) -> svc.DecideContactResponse:
        check = Checker()
        ids = check.name("name", request.name, PREFERENCES)
        checks.topic(check, "topic", request.topic, wildcard=False)
        purpose = _purpose(check, request.purpose)
        checks.contact_channel(check, "channel", request.channel, required=False)
        for i, c in enumerate(request.eligible_channels):
            checks.contact_channel(check, f"eligible_channels[{i}]", c)
        if request.HasField("evaluate_time") and not 0 < request.evaluate_time.seconds < 253402300800:
            check.fail("evaluate_time", "must be a time between 1970 and 9999", "OUT_OF_RANGE")
        check.request_id("request_id", request.request_id, required=request.reserve)
        _raise_if_invalid(check)
        return await decisions.decide_contact(self.unit, request, ids["customer"], purpose)

    async def RecordContact(self, request: svc.RecordContactRequest, context: Context) -> empty_pb2.Empty:
        check = Checker()
        ids = check.name("name", request.name, PREFERENCES)
        checks.contact_channel(check, "channel", request.channel)
        checks.topic(check, "topic", request.topic, wildcard=False)
        _purpose(check, request.purpose)
        if request.HasField("contact_time") and not 0 < request.contact_time.seconds < 253402300800:
            check.fail("contact_time", "must be a time between 1970 and 9999", "OUT_OF_RANGE")
        check.request_id("request_id", request.request_id)
        _raise_if_invalid(check)
        return await decisions.record_contact(self.unit, request, ids["customer"])

    # --- consents -------------------------------------------------------------------------------

    async def SetConsent(self, request: svc.SetConsentRequest, context: Context) -> res.Consent:
        check = Checker()
        ids = check.name("parent", request.parent, CUSTOMER)
        checks.contact_channel(check, "channel", request.channel)
        if (
            request.channel in ch.Channel.values()
            and request.channel
            and request.channel not in channels.CONTACTABLE
        ):
            check.fail(
                "channel",
                "cannot carry outbound contacts; no consent is needed for it",
                "CHANNEL_NOT_CONTACTABLE",
            )
        checks.topic(check, "topic", request.topic)
        if request.state == res.CONSENT_STATE_PENDING_CONFIRMATION:
            check.fail(
                "state",
                "is output only: set GRANTED, the service asks for confirmation when needed",
                "OUTPUT_ONLY",
            )
        elif request.state not in SETTABLE_STATES:
            check.fail(
                "state",
                "must be GRANTED, DENIED or WITHDRAWN",
                "REQUIRED" if not request.state else "INVALID_STATE",
            )
        if request.legal_basis not in res.LegalBasis.values():
            check.fail("legal_basis", "is not a known legal basis", "INVALID_LEGAL_BASIS")
        check.length("source.evidence", request.source.evidence, max_len=MAX_EVIDENCE)
        checks.contact_channel(
            check, "source.channel.channel", request.source.channel.channel, required=False
        )
        check.optional_name("source.channel.store", request.source.channel.store, "locations/{location}")
        check.length("source.channel.device", request.source.channel.device, max_len=200)
        check.request_id("request_id", request.request_id)
        _raise_if_invalid(check)
        return await consents.set_consent(self.unit, request, ids["customer"])

    async def ConfirmConsent(self, request: svc.ConfirmConsentRequest, context: Context) -> res.Consent:
        check = Checker()
        if check.require("token", request.token):
            check.length("token", request.token, max_len=MAX_TOKEN)
        check.length("evidence", request.evidence, max_len=MAX_EVIDENCE)
        check.request_id("request_id", request.request_id)
        _raise_if_invalid(check)
        return await consents.confirm(self.unit, request)

    async def GetConsent(self, request: svc.GetConsentRequest, context: Context) -> res.Consent:
        check = Checker()
        ids = check.name("name", request.name, CONSENT)
        _raise_if_invalid(check)
        return await consents.get_consent(self.unit, ids["customer"], ids["consent"])

    async def ListConsents(
        self, request: svc.ListConsentsRequest, context: Context
    ) -> svc.ListConsentsResponse:
        check = Checker()
        ids = check.name("parent", request.parent, CUSTOMER)
        query = consents.CONSENTS.parse(request, check, scope=(request.parent,))
        _raise_if_invalid(check)
        return await consents.list_consents(self.unit, ids["customer"], query)

    async def ListConsentEvents(
        self, request: svc.ListConsentEventsRequest, context: Context
    ) -> svc.ListConsentEventsResponse:
        check = Checker()
        ids = check.name("parent", request.parent, CONSENT, allow_wildcard=True)
        if ids and ids["customer"] == "-":
            check.fail("parent", 'must name one customer (only the consent may be "-")', "INVALID_NAME")
        query = consents.CONSENT_EVENTS.parse(request, check, scope=(request.parent,))
        _raise_if_invalid(check)
        return await consents.list_consent_events(self.unit, ids["customer"], ids["consent"], query)

    async def ListOptedInCustomers(
        self, request: svc.ListOptedInCustomersRequest, context: Context
    ) -> svc.ListOptedInCustomersResponse:
        check = Checker()
        checks.topic(check, "topic", request.topic)
        checks.contact_channel(check, "channel", request.channel, required=False)
        if request.page_size < 0:
            check.fail("page_size", "must not be negative", "OUT_OF_RANGE")
        page_size = min(request.page_size or audiences.DEFAULT_PAGE_SIZE, audiences.MAX_PAGE_SIZE)
        after = None
        try:
            after = audiences.page_position(request)
        except InvalidArgument as exc:
            check.violations.extend(exc.violations)
        _raise_if_invalid(check)
        return await audiences.list_opted_in(self.unit, request, page_size, after)
