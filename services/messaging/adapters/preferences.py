"""The only place that calls the preferences service: DecideContact and RecordContact.

Preferences decides everything about whether and how a customer may be contacted; this adapter
turns its answer into ``domain.plans.Decision``. Calls go through the runtime's peer channel
(service token, trace context, deadline). A failure is raised as ``PreferencesUnavailable`` so
the caller can keep the notification waiting instead of guessing a decision, or as
``PreferencesRefused`` when asking again cannot help.

Every DecideContact of a notification has its own request id (the n-th decision): a retry after
a timeout asks anew, so a reservation the timed-out call may have made counts once more — the
conservative side, as preferences' contract puts it for reserved contacts that fail.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import grpc

from omni.preferences.v1 import preferences_service_pb2 as pb
from omni.preferences.v1 import preferences_service_pb2_grpc as pb_grpc
from omni_runtime.clients import PeerChannels
from omni_runtime.timestamps import to_proto
from services.messaging.domain.plans import Decision, Evaluation

# Calls to preferences never wait longer than this, whatever the caller's own deadline.
TIMEOUT_SECONDS = 5.0


class PreferencesUnavailable(Exception):
    """Preferences could not answer now (down, overloaded, too slow): ask again later."""


class PreferencesRefused(Exception):
    """Preferences refused the question itself (INVALID_ARGUMENT, PERMISSION_DENIED, …): asking
    again will not help."""


# Codes after which the same question may well be answered later.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNAUTHENTICATED,
    }
)


def _failure(method: str, exc: grpc.aio.AioRpcError) -> Exception:
    text = f"{method}: {exc.code().name}: {exc.details()}"
    return PreferencesUnavailable(text) if exc.code() in RETRYABLE else PreferencesRefused(text)


def _time(stamp: object) -> datetime | None:
    if stamp is None or not stamp.ByteSize():  # type: ignore[attr-defined]
        return None
    return stamp.ToDatetime(tzinfo=UTC)  # type: ignore[attr-defined,no-any-return]


def decision_of(reply: pb.DecideContactResponse) -> Decision:
    return Decision(
        allowed=reply.allowed,
        channel=reply.channel,
        reasons=frozenset(reply.reasons),
        next_allowed_time=_time(reply.next_allowed_time) if reply.HasField("next_allowed_time") else None,
        fallback_channels=tuple(reply.fallback_channels),
        evaluations=tuple(
            Evaluation(
                channel=e.channel,
                allowed=e.allowed,
                reasons=frozenset(e.reasons),
                next_allowed_time=_time(e.next_allowed_time) if e.HasField("next_allowed_time") else None,
            )
            for e in reply.evaluations
        ),
        language_code=reply.language_code,
        reserved=reply.reserved,
    )


class PreferencesClient:
    def __init__(self, peers: PeerChannels) -> None:
        self.peers = peers

    @property
    def stub(self) -> pb_grpc.PreferencesServiceStub:
        return pb_grpc.PreferencesServiceStub(self.peers.channel("preferences"))

    async def decide(
        self,
        customer: str,
        *,
        topic: str,
        purpose: int,
        channel: int,
        eligible: Sequence[int],
        evaluate_time: datetime,
        request_id: str,
    ) -> Decision:
        request = pb.DecideContactRequest(
            name=f"{customer}/preferences",
            topic=topic,
            purpose=purpose,  # type: ignore[arg-type]
            channel=channel,  # type: ignore[arg-type]
            eligible_channels=list(eligible),  # type: ignore[arg-type]
            evaluate_time=to_proto(evaluate_time),
            reserve=True,
            request_id=request_id,
        )
        try:
            reply = await self.stub.DecideContact(request, timeout=TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            raise _failure("DecideContact", exc) from None
        return decision_of(reply)

    async def record_contact(
        self,
        customer: str,
        *,
        channel: int,
        topic: str,
        purpose: int,
        contact_time: datetime,
        request_id: str,
    ) -> None:
        request = pb.RecordContactRequest(
            name=f"{customer}/preferences",
            channel=channel,  # type: ignore[arg-type]
            topic=topic,
            purpose=purpose,  # type: ignore[arg-type]
            contact_time=to_proto(contact_time),
            request_id=request_id,
        )
        try:
            await self.stub.RecordContact(request, timeout=TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            raise _failure("RecordContact", exc) from None
