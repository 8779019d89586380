"""A web shop's backend puts an item in a shopper's cart through Omni's gRPC API.

    python examples/web_add_to_cart.py [--item SKU] [--more N]

Needs only the omni-client wheel (``make protos`` builds it into dist/) and a running platform
(``make run``; targets from ``$OMNI_<SERVICE>_TARGET``). The defaults are the local platform's
demo principals and catalogue. What it shows:

1. the backend's own **service token** (client credentials, ``IssueServiceToken``, refreshed by
   the library shortly before it expires) for catalogue reads: is the item in stock online?
2. the shopper logs in through the backend (``Login``); calls for them carry **their** token and
   the channel context (web, the browser's device id), so Omni records where the change came from;
3. ``AddCartLine``: the library gives the call a request id that stays the same if it is retried
   after UNAVAILABLE, so the line is never added twice;
4. a read-modify-write with the cart's **etag** under ``retry_on_aborted``: if the shopper's app
   changed the cart in between, the backend re-reads and decides again instead of overwriting.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import grpc
from _common import money, target
from google.protobuf import field_mask_pb2

import omni_client
from omni.cart.v1 import cart_service_pb2 as cart_pb
from omni.cart.v1 import cart_service_pb2_grpc, resources_pb2
from omni.identity.v1 import identity_service_pb2 as identity_pb
from omni.identity.v1 import identity_service_pb2_grpc
from omni.identity.v1 import resources_pb2 as identity_resources
from omni.inventory.v1 import inventory_service_pb2 as inventory_pb
from omni.inventory.v1 import inventory_service_pb2_grpc


async def main(args: argparse.Namespace) -> int:
    identity_channel = omni_client.connect(target("identity"), context=omni_client.CallContext("web"))
    service_token = omni_client.ServiceToken(identity_channel, args.client_id, args.client_secret)
    catalogue = omni_client.connect(
        target("inventory"), context=omni_client.CallContext("web"), token=service_token
    )
    try:
        inventory = inventory_service_pb2_grpc.InventoryServiceStub(catalogue)
        item = f"items/{args.item}"
        online = await inventory.CheckAvailability(
            inventory_pb.CheckAvailabilityRequest(items=[item], ship_from=True)
        )
        print(f"{item}: {online.items[0].total_available} in stock online")

        identity = identity_service_pb2_grpc.IdentityServiceStub(identity_channel)
        login = await identity.Login(
            identity_pb.LoginRequest(
                identifier=identity_resources.IdentifierKey(
                    kind=identity_resources.IDENTIFIER_KIND_EMAIL, value=args.email
                ),
                password=args.password,
            )
        )
        customer = login.customer.name
        shopper = omni_client.connect(
            target("cart"),
            context=omni_client.CallContext("web", device=args.device),
            token=omni_client.StaticToken(login.token.access_token),
        )
        try:
            carts = cart_service_pb2_grpc.CartServiceStub(shopper)
            name = f"{customer}/cart"
            cart = await carts.AddCartLine(
                cart_pb.AddCartLineRequest(name=name, line=resources_pb2.CartLine(item=item, quantity=1))
            )
            print(f"added 1 × {item} to {name} (etag {cart.etag})")

            async def read() -> resources_pb2.Cart:
                current: resources_pb2.Cart = await carts.GetCart(cart_pb.GetCartRequest(name=name))
                return current

            async def write(current: resources_pb2.Cart) -> resources_pb2.Cart:
                line = next(line for line in current.lines if line.item == item)
                updated: resources_pb2.Cart = await carts.UpdateCartLine(
                    cart_pb.UpdateCartLineRequest(
                        name=name,
                        line_id=line.line_id,
                        line=resources_pb2.CartLine(quantity=line.quantity + args.more),
                        update_mask=field_mask_pb2.FieldMask(paths=["quantity"]),
                        etag=current.etag,
                    )
                )
                return updated

            cart = await omni_client.retry_on_aborted(read, write)
            for line in cart.lines:
                print(f"  {line.quantity} × {line.item} ({line.title}) {money(line.line_total)}")
            print(f"subtotal {money(cart.subtotal)}, total {money(cart.total)}")
        finally:
            await shopper.close()
    except grpc.aio.AioRpcError as exc:
        print(f"failed: {omni_client.errors.describe(exc)}", file=sys.stderr)
        return 1
    finally:
        await catalogue.close()
        await identity_channel.close()
    return 0


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--client-id", default="web-backend", help="the backend's service client (demo: web-backend)"
    )
    p.add_argument("--client-secret", default="web-backend-local-secret")
    p.add_argument("--email", default="demo@omni.local", help="the shopper (demo customer)")
    p.add_argument("--password", default="omni-demo-password")
    p.add_argument("--device", default="browser-demo", help="the shopper's browser (x-omni-device)")
    p.add_argument("--item", default="TRAIL-SHOE-42", help="SKU to add")
    p.add_argument("--more", type=int, default=1, help="how many more to put in the cart after adding one")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(arguments())))
