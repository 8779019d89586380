"""Reads a customer's identifiers from identity: the fallback when the contact point projection
has nothing yet for a channel (the notification raced the IdentifierLinkedEvent, or the service
started after identity's events expired from the stream)."""

from __future__ import annotations

import grpc

from omni.identity.v1 import identity_service_pb2 as pb
from omni.identity.v1 import identity_service_pb2_grpc as pb_grpc
from omni.identity.v1 import resources_pb2 as idr
from omni_runtime.clients import PeerChannels
from services.messaging.domain.contacts import EMAIL, FACEBOOK, INSTAGRAM, PHONE, WHATSAPP, ContactPoint

TIMEOUT_SECONDS = 5.0
KINDS = {
    idr.IDENTIFIER_KIND_EMAIL: EMAIL,
    idr.IDENTIFIER_KIND_PHONE: PHONE,
    idr.IDENTIFIER_KIND_WHATSAPP: WHATSAPP,
    idr.IDENTIFIER_KIND_FACEBOOK: FACEBOOK,
    idr.IDENTIFIER_KIND_INSTAGRAM: INSTAGRAM,
}


class IdentityClient:
    def __init__(self, peers: PeerChannels) -> None:
        self.peers = peers

    async def contact_points(self, customer: str) -> list[ContactPoint] | None:
        """The customer's reachable identifiers; None when identity could not be asked."""
        stub = pb_grpc.IdentityServiceStub(self.peers.channel("identity"))
        try:
            reply = await stub.ListIdentifiers(
                pb.ListIdentifiersRequest(parent=customer, page_size=200), timeout=TIMEOUT_SECONDS
            )
        except grpc.aio.AioRpcError:
            return None
        return [
            ContactPoint(KINDS[i.kind], i.value, primary=i.primary, verified=i.verified)
            for i in reply.identifiers
            if i.kind in KINDS
        ]
