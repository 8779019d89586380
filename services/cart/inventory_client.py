"""A thin adapter over the inventory service's stub: the few calls the cart makes, in the cart's
own terms, with the inventory's errors turned into the cart's.

Calls go through ``runtime.peers.channel("inventory")``, which already carries the caller's
deadline, trace context, channel headers, request id and the cart's service token.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2

from omni.inventory.v1 import inventory_service_pb2 as inv
from omni.inventory.v1 import inventory_service_pb2_grpc as inv_grpc
from omni.inventory.v1 import resources_pb2 as inv_r
from omni_runtime.clients import PeerChannels
from omni_runtime.errors import Unavailable, status_of, unpack_details
from omni_runtime.timestamps import to_proto as ts
from services.cart.domain.pricing import CatalogItem

log = logging.getLogger("omni.cart.inventory")


@dataclass(frozen=True, slots=True)
class StoreView:
    """A store as a pickup line needs it: can customers collect there, what it is called, and
    how many units of the asked items it has available now."""

    name: str
    display_name: str
    pickup_enabled: bool
    available: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReservationLine:
    item: str
    quantity: int


class ReservationRefused(Exception):
    """Inventory refused a reservation (FAILED_PRECONDITION): why, and which of its lines."""

    def __init__(
        self, reason: str, message: str, violations: list[tuple[str, str, str]], metadata: dict[str, str]
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.violations = violations
        self.metadata = metadata


def _unavailable(exc: grpc.aio.AioRpcError, what: str) -> Unavailable:
    if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        log.error("inventory refused the cart's %s: %s %s", what, exc.code().name, exc.details())
    return Unavailable(
        f"the inventory service could not {what} ({exc.code().name}); retry later",
        reason="INVENTORY_UNAVAILABLE",
        domain="omni.cart",
        metadata={"inventory_code": exc.code().name},
    )


class InventoryClient:
    """``cache_seconds``: how long a catalogue read may be reused for adding and re-pricing lines
    (a popular item on a sale day is read once per window, not once per click). Checkout always
    reads fresh, and a line's ``price_time`` is the time of the read, so the price TTL still
    bounds how old a price a cart can hold."""

    MAX_CACHED = 10_000

    def __init__(self, peers: PeerChannels, *, cache_seconds: float = 0.0) -> None:
        self._peers = peers
        self._stub: inv_grpc.InventoryServiceStub | None = None
        self._channel: grpc.aio.Channel | None = None
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, CatalogItem | None]] = {}
        self._stores: dict[str, tuple[float, StoreView | None]] = {}

    @property
    def stub(self) -> inv_grpc.InventoryServiceStub:
        channel = self._peers.channel("inventory")
        if self._stub is None or channel is not self._channel:
            self._stub = inv_grpc.InventoryServiceStub(channel)
            self._channel = channel
        return self._stub

    # ---------------------------------------------------------------------------------------
    # Catalogue and availability
    # ---------------------------------------------------------------------------------------

    def peek(self, name: str) -> tuple[bool, CatalogItem | None]:
        """(hit, item) from recent reads only: no call is made."""
        cached = self._cache.get(name)
        if cached is None or time.monotonic() - cached[0] >= self.cache_seconds:
            return False, None
        return True, cached[1]

    def peek_store(self, store: str) -> tuple[bool, StoreView | None]:
        cached = self._stores.get(store)
        if cached is None or time.monotonic() - cached[0] >= self.cache_seconds:
            return False, None
        return True, cached[1]

    async def item(self, name: str, *, fresh: bool = False) -> CatalogItem | None:
        """The catalogue entry of ``items/…``, or None when there is no such item."""
        return (await self.items([name], fresh=fresh))[name]

    async def items(self, names: Iterable[str], *, fresh: bool = False) -> dict[str, CatalogItem | None]:
        """Several items (None: not in the catalogue), recent reads from the cache unless
        ``fresh``, the rest in one BatchGetItems call."""
        wanted = list(dict.fromkeys(names))
        now = time.monotonic()
        out: dict[str, CatalogItem | None] = {}
        if not fresh and self.cache_seconds > 0:
            for name in wanted:
                cached = self._cache.get(name)
                if cached is not None and now - cached[0] < self.cache_seconds:
                    out[name] = cached[1]
        missing = [n for n in wanted if n not in out]
        if missing:
            read_time = datetime.now(UTC)
            for name, found in (await self._batch_get(missing)).items():
                item = None
                if found is not None:
                    item = CatalogItem(
                        name=found.name,
                        title=found.title,
                        active=found.active,
                        prices={p.currency_code: p.minor_units for p in found.prices},
                        read_time=read_time,
                    )
                out[name] = item
                if self.cache_seconds > 0:
                    if len(self._cache) >= self.MAX_CACHED:
                        self._cache.clear()
                    self._cache[name] = (now, item)
        return {name: out[name] for name in wanted}

    async def _batch_get(self, names: list[str]) -> dict[str, inv_r.Item | None]:
        """The items the catalogue has of ``names``; one call, plus one per missing item."""
        absent: dict[str, inv_r.Item | None] = {}
        asked = list(names)
        while asked:
            try:
                answer = await self.stub.BatchGetItems(inv.BatchGetItemsRequest(names=asked))
            except grpc.aio.AioRpcError as exc:
                gone = _unknown_items(exc, asked)
                if not gone:
                    raise _unavailable(exc, "read the catalogue") from exc
                absent.update(dict.fromkeys(gone))
                asked = [n for n in asked if n not in gone]
                continue
            return {**absent, **{item.name: item for item in answer.items}}
        return absent

    async def store(self, store: str, items: Sequence[str]) -> StoreView | None:
        """A store's pickup flag, name and availability of ``items``; None if it is unknown."""
        request = inv.CheckAvailabilityRequest(
            items=list(dict.fromkeys(items)), locations=inv.LocationList(locations=[store])
        )
        try:
            answer = await self.stub.CheckAvailability(request)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return None
            raise _unavailable(exc, "check availability") from exc
        summary = next((loc for loc in answer.locations if loc.location == store), None)
        view: StoreView | None = None
        if summary is not None:
            available: dict[str, int] = {}
            for entry in answer.items:
                for at in entry.locations:
                    if at.location.location == store:
                        available[entry.item] = at.available
            view = StoreView(store, summary.display_name, summary.pickup_enabled, available)
        if self.cache_seconds > 0:
            if len(self._stores) >= self.MAX_CACHED:
                self._stores.clear()
            self._stores[store] = (time.monotonic(), view)
        return view

    async def shippable(self, items: Sequence[str]) -> dict[str, int]:
        """Units of each item available over every location that ships."""
        request = inv.CheckAvailabilityRequest(items=list(dict.fromkeys(items)), ship_from=True)
        try:
            answer = await self.stub.CheckAvailability(request)
        except grpc.aio.AioRpcError as exc:
            raise _unavailable(exc, "check availability") from exc
        return {entry.item: entry.total_available for entry in answer.items}

    # ---------------------------------------------------------------------------------------
    # Reservations
    # ---------------------------------------------------------------------------------------

    async def reserve(
        self,
        *,
        request_id: str,
        owner: str,
        lines: Sequence[ReservationLine],
        pickup_store: str | None,
        ttl: timedelta,
    ) -> inv_r.Reservation:
        """Reserve all ``lines`` (at ``pickup_store``, or wherever ships), all or nothing."""
        reservation = inv_r.Reservation(
            lines=[
                inv_r.ReservationLine(item=ln.item, quantity=ln.quantity, location=pickup_store or "")
                for ln in lines
            ],
            strategy=(
                inv_r.ALLOCATION_STRATEGY_FIXED_LOCATION
                if pickup_store
                else inv_r.ALLOCATION_STRATEGY_PRIORITY
            ),
            allow_split=not pickup_store,
            pickup=bool(pickup_store),
            ttl=duration_pb2.Duration(seconds=int(ttl.total_seconds())),
            owner=owner,
        )
        try:
            made: inv_r.Reservation = await self.stub.CreateReservation(
                inv.CreateReservationRequest(reservation=reservation, request_id=request_id)
            )
            return made
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
                raise _refusal(exc) from exc
            raise _unavailable(exc, "reserve stock") from exc

    async def active_reservations(self, owner: str) -> list[str]:
        """Names of the ACTIVE reservations made for ``owner`` (an order)."""
        names: list[str] = []
        token = ""
        while True:
            request = inv.ListReservationsRequest(
                filter=f'owner = "{owner}" AND state = RESERVATION_STATE_ACTIVE',
                page_size=100,
                page_token=token,
            )
            try:
                page = await self.stub.ListReservations(request)
            except grpc.aio.AioRpcError as exc:
                raise _unavailable(exc, "list reservations") from exc
            names += [res.name for res in page.reservations]
            token = page.next_page_token
            if not token:
                return names

    async def release(self, name: str, *, reason: str, request_id: str = "") -> None:
        """Release a reservation; releasing one already released or expired is a no-op."""
        try:
            await self.stub.ReleaseReservation(
                inv.ReleaseReservationRequest(name=name, reason=reason[:500], request_id=request_id)
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return
            raise _unavailable(exc, "release stock") from exc

    async def commit(self, name: str, *, reference: str, request_id: str = "") -> inv_r.Reservation:
        try:
            committed: inv_r.Reservation = await self.stub.CommitReservation(
                inv.CommitReservationRequest(name=name, reference=reference, request_id=request_id)
            )
            return committed
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                raise _refusal(exc) from exc
            raise _unavailable(exc, "commit stock") from exc

    async def extend(self, name: str, *, until: datetime, request_id: str = "") -> inv_r.Reservation:
        try:
            extended: inv_r.Reservation = await self.stub.ExtendReservation(
                inv.ExtendReservationRequest(name=name, expire_time=ts(until), request_id=request_id)
            )
            return extended
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT):
                raise _refusal(exc) from exc
            raise _unavailable(exc, "extend the reservation") from exc


