"""Identity: log-in, token verification per call in the interceptor, ResolveIdentity.

- ``login``: Login (e-mail + password) with production Argon2id parameters (RFC 9106, 64 MiB,
  3 passes, 4 lanes) over 8 customers, at 1 and 8 concurrent callers. Dominated by Argon2 on
  purpose: that cost is what makes password guessing expensive.
- ``token_verification``: the probe service, run with the runtime's default key source
  (identity's JWKS over gRPC, cached), answers Ping (public: no token) and Echo (a customer's
  own resource: EdDSA signature check, claims, role table, ownership) in the same run. The
  difference of the two is what authentication and authorization cost per call.
- ``resolve_identity``: ResolveIdentity of 64 attested loyalty cards by an agent (the POS and
  call-center look-up), at 1 and 16 concurrent callers.

Loads come from a separate process (``env.load``); the scenario stays under ~30 s.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from bench.env import BenchEnv
from omni.identity.v1 import identity_service_pb2 as pb
from omni.identity.v1 import identity_service_pb2_grpc, resources_pb2
from omni.probe.v1 import probe_pb2
from omni_runtime.auth.tokens import issue_token
from omni_runtime.testing.plugin import bearer
from omni_runtime.testing.probe import probe_definition
from omni_runtime.testing.services import running_service
from services.identity.keys import KeyRing
from services.identity.main import SERVICE as IDENTITY

SERVICE = "/omni.identity.v1.IdentityService"
CUSTOMERS = 8
CARDS = 64
PASSWORD = "bench password 1234"
DURATION = 1.5
WARMUP = 0.3


def _delta(with_auth: dict[str, Any], without: dict[str, Any], key: str) -> float:
    return round(with_auth[key] - without[key], 3)


async def run(env: BenchEnv) -> dict[str, Any]:
    out: dict[str, Any] = {}
    settings = env.settings("identity", env.new_database("identity"))
    async with running_service(IDENTITY, settings) as identity:
        stub = identity_service_pb2_grpc.IdentityServiceStub(identity.channel)
        assert identity.host.runtime is not None
        ring = identity.host.runtime.key_source
        assert isinstance(ring, KeyRing)
        service_md = bearer(issue_token(ring.current(), subject="serviceClients/bench", roles=["service"]))
        agent_md = bearer(
            issue_token(ring.current(), subject="staffMembers/bench-agent", roles=["agent"], ttl_seconds=3600)
        )

        # -- seed: customers (real registrations) and attested loyalty cards ----------------------
        emails = [f"bench-{i}-{uuid.uuid4().hex[:6]}@example.com" for i in range(CUSTOMERS)]
        customers = await asyncio.gather(
            *(
                stub.RegisterCustomer(
                    pb.RegisterCustomerRequest(
                        identifier=resources_pb2.IdentifierKey(
                            kind=resources_pb2.IDENTIFIER_KIND_EMAIL, value=e
                        ),
                        password=PASSWORD,
                    )
                )
                for e in emails
            )
        )
        cards = [f"BENCH{i:08d}" for i in range(CARDS)]
        for i, number in enumerate(cards):
            await stub.LinkIdentifier(
                pb.LinkIdentifierRequest(
                    parent=customers[i % CUSTOMERS].customer.name,
                    identifier=resources_pb2.IdentifierKey(
                        kind=resources_pb2.IDENTIFIER_KIND_LOYALTY_CARD, value=number
                    ),
                    attested=True,
                ),
                metadata=service_md,
            )

        # -- login ----------------------------------------------------------------------------
        logins = [
            pb.LoginRequest(
                identifier=resources_pb2.IdentifierKey(kind=resources_pb2.IDENTIFIER_KIND_EMAIL, value=e),
                password=PASSWORD,
            )
            for e in emails
        ]
        out["login"] = {
            "argon2": "time_cost=3 memory=64MiB parallelism=4 (production defaults)",
            "levels": [
                await env.load(
                    identity.target,
                    f"{SERVICE}/Login",
                    logins,
                    concurrency=c,
                    duration=DURATION,
                    warmup=WARMUP,
                )
                for c in (1, 8)
            ],
        }

        # -- token verification in the interceptor --------------------------------------------
        probe_settings = env.settings(
            "probe", env.new_database("identity_probe"), targets={"identity": identity.target}
        )
        customer = customers[0]
        echo = probe_pb2.EchoRequest(name=f"{customer.customer.name}/echoes/1", text="hello")
        token_md = bearer(customer.token.access_token)
        levels = []
        async with running_service(
            probe_definition(uses_database=False, uses_events=False), probe_settings
        ) as probe:
            for concurrency in (1, 16):
                without = await env.load(
                    probe.target,
                    "/omni.probe.v1.ProbeService/Ping",
                    [probe_pb2.PingRequest()],
                    concurrency=concurrency,
                    duration=DURATION,
                    warmup=WARMUP,
                )
                with_auth = await env.load(
                    probe.target,
                    "/omni.probe.v1.ProbeService/Echo",
                    [echo],
                    concurrency=concurrency,
                    duration=DURATION,
                    warmup=WARMUP,
                    metadata=token_md,
                )
                levels.append(
                    {
                        "concurrency": concurrency,
                        "ping_no_token": without,
                        "echo_with_token": with_auth,
                        "auth_cost_p50_ms": _delta(with_auth, without, "p50_ms"),
                        "auth_cost_p99_ms": _delta(with_auth, without, "p99_ms"),
                        "throughput_ratio": round(with_auth["rps"] / without["rps"], 3)
                        if without["rps"]
                        else None,
                    }
                )
        out["token_verification"] = {
            "key_source": "identity JWKS over gRPC (runtime default), cached",
            "levels": levels,
        }

        # -- ResolveIdentity ------------------------------------------------------------------
        resolves = [
            pb.ResolveIdentityRequest(
                identifier=resources_pb2.IdentifierKey(
                    kind=resources_pb2.IDENTIFIER_KIND_LOYALTY_CARD, value=n
                )
            )
            for n in cards
        ]
        out["resolve_identity"] = {
            "levels": [
                await env.load(
                    identity.target,
                    f"{SERVICE}/ResolveIdentity",
                    resolves,
                    concurrency=c,
                    duration=DURATION,
                    warmup=WARMUP,
                    metadata=agent_md,
                )
                for c in (1, 16)
            ]
        }
    return out
