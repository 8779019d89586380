"""Domain errors and their mapping to ``google.rpc.Status`` (AIP-193).

Domain code raises these; the error interceptor turns them into a gRPC status with rich
details, so no servicer builds a Status by hand. Anything else that escapes a handler is
INTERNAL with a generic message: the stack trace goes to the log with the trace id, never
to the caller.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from omni_client import errors as client_errors


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field of a request: ``field`` is the AIP-161 path (``lines[2].quantity``)."""

    field: str
    description: str
    reason: str = "INVALID_FIELD"


class OmniError(Exception):
    """Base of every error that maps to a specific status code."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    default_reason = "UNKNOWN"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        domain: str = "omni",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.domain = domain
        self.metadata = dict(metadata or {})

    def details(self) -> list[any_pb2.Any]:
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=self.domain, metadata=self.metadata)
        packed = any_pb2.Any()
        packed.Pack(info)
        return [packed]

    def to_status(self) -> status_pb2.Status:
        return status_pb2.Status(code=self.code.value[0], message=self.message, details=self.details())


class InvalidArgument(OmniError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"

    def __init__(
        self, violations: Iterable[FieldViolation], message: str | None = None, **kw: object
    ) -> None:
        self.violations = list(violations)
        if not self.violations:
            raise ValueError("InvalidArgument needs at least one field violation")
        text = message or "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(text, **kw)  # type: ignore[arg-type]

    def details(self) -> list[any_pb2.Any]:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description, reason=v.reason
                )
                for v in self.violations
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(bad)
        return [*super().details(), packed]


class NotFound(OmniError):
    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"

    def __init__(self, resource_name: str, message: str | None = None, **kw: object) -> None:
        self.resource_name = resource_name
        meta = dict(kw.pop("metadata", None) or {})  # type: ignore[call-overload]
        meta.setdefault("resource", resource_name)
        super().__init__(message or f"{resource_name} not found", metadata=meta, **kw)  # type: ignore[arg-type]


class AlreadyExists(OmniError):
    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(OmniError):
    """The system is not in a state for the call; ``violations`` say which precondition failed."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"

    def __init__(
        self,
        message: str,
        *,
        violations: Iterable[tuple[str, str, str]] = (),
        **kw: object,
    ) -> None:
        # Each violation is (type, subject, description), as in google.rpc.PreconditionFailure.
        self.violations = list(violations)
        super().__init__(message, **kw)  # type: ignore[arg-type]

    def details(self) -> list[any_pb2.Any]:
        out = super().details()
        if self.violations:
            failure = error_details_pb2.PreconditionFailure(
                violations=[
                    error_details_pb2.PreconditionFailure.Violation(type=t, subject=s, description=d)
                    for t, s, d in self.violations
                ]
            )
            packed = any_pb2.Any()
            packed.Pack(failure)
            out.append(packed)
        return out


class Aborted(OmniError):
    """A concurrency conflict: a stale etag or a lost race. The caller re-reads and retries."""

    code = grpc.StatusCode.ABORTED
    default_reason = "CONCURRENT_MODIFICATION"

    def __init__(self, message: str, *, current_etag: str | None = None, **kw: object) -> None:
        meta = dict(kw.pop("metadata", None) or {})  # type: ignore[call-overload]
        if current_etag is not None:
            meta["current_etag"] = current_etag
        self.current_etag = current_etag
        super().__init__(message, metadata=meta, **kw)  # type: ignore[arg-type]


class PermissionDenied(OmniError):
    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class Unauthenticated(OmniError):
    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class ResourceExhausted(OmniError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"


class Unavailable(OmniError):
    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class Unimplemented(OmniError):
    code = grpc.StatusCode.UNIMPLEMENTED
    default_reason = "UNIMPLEMENTED"


class DeadlineExceeded(OmniError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_EXCEEDED"


def internal_status(trace_id: str | None) -> status_pb2.Status:
    """The status for an unexpected failure: a generic message plus the trace id to quote to support."""
    info = error_details_pb2.ErrorInfo(
        reason="INTERNAL", domain="omni", metadata={"trace_id": trace_id} if trace_id else {}
    )
    packed = any_pb2.Any()
    packed.Pack(info)
    suffix = f" (trace id {trace_id})" if trace_id else ""
    return status_pb2.Status(code=code_pb2.INTERNAL, message=f"internal error{suffix}", details=[packed])


# Client side: decoding the rich status a server attached is the client library's (one copy).
status_of = client_errors.status_of
unpack_details = client_errors.unpack_details