def _unknown_items(exc: grpc.aio.AioRpcError, asked: Sequence[str]) -> list[str]:
    """The asked names a BatchGetItems refusal says are not in the catalogue (NOT_FOUND names the
    first; INVALID_ARGUMENT the malformed ones): none when it refused for another reason."""
    status = status_of(exc)
    details = unpack_details(status) if status is not None else {}
    if exc.code() == grpc.StatusCode.NOT_FOUND:
        info = details.get("ErrorInfo")
        if isinstance(info, error_details_pb2.ErrorInfo) and info.metadata.get("resource") in asked:
            return [info.metadata["resource"]]
    if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
        bad = details.get("BadRequest")
        if isinstance(bad, error_details_pb2.BadRequest):
            indexes = [_index(v.field) for v in bad.field_violations]
            return [asked[i] for i in indexes if i is not None and i < len(asked)]
    return []


def _index(field: str) -> int | None:
    """``names[3]`` → 3."""
    if field.startswith("names[") and field.endswith("]") and field[6:-1].isdigit():
        return int(field[6:-1])
    return None


def _refusal(exc: grpc.aio.AioRpcError) -> ReservationRefused:
    status = status_of(exc)
    reason = exc.code().name
    metadata: dict[str, str] = {}
    violations: list[tuple[str, str, str]] = []
    if status is not None:
        details = unpack_details(status)
        info = details.get("ErrorInfo")
        if isinstance(info, error_details_pb2.ErrorInfo):
            reason = info.reason
            metadata = dict(info.metadata)
        failure = details.get("PreconditionFailure")
        if isinstance(failure, error_details_pb2.PreconditionFailure):
            violations = [(v.type, v.subject, v.description) for v in failure.violations]
    return ReservationRefused(reason, exc.details() or reason, violations, metadata)
