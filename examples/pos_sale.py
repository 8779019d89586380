"""A store till commits a sale through Omni: the goods leave the same stock ledger the web sells from.

    python examples/pos_sale.py [--sell SKU=QTY ...] [--receipt NUMBER]

Needs only the omni-client wheel (``make protos`` builds it into dist/) and a running platform
(``make run``; targets from ``$OMNI_<SERVICE>_TARGET``). The defaults are the local platform's
demo store associate (of ``locations/store-1``) and catalogue. What it shows:

1. the associate logs in at the till (``StaffLogin``); every call carries their token and the
   channel context of the till: ``store_pos``, the store, the till's device id;
2. prices come from the catalogue (``GetItem``): the same price as on the web;
3. each line of the receipt is an ``AdjustStock`` SALE whose request id is derived from the
   receipt number and the line, so a till that re-sends a receipt after a crash or a lost answer
   never takes the stock twice: the script sends the whole receipt a second time to show it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid

import grpc
from _common import money, target

import omni_client
from omni.identity.v1 import identity_service_pb2 as identity_pb
from omni.identity.v1 import identity_service_pb2_grpc
from omni.inventory.v1 import inventory_service_pb2 as inventory_pb
from omni.inventory.v1 import inventory_service_pb2_grpc, resources_pb2

# A namespace for this till software's request ids: uuid5(namespace, receipt/line) is stable.
TILL_NAMESPACE = uuid.UUID("0d7a3c52-9f1e-4c2b-8f65-6f6d6e69706f")


def line_request_id(receipt: str, line: int) -> str:
    return str(uuid.uuid5(TILL_NAMESPACE, f"{receipt}/{line}"))


async def commit(
    stock: inventory_service_pb2_grpc.InventoryServiceStub,
    store: str,
    receipt: str,
    lines: list[tuple[str, int]],
) -> list[inventory_pb.AdjustStockResponse]:
    return [
        await stock.AdjustStock(
            inventory_pb.AdjustStockRequest(
                name=f"{store}/stockLevels/{sku}",
                delta=-quantity,
                reason=resources_pb2.ADJUSTMENT_REASON_SALE,
                reference=receipt,
                request_id=line_request_id(receipt, i),
            )
        )
        for i, (sku, quantity) in enumerate(lines, start=1)
    ]


async def main(args: argparse.Namespace) -> int:
    identity_channel = omni_client.connect(target("identity"), context=omni_client.CallContext("store_pos"))
    try:
        identity = identity_service_pb2_grpc.IdentityServiceStub(identity_channel)
        login = await identity.StaffLogin(
            identity_pb.StaffLoginRequest(email=args.email, password=args.password)
        )
        store = login.store  # an associate works at one store
        print(f"{args.email} at the till of {store}")
        till = omni_client.connect(
            target("inventory"),
            context=omni_client.CallContext("store_pos", store=store, device=args.device),
            token=omni_client.StaticToken(login.access_token),
        )
        try:
            stock = inventory_service_pb2_grpc.InventoryServiceStub(till)
            lines = [(sku, int(qty)) for sku, _, qty in (s.partition("=") for s in args.sell)]
            total = 0
            for sku, quantity in lines:
                item = await stock.GetItem(inventory_pb.GetItemRequest(name=f"items/{sku}"))
                price = next(p for p in item.prices if p.currency_code == args.currency)
                total += price.minor_units * quantity
                print(f"  {quantity} × {item.title:<32} {money(price)}")
            print(f"receipt {args.receipt}: {total / 100:.2f} {args.currency}")

            first = await commit(stock, store, args.receipt, lines)
            again = await commit(stock, store, args.receipt, lines)  # the till re-sends: nothing twice
            assert [r.movement.name for r in again] == [r.movement.name for r in first]
            for response in again:
                level = response.stock_level
                print(f"  {level.item} at {level.location}: {level.on_hand} on hand, {level.available} free")
            print(f"sale committed once ({len(first)} movements); the re-sent receipt got the same ones")
        finally:
            await till.close()
    except grpc.aio.AioRpcError as exc:
        print(f"failed: {omni_client.errors.describe(exc)}", file=sys.stderr)
        return 1
    finally:
        await identity_channel.close()
    return 0


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--email", default="associate@omni.local", help="the store associate (demo)")
    p.add_argument("--password", default="omni-demo-password")
    p.add_argument("--device", default="till-1", help="this till (x-omni-device)")
    p.add_argument("--sell", nargs="+", default=["MERINO-SOCKS=2", "BOTTLE-750=1"], metavar="SKU=QTY")
    p.add_argument("--receipt", default=f"R-{int(time.time())}", help="receipt number (idempotency)")
    p.add_argument("--currency", default="EUR")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(arguments())))
