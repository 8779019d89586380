"""Fetching identity's JWKS over gRPC, for every service other than identity."""

from __future__ import annotations

import grpc
from google.protobuf import json_format

from omni_runtime.auth.keys import Jwk, JwksKeySource

JWKS_TIMEOUT_SECONDS = 3.0


def identity_jwks_source(channel: grpc.aio.Channel, *, ttl: float = 300.0) -> JwksKeySource:
    from omni.identity.v1 import identity_service_pb2, identity_service_pb2_grpc

    stub = identity_service_pb2_grpc.IdentityServiceStub(channel)

    async def fetch() -> list[Jwk]:
        response = await stub.GetJwks(identity_service_pb2.GetJwksRequest(), timeout=JWKS_TIMEOUT_SECONDS)
        return [
            {k: str(v) for k, v in json_format.MessageToDict(key, preserving_proto_field_name=True).items()}
            for key in response.keys
        ]

    return JwksKeySource(fetch, ttl=ttl)
