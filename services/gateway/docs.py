"""``/docs``: the API in a browser, Swagger UI over the gateway's own ``/openapi.json``.

Swagger UI comes from a pinned wheel (``swagger-ui-bundle-v2``, see pyproject.toml) and is served
by the gateway itself: no CDN, so the page works offline, behind a firewall and under a strict
Content-Security-Policy (every script is a file from this origin; nothing inline). Asset URLs carry
the Swagger UI version, so browsers may cache them for good and an upgrade changes the URLs.
How to authenticate and which headers to send is explained at the top of the page (the OpenAPI
document's description) and on each header parameter.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

# Only the files the page uses (the wheel also ships source maps and other bundles).
ASSETS = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
IMMUTABLE = "public, max-age=31536000, immutable"


def swagger_ui_dir() -> Path:
    from swagger_ui_bundle import swagger_ui_path

    return Path(str(swagger_ui_path))


def swagger_ui_version(directory: Path) -> str:
    return directory.name.removeprefix("swagger-ui-")


def index_html(base: str) -> str:
    return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Omni API</title>
  <link rel="stylesheet" href="{base}/swagger-ui.css">
  <link rel="icon" type="image/png" href="{base}/favicon-32x32.png" sizes="32x32">
  <link rel="icon" type="image/png" href="{base}/favicon-16x16.png" sizes="16x16">
</head>
<body>
  <noscript>This page needs JavaScript; the API description itself is
    <a href="/openapi.json">/openapi.json</a>.</noscript>
  <div id="swagger-ui"></div>
  <script src="{base}/swagger-ui-bundle.js"></script>
  <script src="/docs/init.js"></script>
</body>
</html>
"""


# Every request "Try it out" sends carries an X-Request-Id the page made, so the answer can be
# found in the services' logs; the token given to "Authorize" is kept across reloads.
INIT_JS = """window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    persistAuthorization: true,
    displayRequestDuration: true,
    docExpansion: "none",
    filter: true,
    tryItOutEnabled: false,
    requestInterceptor: function (request) {
      if (!request.headers["X-Request-Id"] && window.crypto && window.crypto.randomUUID) {
        request.headers["X-Request-Id"] = window.crypto.randomUUID();
      }
      return request;
    }
  });
});
"""


class Docs:
    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or swagger_ui_dir()
        self.version = swagger_ui_version(self.directory)
        self.base = f"/docs/swagger-ui/{self.version}"
        missing = [name for name in ASSETS if not (self.directory / name).is_file()]
        if missing:
            raise RuntimeError(f"Swagger UI files missing from {self.directory}: {', '.join(missing)}")
        self._assets = {name: (self.directory / name).read_bytes() for name in ASSETS}
        self._index = index_html(self.base).encode()

    async def page(self, request: Request) -> Response:
        return Response(
            self._index,
            media_type="text/html; charset=utf-8",
            headers={
                "Content-Security-Policy": CSP,
                "Cache-Control": "no-cache",
                "X-Content-Type-Options": "nosniff",
            },
        )

    async def init_js(self, request: Request) -> Response:
        return Response(
            INIT_JS, media_type="text/javascript; charset=utf-8", headers={"Cache-Control": "no-cache"}
        )

    async def asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        if request.path_params["version"] != self.version or name not in self._assets:
            return Response(status_code=404)
        return Response(
            self._assets[name],
            media_type=ASSETS[name],
            headers={"Cache-Control": IMMUTABLE, "X-Content-Type-Options": "nosniff"},
        )

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/docs", self.page, methods=["GET", "HEAD"]),
            Route(
                "/docs/", lambda request: RedirectResponse("/docs", status_code=308), methods=["GET", "HEAD"]
            ),
            Route("/docs/init.js", self.init_js, methods=["GET", "HEAD"]),
            Route("/docs/swagger-ui/{version}/{name}", self.asset, methods=["GET", "HEAD"]),
        ]
