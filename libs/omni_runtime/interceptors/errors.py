"""Error mapping: domain errors become rich ``google.rpc.Status``; surprises become INTERNAL.

The stack trace of an unexpected exception is logged with the trace id and never sent to the
caller, who gets the trace id to quote instead.
"""

from __future__ import annotations

import logging

import grpc
from google.rpc import status_pb2

from omni_runtime import errors
from omni_runtime.interceptors.base import Call, Stage
from omni_runtime.logs import current_trace_ids

log = logging.getLogger("omni.errors")

# asyncpg SQLSTATEs that mean "retry": serialization failure, deadlock, lock not available.
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "55P03"})


def translate(exc: BaseException) -> errors.OmniError | None:
    """Map infrastructure exceptions with a clear meaning to domain errors; None if unknown."""
    if isinstance(exc, errors.OmniError):
        return exc
    if isinstance(exc, NotImplementedError):
        # The generated servicer's default for an RPC of the contract the service does not
        # implement yet: UNIMPLEMENTED, as grpc itself would answer, not INTERNAL.
        return errors.Unimplemented("this method is not implemented yet", reason="NOT_IMPLEMENTED")
    if isinstance(exc, TimeoutError):
        return errors.DeadlineExceeded("the call did not finish within its deadline")
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None) or getattr(exc, "sqlstate", None)
    if sqlstate in _RETRYABLE_SQLSTATES:
        return errors.Aborted("the write conflicted with a concurrent one; retry", reason="CONFLICT")
    if getattr(exc, "connection_invalidated", False) or isinstance(exc, ConnectionError | OSError):
        return errors.Unavailable("a backing store is unreachable; retry later", reason="BACKEND_UNAVAILABLE")
    return None


def to_trailing_metadata(status: status_pb2.Status) -> tuple[tuple[str, bytes], ...]:
    return (("grpc-status-details-bin", status.SerializeToString()),)


async def abort_with(context: grpc.aio.ServicerContext, status: status_pb2.Status) -> None:
    code = next(c for c in grpc.StatusCode if c.value[0] == status.code)
    await context.abort(code, status.message, trailing_metadata=to_trailing_metadata(status))


class ErrorStage(Stage):
    """Catches everything a handler raises and answers with the right status and details."""

    async def exit(self, call: Call, state: None, error: BaseException | None) -> None:
        if error is None or not isinstance(error, Exception) or isinstance(error, grpc.aio.AbortError):
            return  # success, an abort already made, or a cancellation (BaseException)
        info, context, exc = call.info, call.context, error
        mapped = translate(exc)
        if mapped is not None:
            if mapped is not exc and not isinstance(exc, NotImplementedError):
                log.warning("%s: %s", info.full_method, exc.__class__.__name__, exc_info=exc)
            await abort_with(context, mapped.to_status())
            return
        trace_id, _ = current_trace_ids()
        log.error(
            "unhandled error in %s",
            info.full_method,
            exc_info=exc,
            extra={"grpc_method": info.full_method},
        )
        await abort_with(context, errors.internal_status(trace_id or None))
