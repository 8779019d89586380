"""What a failed call said: the ``google.rpc.Status`` a service attached, decoded and described.

Omni's services answer errors per AIP-193: a status code, a message and details (ErrorInfo with
a reason and domain, BadRequest field violations, PreconditionFailure, an ABORTED's
``current_etag``). gRPC carries the full status in the ``grpc-status-details-bin`` trailer;
these helpers read it from a sync or asyncio ``RpcError`` so callers branch on reasons, not on
message text.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import json_format, message
from google.rpc import error_details_pb2, status_pb2

# Every detail type of google/rpc/error_details.proto, in the order they are described.
DETAIL_TYPES: tuple[type[message.Message], ...] = (
    error_details_pb2.ErrorInfo,
    error_details_pb2.BadRequest,
    error_details_pb2.PreconditionFailure,
    error_details_pb2.QuotaFailure,
    error_details_pb2.ResourceInfo,
    error_details_pb2.RetryInfo,
    error_details_pb2.RequestInfo,
    error_details_pb2.Help,
    error_details_pb2.LocalizedMessage,
    error_details_pb2.DebugInfo,
)
_CODES = {code.value[0]: code for code in grpc.StatusCode}


def status_of(error: grpc.RpcError) -> status_pb2.Status | None:
    """The rich status a server attached to an error; None if it sent none.

    Works for sync and asyncio errors alike: both carry it in ``grpc-status-details-bin``.
    """
    trailing = getattr(error, "trailing_metadata", None)
    for key, value in (trailing() if callable(trailing) else None) or ():
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    return None


def status(error: grpc.RpcError) -> status_pb2.Status:
    """The error as a Status: the rich one when the server sent it, else code and message."""
    rich = status_of(error)
    if rich is not None:
        return rich
    code = error.code() if callable(getattr(error, "code", None)) else grpc.StatusCode.UNKNOWN
    details = error.details() if callable(getattr(error, "details", None)) else ""
    return status_pb2.Status(code=code.value[0], message=details or code.name.lower().replace("_", " "))


def code_of(status_message: status_pb2.Status) -> grpc.StatusCode:
    return _CODES.get(status_message.code, grpc.StatusCode.UNKNOWN)


def unpack_details(status_message: status_pb2.Status) -> dict[str, Any]:
    """The known details of a status keyed by type name (``"ErrorInfo"``, ``"BadRequest"``…)."""
    out: dict[str, Any] = {}
    for detail in status_message.details:
        for cls in DETAIL_TYPES:
            if detail.Is(cls.DESCRIPTOR):
                msg = cls()
                detail.Unpack(msg)
                out[cls.DESCRIPTOR.name] = msg
    return out


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    found = status_of(error)
    info = unpack_details(found).get("ErrorInfo") if found is not None else None
    return info if isinstance(info, error_details_pb2.ErrorInfo) else None


def reason(error: grpc.RpcError) -> str:
    """ErrorInfo.reason (``"INSUFFICIENT_STOCK"``, ``"ETAG_MISMATCH"``…), or "" without one."""
    info = error_info(error)
    return info.reason if info is not None else ""


def current_etag(error: grpc.RpcError) -> str | None:
    """For ABORTED on a stale etag: the resource's current etag, when the service sent it."""
    info = error_info(error)
    if info is None or "current_etag" not in info.metadata:
        return None
    return str(info.metadata["current_etag"])


def status_json(status_message: status_pb2.Status) -> dict[str, Any]:
    """The status in Google's JSON error shape (as the gateway answers over HTTP)."""
    code = code_of(status_message)
    return {
        "code": status_message.code,
        "status": code.name,
        "message": status_message.message,
        "details": [json_format.MessageToDict(d) for d in status_message.details],
    }


def describe(error: grpc.RpcError) -> str:
    """A readable, multi-line account of the error and every detail it carries."""
    found = status(error)
    code = code_of(found)
    lines = [f"{code.name} ({found.code}): {found.message}"]
    for name, detail in unpack_details(found).items():
        lines.extend(_describe_detail(name, detail))
    known = {cls.DESCRIPTOR.full_name for cls in DETAIL_TYPES}
    for other in found.details:
        if other.TypeName() not in known:
            lines.append(f"  {other.TypeName()}: {other.value.hex()}")
    return "\n".join(lines)


def _describe_detail(name: str, detail: Any) -> list[str]:
    if isinstance(detail, error_details_pb2.ErrorInfo):
        meta = ", ".join(f"{k}={v}" for k, v in sorted(detail.metadata.items()))
        return [f"  reason {detail.reason} (domain {detail.domain})" + (f": {meta}" if meta else "")]
    if isinstance(detail, error_details_pb2.BadRequest):
        return [
            f"  field {v.field}: {v.description}" + (f" [{v.reason}]" if v.reason else "")
            for v in detail.field_violations
        ]
    if isinstance(detail, error_details_pb2.PreconditionFailure):
        return [f"  precondition {v.type} on {v.subject}: {v.description}" for v in detail.violations]
    if isinstance(detail, error_details_pb2.QuotaFailure):
        return [f"  quota {v.subject}: {v.description}" for v in detail.violations]
    if isinstance(detail, error_details_pb2.ResourceInfo):
        return [
            f"  resource {detail.resource_type} {detail.resource_name}: {detail.description}".rstrip(": ")
        ]
    if isinstance(detail, error_details_pb2.RetryInfo):
        delay = detail.retry_delay.seconds + detail.retry_delay.nanos / 1e9
        return [f"  retry after {delay:g}s"]
    if isinstance(detail, error_details_pb2.RequestInfo):
        return [f"  request id {detail.request_id}"]
    if isinstance(detail, error_details_pb2.Help):
        return [f"  see {link.url} ({link.description})" for link in detail.links]
    if isinstance(detail, error_details_pb2.LocalizedMessage):
        return [f"  {detail.locale}: {detail.message}"]
    if isinstance(detail, error_details_pb2.DebugInfo):
        return [f"  debug: {detail.detail}"]
    return [f"  {name}"]
