"""Through the HTTP gateway with identity's real tokens: the demo customer's seeded consents, the
double opt-in link a mail scanner GETs (confirms nothing) and the confirmation page's POST."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest

from omni.preferences.v1 import events_pb2 as ev
from omni_runtime.testing.calls import eventually, tap
from omni_runtime.testing.plugin import Infra
from tests.gateway.platform import Platform, running_platform, seed_demo_data

WEB = {"X-Omni-Channel": "web"}


@pytest.fixture(scope="module")
async def platform(omni_infra: Infra) -> AsyncIterator[Platform]:
    async with running_platform(omni_infra, ("identity", "preferences")) as running:
        yield running


async def test_demo_customer_and_double_opt_in_over_http(
    platform: Platform, omni_infra: Infra, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from services.identity.seed import DEMO_CUSTOMER_EMAIL, DEMO_PASSWORD

    state = await seed_demo_data(platform, tmp_path_factory.mktemp("omni-home") / "demo.json")
    facts = state.facts()["preferences"]
    customer = facts["customer"]
    assert facts["consents"] == {
        "CHANNEL_EMAIL:offers": "CONSENT_STATE_GRANTED",
        "CHANNEL_EMAIL:orders": "CONSENT_STATE_GRANTED",
        "CHANNEL_PUSH:*": "CONSENT_STATE_GRANTED",
        "CHANNEL_SMS:offers": "CONSENT_STATE_DENIED",
    }
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=platform.app), base_url="http://gw"
    ) as http:
        login = await http.post(
            "/v1/customers:login",
            headers=WEB,
            json={
                "identifier": {"kind": "IDENTIFIER_KIND_EMAIL", "value": DEMO_CUSTOMER_EMAIL},
                "password": DEMO_PASSWORD,
            },
        )
        assert login.status_code == 200, login.text
        auth = {**WEB, "Authorization": f"Bearer {login.json()['token']['accessToken']}"}
        prefs = await http.get(f"/v1/{customer}/preferences", headers=auth)
        assert prefs.status_code == 200 and prefs.json()["timeZone"] == "Europe/Bucharest"

        noon = datetime(2026, 6, 10, 9, tzinfo=UTC).isoformat().replace("+00:00", "Z")
        body = {"topic": "offers", "evaluateTime": noon}

        async def email_reachable() -> bool:
            got = await http.post(f"/v1/{customer}/preferences:decideContact", headers=auth, json=body)
            assert got.status_code == 200, got.text
            return bool(got.json()["allowed"]) and got.json()["channel"] == "CHANNEL_EMAIL"

        # The demo customer's seeded preferences put e-mail first, and it is granted and verified.
        await eventually(email_reachable, 15)

        async with tap(omni_infra.nats_url, "preferences") as events:
            pending = await http.post(
                f"/v1/{customer}/consents:set",
                headers=auth,
                json={"channel": "CHANNEL_SMS", "topic": "tips", "state": "CONSENT_STATE_GRANTED"},
            )
            assert (
                pending.status_code == 200 and pending.json()["state"] == "CONSENT_STATE_PENDING_CONFIRMATION"
            )
            name = pending.json()["name"]
            request = await events.wait_for(ev.ConsentConfirmationRequestedEvent, lambda m: m.consent == name)

        # A scanner following the link with GET, signed in or not, confirms nothing.
        scanned = await http.get(
            "/v1/customers/-/consents:confirm", params={"token": request.token}, headers=WEB
        )
        assert scanned.status_code in (404, 405)
        still = await http.get(f"/v1/{name}", headers=auth)
        assert still.json()["state"] == "CONSENT_STATE_PENDING_CONFIRMATION"
        # The confirmation page posts the token, without a session.
        confirmed = await http.post(
            "/v1/customers/-/consents:confirm", headers=WEB, json={"token": request.token}
        )
        assert confirmed.status_code == 200, confirmed.text
        assert confirmed.json()["state"] == "CONSENT_STATE_GRANTED"
        again = await http.post(
            "/v1/customers/-/consents:confirm", headers=WEB, json={"token": request.token}
        )
        assert again.status_code == 400 and again.json()["error"]["status"] == "FAILED_PRECONDITION"
