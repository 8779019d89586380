"""Client-credentials tokens for calls between services (a ``TokenProvider`` for PeerChannels).

The one implementation is the client library's ``omni_client.tokens.ServiceToken`` (the same
thing every channel backend needs): a service configured with OMNI_SERVICE_CLIENT_ID /
OMNI_SERVICE_CLIENT_SECRET asks identity's IssueServiceToken for an access token, keeps it, and
asks again shortly before it expires; concurrent callers share one fetch; a failed refresh falls
back to the held token while it is still valid.
"""

from __future__ import annotations

from omni_client.tokens import ISSUE_TIMEOUT_SECONDS, REFRESH_MARGIN_SECONDS, ServiceToken

ServiceTokenProvider = ServiceToken

__all__ = ["ISSUE_TIMEOUT_SECONDS", "REFRESH_MARGIN_SECONDS", "ServiceTokenProvider"]
