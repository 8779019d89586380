"""What the HTTP providers share: one pooled client, and how HTTP failures are classified.

429 and 5xx (and network errors) are transient, honouring Retry-After; 401/403 mean the
provider refused our credentials (transient: retried, then the next channel, never silently
dropped); other 4xx are permanent for this message.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from services.messaging.adapters.base import MISCONFIGURED, PROVIDER_UNAVAILABLE, RATE_LIMITED, ProviderError


def client(timeout: float = 10.0, max_connections: int = 32) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
    )


def retry_after(response: httpx.Response) -> timedelta | None:
    raw = response.headers.get("retry-after", "").strip()
    if raw.isdigit():
        return timedelta(seconds=min(int(raw), 3600))
    return None


def unreachable(exc: httpx.HTTPError) -> ProviderError:
    return ProviderError(PROVIDER_UNAVAILABLE, f"{type(exc).__name__}: {exc}", transient=True)


def transient_status(response: httpx.Response, text: str, provider_code: str = "") -> ProviderError | None:
    """The error for a transient HTTP status, or None when the status is not transient."""
    status = response.status_code
    if status == 429:
        return ProviderError(
            RATE_LIMITED, text, transient=True, retry_after=retry_after(response), provider_code=provider_code
        )
    if status >= 500:
        return ProviderError(
            PROVIDER_UNAVAILABLE,
            text,
            transient=True,
            retry_after=retry_after(response),
            provider_code=provider_code,
        )
    if status in (401, 403):
        return ProviderError(MISCONFIGURED, text, transient=True, provider_code=provider_code)
    return None


def json_object(response: httpx.Response) -> dict[str, Any]:
    """The response's JSON object, or {} when the body is not one (an HTML error page)."""
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
