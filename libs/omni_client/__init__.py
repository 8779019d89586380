"""omni-client: call Omni's gRPC services from a channel backend (web shop, app backend, POS,
agent desktop) without rewriting the same plumbing in each.

    import omni_client
    from omni.cart.v1 import cart_service_pb2 as cart_pb, cart_service_pb2_grpc as cart_grpc

    identity = omni_client.connect("identity.omni:50051")
    token = omni_client.ServiceToken(identity, "web-backend", secret)
    cart = omni_client.connect(
        "cart.omni:50051", context=omni_client.CallContext("web"), token=token
    )
    carts = cart_grpc.CartServiceStub(cart)
    await carts.AddCartLine(cart_pb.AddCartLineRequest(...))  # request_id, metadata, retries

The wheel carries the generated stubs of every Omni contract (``omni.<service>.v1``) plus:
``connect`` (channel factory: metadata, token, request ids, deadline default, UNAVAILABLE
retries), ``CallContext`` (channel/store/device), ``ServiceToken``/``StaticToken``,
``with_request_id``, ``retry_on_aborted`` (etag conflicts) and ``errors`` (google.rpc details).
"""

from omni_client import errors
from omni_client.channel import DEFAULT_TIMEOUT_SECONDS, NO_RETRIES, RetryPolicy, connect, safe_to_repeat
from omni_client.etag import retry_on_aborted
from omni_client.metadata import CHANNELS, CallContext
from omni_client.request_ids import new_request_id, with_request_id
from omni_client.tokens import ServiceToken, StaticToken, TokenSource

__all__ = [
    "CHANNELS",
    "DEFAULT_TIMEOUT_SECONDS",
    "NO_RETRIES",
    "CallContext",
    "RetryPolicy",
    "ServiceToken",
    "StaticToken",
    "TokenSource",
    "connect",
    "errors",
    "new_request_id",
    "retry_on_aborted",
    "safe_to_repeat",
    "with_request_id",
]
