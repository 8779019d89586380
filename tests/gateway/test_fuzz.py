"""Fuzz the gateway from its own OpenAPI document (schemathesis): no request may yield a 5xx.

The platform runs for real behind the gateway (identity, inventory, cart: whichever exist in
this checkout), so a 5xx anywhere on the path (gateway transcoding, a service's validation, a
database error surfacing as INTERNAL) fails the test. Cases are generated first (hypothesis is
synchronous) and sent afterwards on the test's event loop, where the services live.

Bounded: a few positive and negative examples per operation. Streaming operations are left
out (an SSE stream never ends by itself; tests/gateway/test_sse.py covers them), and so is
X-Request-Timeout: a client asking for a 1 ms deadline is rightly answered 504.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from omni_runtime.testing.plugin import Infra
from services.gateway.app import GatewayConfig
from tests.gateway.platform import Platform, available, running_platform

EXAMPLES = {schemathesis.GenerationMode.POSITIVE: 3, schemathesis.GenerationMode.NEGATIVE: 2}
SERVICES = ("identity", "inventory", "cart")
pytestmark = pytest.mark.skipif(not available(SERVICES), reason="no product service exists yet")


@pytest.fixture(scope="module")
async def platform(omni_infra: Infra) -> AsyncIterator[Platform]:
    # Limits high enough that the fuzzer is never rate limited (429 is tested elsewhere).
    config = GatewayConfig(rate_per_second=10_000, rate_burst=10_000)
    async with running_platform(omni_infra, SERVICES, gateway_config=config) as running:
        yield running


async def tokens(http: httpx.AsyncClient, platform: Platform) -> list[str]:
    """Real tokens: an admin (wide grants) and a customer (own data only), via the gateway."""
    found: list[str] = []
    if "identity" not in platform.services:
        return found
    from services.identity.seed import DEMO_PASSWORD, seed_demo

    runtime = platform.services["identity"].host.runtime
    assert runtime is not None
    await seed_demo(platform.database("identity"), settings=runtime.settings)
    web = {"X-Omni-Channel": "web"}
    admin = await http.post(
        "/v1/staffMembers:login", headers=web, json={"email": "admin@omni.local", "password": DEMO_PASSWORD}
    )
    assert admin.status_code == 200, admin.text
    found.append(admin.json()["accessToken"])
    guest = await http.post("/v1/customers:createGuest", headers=web, json={"deviceId": "fuzz-device"})
    assert guest.status_code == 200, guest.text
    found.append(guest.json()["token"]["accessToken"])
    return found


def generate(document: dict[str, Any]) -> list[schemathesis.Case]:
    schema = schemathesis.openapi.from_dict(document)
    cases: list[schemathesis.Case] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if "text/event-stream" in str(operation.definition.raw.get("responses", {})):
            continue
        for mode, count in EXAMPLES.items():

            @settings(
                max_examples=count,
                database=None,
                deadline=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
                derandomize=True,
            )
            @given(operation.as_strategy(generation_mode=mode))
            def collect(case: schemathesis.Case) -> None:
                cases.append(case)

            collect()
    return cases


def as_request(case: schemathesis.Case, token: str | None) -> dict[str, Any] | None:
    kwargs = case.as_transport_kwargs(base_url="http://gateway")
    headers = {k: v for k, v in kwargs.get("headers", {}).items() if k.lower() != "x-request-timeout"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        for key, value in headers.items():
            str(key).encode("latin-1")
            str(value).encode("latin-1")
    except UnicodeEncodeError:
        return None  # not expressible as an HTTP/1.1 header; a client could not send it either
    request: dict[str, Any] = {
        "method": kwargs["method"],
        "url": kwargs["url"],
        "headers": headers,
        "params": kwargs.get("params") or None,
    }
    if "json" in kwargs:
        request["json"] = kwargs["json"]
    elif "data" in kwargs:
        request["content"] = kwargs["data"]
    return request


async def test_no_request_from_the_openapi_document_yields_a_server_error(platform: Platform) -> None:
    transport = httpx.ASGITransport(app=platform.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=30) as http:
        real_tokens = await tokens(http, platform)
        document = (await http.get("/openapi.json")).json()
        cases = generate(document)
        assert len(cases) >= 2 * len(document["paths"])
        rng = random.Random(6)
        failures: list[str] = []
        statuses: dict[int, int] = {}
        for case in cases:
            # A third of the cases keep the fuzzer's own (garbage) credentials, the rest carry a
            # real token, so requests get past authentication into the services.
            choice = rng.randrange(3)
            token = real_tokens[choice - 1] if choice and real_tokens else None
            request = as_request(case, token)
            if request is None:
                continue
            response = await http.request(**request)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.status_code >= 500:
                failures.append(f"{response.status_code} {case.as_curl_command()}\n    {response.text[:500]}")
    assert not failures, "\n".join(failures)
    assert sum(statuses.values()) > len(cases) // 2
    assert any(200 <= s < 300 for s in statuses), statuses
