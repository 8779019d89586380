"""Authorization matrix: each role × representative RPCs of identity and of the runtime's probe.

Every token here is signed by the running identity service. The probe runs with the runtime's
default key source (identity's JWKS over gRPC), so its column checks the whole chain a real
service uses. Mutations are sent with a stale etag or an invalid body: an authorized caller
gets ABORTED or INVALID_ARGUMENT from the handler (nothing changes), an unauthorized one gets
PERMISSION_DENIED from the interceptor before the handler runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from omni.identity.v1 import identity_service_pb2 as pb
from omni.identity.v1 import resources_pb2
from omni.probe.v1 import probe_pb2, probe_pb2_grpc
from omni_runtime.config import Settings
from omni_runtime.testing.plugin import bearer
from omni_runtime.testing.probe import probe_definition
from omni_runtime.testing.services import RunningService, running_service
from tests.identity.conftest import Stub, register

STALE = 'W/"999"'
DENIED = grpc.StatusCode.PERMISSION_DENIED
ROLES = ("anonymous", "customer", "guest", "agent", "store_associate", "marketer", "admin", "service")


@pytest.fixture(scope="module")
async def probe(
    identity: RunningService, service_settings: Callable[..., Settings]
) -> AsyncIterator[RunningService]:
    settings = service_settings("probe", targets={"identity": identity.target})
    async with running_service(probe_definition(uses_database=False, uses_events=False), settings) as svc:
        yield svc


@pytest.fixture(scope="module")
async def people(identity: RunningService) -> dict[str, Any]:
    """A real customer (whose resources the matrix targets) and a real guest."""
    stub = Stub(identity.channel)
    customer = await register(stub)
    guest = await stub.CreateGuest(pb.CreateGuestRequest())
    return {"customer": customer, "guest": guest}


def metadata_for(
    role: str, people: dict[str, Any], token_for: Callable[..., str]
) -> tuple[tuple[str, str], ...]:
    if role == "anonymous":
        return ()
    if role in ("customer", "guest"):
        return bearer(people[role].token.access_token)
    subject = "serviceClients/web-backend" if role == "service" else f"staffMembers/{role}-1"
    store = "locations/s1" if role == "store_associate" else ""
    return bearer(token_for(subject, [role], store=store))


def calls(stub: Stub, probe: probe_pb2_grpc.ProbeServiceStub, c1: str) -> dict[str, Callable[[Any], Any]]:
    bad_key = resources_pb2.IdentifierKey(kind=resources_pb2.IDENTIFIER_KIND_EMAIL, value="not an email")
    return {
        "GetCustomer": lambda md: stub.GetCustomer(pb.GetCustomerRequest(name=c1), metadata=md),
        "UpdateCustomer": lambda md: stub.UpdateCustomer(
            pb.UpdateCustomerRequest(customer=resources_pb2.Customer(name=c1, display_name="x", etag=STALE)),
            metadata=md,
        ),
        "LockCustomer": lambda md: stub.LockCustomer(
            pb.LockCustomerRequest(name=c1, etag=STALE), metadata=md
        ),
        "EraseCustomer": lambda md: stub.EraseCustomer(
            pb.EraseCustomerRequest(name=c1, etag=STALE), metadata=md
        ),
        "ListIdentifiers": lambda md: stub.ListIdentifiers(pb.ListIdentifiersRequest(parent=c1), metadata=md),
        "LinkIdentifier": lambda md: stub.LinkIdentifier(
            pb.LinkIdentifierRequest(parent=c1, identifier=bad_key), metadata=md
        ),
        "ResolveIdentity": lambda md: stub.ResolveIdentity(
            pb.ResolveIdentityRequest(identifier=bad_key), metadata=md
        ),
        "ListSessions": lambda md: stub.ListSessions(pb.ListSessionsRequest(parent=c1), metadata=md),
        "CreateStaffMember": lambda md: stub.CreateStaffMember(pb.CreateStaffMemberRequest(), metadata=md),
        "ListStaffMembers": lambda md: stub.ListStaffMembers(
            pb.ListStaffMembersRequest(page_size=1), metadata=md
        ),
        "CreateServiceClient": lambda md: stub.CreateServiceClient(
            pb.CreateServiceClientRequest(), metadata=md
        ),
        "GetJwks": lambda md: stub.GetJwks(pb.GetJwksRequest(), metadata=md),
        "probe.Echo": lambda md: probe.Echo(
            probe_pb2.EchoRequest(name=f"{c1}/echoes/e1", text="hi"), metadata=md
        ),
        "probe.Ping": lambda md: probe.Ping(probe_pb2.PingRequest(), metadata=md),
    }


# Which roles each RPC admits (the customer is the owner of every targeted resource).
ALLOWED: dict[str, set[str]] = {
    "GetCustomer": {"customer", "agent", "store_associate", "admin", "service"},
    "UpdateCustomer": {"customer", "admin", "service"},
    "LockCustomer": {"admin", "service"},
    "EraseCustomer": {"customer", "admin", "service"},
    "ListIdentifiers": {"customer", "agent", "store_associate", "admin", "service"},
    "LinkIdentifier": {"customer", "agent", "store_associate", "admin", "service"},
    "ResolveIdentity": {"agent", "store_associate", "admin", "service"},
    "ListSessions": {"customer", "admin", "service"},
    "CreateStaffMember": {"admin", "service"},
    "ListStaffMembers": {"admin", "service"},
    "CreateServiceClient": {"admin", "service"},
    "GetJwks": set(ROLES),
    "probe.Echo": {"customer", "agent", "store_associate", "marketer", "admin", "service"},
    "probe.Ping": set(ROLES),
}
PUBLIC = {"GetJwks", "probe.Ping"}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("rpc", sorted(ALLOWED))
async def test_authorization_matrix(
    rpc: str,
    role: str,
    identity: RunningService,
    probe: RunningService,
    people: dict[str, Any],
    token_for: Callable[..., str],
) -> None:
    stub = Stub(identity.channel)
    probe_stub = probe_pb2_grpc.ProbeServiceStub(probe.channel)
    call = calls(stub, probe_stub, people["customer"].customer.name)[rpc]
    md = metadata_for(role, people, token_for)
    try:
        await call(md)
        code = grpc.StatusCode.OK
    except grpc.aio.AioRpcError as err:
        code = err.code()
    if role in ALLOWED[rpc]:
        assert code not in (DENIED, grpc.StatusCode.UNAUTHENTICATED), f"{role} should reach {rpc}: {code}"
        assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), f"{rpc} failed for {role}"
    elif role == "anonymous" and rpc not in PUBLIC:
        assert code is grpc.StatusCode.UNAUTHENTICATED
    else:
        assert code is DENIED, f"{role} must not reach {rpc}: {code}"


async def test_a_guest_may_not_erase_itself(identity: RunningService, people: dict[str, Any]) -> None:
    stub = Stub(identity.channel)
    guest = people["guest"]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.EraseCustomer(
            pb.EraseCustomerRequest(name=guest.customer.name), metadata=bearer(guest.token.access_token)
        )
    assert info.value.code() is DENIED
