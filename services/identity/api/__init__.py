"""The identity servicer: proto in, validation, one transaction, proto out.

One class per area (auth, customers, identifiers, sessions, staff, clients) keeps each file
readable; ``IdentityServicer`` joins them into the generated servicer.
"""

from __future__ import annotations

from omni.identity.v1 import identity_service_pb2_grpc
from services.identity.api.auth import AuthHandlers
from services.identity.api.clients import ClientHandlers
from services.identity.api.common import Deps
from services.identity.api.customers import CustomerHandlers
from services.identity.api.identifiers import IdentifierHandlers
from services.identity.api.sessions import SessionHandlers
from services.identity.api.staff import StaffHandlers


class IdentityServicer(
    AuthHandlers,
    CustomerHandlers,
    IdentifierHandlers,
    SessionHandlers,
    StaffHandlers,
    ClientHandlers,
    identity_service_pb2_grpc.IdentityServiceServicer,
):
    """omni.identity.v1.IdentityService."""


__all__ = ["Deps", "IdentityServicer"]
