"""ListOptedInCustomers: exact topics win over "*", channel and time filters, keyset pages."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf import field_mask_pb2, timestamp_pb2

from omni.preferences.v1 import preferences_service_pb2 as svc
from omni.preferences.v1 import resources_pb2 as res
from omni.type.v1 import channel_pb2 as ch
from omni_runtime.testing.calls import Caller, rpc_error, violations
from tests.preferences.conftest import new_customer, set_consent

GRANTED, DENIED = res.CONSENT_STATE_GRANTED, res.CONSENT_STATE_DENIED
PUSH, WEB, APP = ch.CHANNEL_PUSH, ch.CHANNEL_WEB, ch.CHANNEL_MOBILE_APP


async def every_page(api: Caller, request: svc.ListOptedInCustomersRequest) -> list[svc.OptedInCustomer]:
    out: list[svc.OptedInCustomer] = []
    while True:
        page = await api.ListOptedInCustomers(request)
        out.extend(page.customers)
        assert len(page.customers) <= request.page_size
        if not page.next_page_token:
            return out
        request.page_token = page.next_page_token


async def test_audiences(backend: Caller, as_role: Callable[..., Caller]) -> None:
    topic = f"launch_{datetime.now(UTC).strftime('%H%M%S%f')}"
    wildcard, exact, refused_exact, other_topic, both = (new_customer() for _ in range(5))
    await backend.SetConsent(set_consent(wildcard, PUSH, "*", GRANTED))
    await backend.SetConsent(set_consent(exact, WEB, topic, GRANTED))
    await backend.SetConsent(set_consent(refused_exact, PUSH, "*", GRANTED))
    await backend.SetConsent(set_consent(refused_exact, PUSH, topic, DENIED))
    await backend.SetConsent(set_consent(other_topic, PUSH, "news", GRANTED))
    await backend.SetConsent(set_consent(both, WEB, topic, GRANTED))
    await backend.SetConsent(set_consent(both, PUSH, topic, GRANTED))
    await backend.SetConsent(set_consent(both, APP, "*", GRANTED))
    await backend.UpdatePreferences(
        svc.UpdatePreferencesRequest(
            preferences=res.Preferences(name=f"{both}/preferences", preferred_channels=[WEB, APP]),
            update_mask=field_mask_pb2.FieldMask(paths=["preferred_channels"]),
        )
    )
    marketer = as_role("staffMembers/m1", "marketer")
    everyone = await every_page(marketer, svc.ListOptedInCustomersRequest(topic=topic, page_size=1))
    got = {c.customer: list(c.channels) for c in everyone}
    # Other tests' customers granted "*" too; ours must be exactly as expected.
    assert got[wildcard] == [PUSH]
    assert got[exact] == [WEB]
    assert got[both] == [WEB, APP, PUSH], "in the customer's preference order, then the business order"
    assert refused_exact not in got and other_topic not in got
    names = [c.customer for c in everyone]
    assert names == sorted(names) and len(names) == len(set(names))

    on_web = await every_page(
        marketer, svc.ListOptedInCustomersRequest(topic=topic, channel=WEB, page_size=500)
    )
    assert {c.customer for c in on_web} >= {exact, both} and wildcard not in {c.customer for c in on_web}
    future = timestamp_pb2.Timestamp()
    future.FromDatetime(datetime.now(UTC) + timedelta(days=1))
    assert not (
        await marketer.ListOptedInCustomers(
            svc.ListOptedInCustomersRequest(topic=topic, granted_after=future)
        )
    ).customers

    first = await marketer.ListOptedInCustomers(svc.ListOptedInCustomersRequest(topic=topic, page_size=1))
    error = await rpc_error(
        marketer.ListOptedInCustomers(
            svc.ListOptedInCustomersRequest(topic="news", page_token=first.next_page_token)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violations(error) == {"page_token"}
    error = await rpc_error(
        marketer.ListOptedInCustomers(svc.ListOptedInCustomersRequest(topic="Bad", page_size=-1))
    )
    assert violations(error) == {"topic", "page_size"}
