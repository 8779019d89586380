"""Authentication and authorization of every call, driven by the contract.

Each RPC declares ``option (omni.type.v1.auth)``; this stage reads it from the descriptor
pool, verifies the bearer token, checks the caller's roles grant the permission and, for
customer-scoped grants, that the resource named in the request belongs to the caller. A
method without the option is refused: forgetting to declare a rule must not open a door.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from google.protobuf import descriptor_pool

from omni.type.v1 import auth_pb2
from omni_runtime.auth.permissions import Scope, current_scope, grant
from omni_runtime.auth.tokens import TokenVerifier
from omni_runtime.context import ANONYMOUS, Principal, current_principal
from omni_runtime.errors import PermissionDenied, Unauthenticated
from omni_runtime.interceptors.base import Call, CallInfo, Stage, is_infrastructure


@lru_cache(maxsize=1024)
def method_auth(full_method: str) -> auth_pb2.MethodAuth | None:
    """The auth rule of ``/pkg.Service/Method`` from the compiled contracts, or None."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    try:
        desc = descriptor_pool.Default().FindMethodByName(f"{service}.{method}")
    except KeyError:
        return None
    options = desc.GetOptions()
    if not options.HasExtension(auth_pb2.auth):
        return None
    return options.Extensions[auth_pb2.auth]


def field_value(message: Any, path: str) -> str:
    value = message
    for part in path.split("."):
        value = getattr(value, part, "")
    return value if isinstance(value, str) else ""


def owns(subject: str, target: str) -> bool:
    """SELF scope: ``customers/c1`` owns ``customers/c1`` and ``customers/c1/cart``, nothing else."""
    return bool(subject) and (target == subject or target.startswith(subject + "/"))


def bearer_token(meta: dict[str, str]) -> str | None:
    header = meta.get("authorization", "")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("authorization must be 'Bearer <token>'", reason="TOKEN_MALFORMED")
    return token.strip()


class AuthStage(Stage):
    def __init__(self, verifier: TokenVerifier) -> None:
        self.verifier = verifier

    def applies(self, info: CallInfo) -> bool:
        return not is_infrastructure(info)

    async def authorize(
        self, info: CallInfo, meta: dict[str, str], request: Any | None
    ) -> tuple[Principal, Scope]:
        rule = method_auth(info.full_method)
        if rule is None:
            raise PermissionDenied(
                f"{info.full_method} declares no authorization rule", reason="NO_AUTH_RULE"
            )
        token = bearer_token(meta)
        if token is None:
            if rule.public:
                return ANONYMOUS, Scope.ALL
            raise Unauthenticated("this call needs a bearer access token", reason="TOKEN_MISSING")
        principal = await self.verifier.verify(token)
        if rule.public:
            return principal, Scope.ALL
        scope = grant(principal.roles, rule.permission)
        if scope is None:
            raise PermissionDenied(
                f"the caller's roles do not grant {rule.permission}",
                reason="MISSING_PERMISSION",
                metadata={"permission": rule.permission},
            )
        if scope is Scope.SELF:
            target = (
                field_value(request, rule.resource_field)
                if rule.resource_field and request is not None
                else ""
            )
            if not owns(principal.subject, target):
                raise PermissionDenied(
                    "this caller may act only on its own resources",
                    reason="NOT_OWNER",
                    metadata={"permission": rule.permission},
                )
        return principal, scope

    async def enter(self, call: Call) -> None:
        principal, scope = await self.authorize(call.info, call.meta, call.request)
        current_principal.set(principal)
        current_scope.set(scope)
