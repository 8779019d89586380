"""gRPC status → HTTP status, and the JSON error body channel clients get.

The body follows Google's JSON error format, so the ``google.rpc.Status`` details a service
attached (ErrorInfo, BadRequest, PreconditionFailure…) reach the client intact, each with its
``@type``::

    {"error": {"code": 404, "status": "NOT_FOUND", "message": "...", "details": [{"@type": ...}]}}
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from typing import Any

import grpc
from google.protobuf import any_pb2, json_format
from google.rpc import error_details_pb2, status_pb2
from starlette.responses import Response

from omni_runtime.errors import OmniError, status_of
from services.gateway.transcode import dumps

# Imported for its side effect as well: the default pool must know the google.rpc details
# to turn them into JSON.
_DETAIL_TYPES = (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest)

# google.rpc.Code → HTTP, as google/rpc/code.proto documents each code.
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}
_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def http_status(code: grpc.StatusCode) -> int:
    return HTTP_STATUS.get(code, 500)


def detail_json(detail: any_pb2.Any) -> dict[str, Any]:
    """One packed detail as JSON with its ``@type``; opaque base64 if the type is unknown here."""
    try:
        return json_format.MessageToDict(detail)
    except (json_format.Error, TypeError, KeyError):
        return {"@type": detail.type_url, "value": base64.b64encode(detail.value).decode()}


def error_body(code: grpc.StatusCode, message: str, details: list[any_pb2.Any], http: int) -> dict[str, Any]:
    return {
        "error": {
            "code": http,
            "status": code.name,
            "message": message,
            "details": [detail_json(d) for d in details],
        }
    }


def error_response(
    code: grpc.StatusCode,
    message: str,
    details: list[any_pb2.Any] | None = None,
    *,
    http: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    status = http or http_status(code)
    extra = dict(headers or {})
    if status == 401:
        extra.setdefault("WWW-Authenticate", 'Bearer realm="omni"')
    return Response(
        dumps(error_body(code, message, list(details or ()), status)),
        status_code=status,
        media_type="application/json",
        headers=extra,
    )


def from_status(status: status_pb2.Status, **kw: Any) -> Response:
    code = _BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)
    return error_response(code, status.message, list(status.details), **kw)


def from_omni_error(error: OmniError, **kw: Any) -> Response:
    """A gateway-side rejection, shaped exactly like a service's error."""
    return from_status(error.to_status(), **kw)


def rpc_error_status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """A service's answer as a Status: its rich details (grpc-status-details-bin) when it sent them."""
    rich = status_of(error)
    if rich is not None:
        return rich
    code = error.code()
    message = error.details() or code.name.lower().replace("_", " ")
    return status_pb2.Status(code=code.value[0], message=message)


def status_json(status: status_pb2.Status) -> dict[str, Any]:
    code = _BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)
    return error_body(code, status.message, list(status.details), http_status(code))


def from_rpc_error(error: grpc.aio.AioRpcError) -> Response:
    return from_status(rpc_error_status(error))


def retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


class GatewayReject(Exception):
    """Raised inside request handling to answer at once with an error response."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response
