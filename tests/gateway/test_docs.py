"""``/docs``: Swagger UI from the pinned wheel, served by the gateway itself, over /openapi.json."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
from starlette.applications import Starlette

from services.gateway.docs import CSP, Docs


async def test_the_page_and_every_asset_it_names_are_served_locally(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == CSP
    html = page.text
    assert '<div id="swagger-ui"></div>' in html
    referenced = re.findall(r'(?:src|href)="([^"]+)"', html)
    local = [url for url in referenced if url.startswith("/docs/")]
    assert not [url for url in referenced if url.startswith(("http:", "https:", "//"))]  # no CDN
    assert {url.rsplit("/", 1)[1] for url in local} >= {"swagger-ui-bundle.js", "swagger-ui.css", "init.js"}
    for url in local:
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 0
    bundle = await client.get(next(u for u in local if u.endswith("swagger-ui-bundle.js")))
    assert bundle.headers["content-type"].startswith("text/javascript")
    assert "SwaggerUIBundle" in bundle.text and "immutable" in bundle.headers["cache-control"]
    css = await client.get(next(u for u in local if u.endswith(".css")))
    assert css.headers["content-type"].startswith("text/css")


async def test_the_page_reads_the_gateways_openapi_document(client: httpx.AsyncClient) -> None:
    init = await client.get("/docs/init.js")
    assert init.status_code == 200
    assert 'url: "/openapi.json"' in init.text and "SwaggerUIBundle(" in init.text
    assert (await client.get("/openapi.json")).status_code == 200
    assert "X-Omni-Channel" in (await client.get("/openapi.json")).json()["info"]["description"]


async def test_only_the_pinned_version_and_known_files_are_served(client: httpx.AsyncClient) -> None:
    version = Docs().version
    assert re.fullmatch(r"5\.[0-9]+\.[0-9]+", version)  # Swagger UI 5 renders OpenAPI 3.1
    assert (await client.get(f"/docs/swagger-ui/{version}/swagger-ui.css")).status_code == 200
    assert (await client.get("/docs/swagger-ui/0.0.1/swagger-ui.css")).status_code == 404
    assert (await client.get(f"/docs/swagger-ui/{version}/index.j2")).status_code == 404
    assert (await client.get(f"/docs/swagger-ui/{version}/..%2F..%2F__init__.py")).status_code == 404
    redirect = await client.get("/docs/", follow_redirects=False)
    assert (redirect.status_code, redirect.headers["location"]) == (308, "/docs")


async def test_docs_can_be_turned_off(make_app: Callable[..., Starlette]) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=make_app(docs=False)), base_url="http://gateway"
    ) as http:
        assert (await http.get("/docs")).status_code == 404
        assert (await http.get("/openapi.json")).status_code == 200
