"""Promotions as marketers manage them: create, read, list, update.

A promotion row is the one definition every channel evaluates (domain/promotions.py); carts
holding its code pick up a change at their next change and at checkout.
"""

from __future__ import annotations

import builtins
import uuid
from datetime import UTC, datetime
from typing import Any

from google.protobuf import field_mask_pb2
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from omni.cart.v1 import resources_pb2 as r
from omni_runtime import names
from omni_runtime.db.idempotency import once
from omni_runtime.errors import Aborted, AlreadyExists, NotFound
from omni_runtime.listing import Field, Kind, Listing, ListQuery, nullable
from omni_runtime.server import Runtime
from omni_runtime.validation import Checker
from services.cart import store
from services.cart.convert import from_ts, promotion_proto
from services.cart.domain.promotions import CODE_PATTERN, normalize_code

DOMAIN = "omni.cart"
PROMOTION_PATTERN = "promotions/{promotion}"
ITEM_PATTERN = "items/{item}"
UPDATABLE = (
    "display_name",
    "percent_off_basis_points",
    "amount_off",
    "minimum_subtotals",
    "items",
    "start_time",
    "end_time",
    "usage_limit",
    "usage_limit_per_customer",
    "active",
)
P = store.promotions.c
_ANY_TIME = datetime(2000, 1, 1, tzinfo=UTC)
PROMOTIONS = Listing(
    fields={
        "code": Field(Kind.STRING, sql=P.code),
        "active": Field(Kind.BOOL, sql=P.active),
        "start_time": Field(Kind.TIMESTAMP, sql=P.start_time),
        "end_time": Field(Kind.TIMESTAMP, sql=P.end_time),
        "items": Field(Kind.STRING, repeated=True, sql=P["items"]),  # P.items is the collection's method
    },
    order_by={
        "create_time": P.create_time,
        "code": P.code,
        # No start sorts first and no end sorts last (in ascending order; the reverse descending).
        "start_time": nullable(P.start_time, _ANY_TIME, nulls_first=True),
        "end_time": nullable(P.end_time, _ANY_TIME, nulls_first=False),
    },
    default_order="create_time desc",
    tiebreak=[P.id],
    unique={"code"},
    domain=DOMAIN,
)


def _money_map(check: Checker, field: str, values: Any, *, positive: bool) -> dict[str, int]:
    out: dict[str, int] = {}
    for i, m in enumerate(values):
        check.currency(f"{field}[{i}].currency_code", m.currency_code)
        if m.currency_code in out:
            check.fail(f"{field}[{i}].currency_code", "appears twice", "DUPLICATE_CURRENCY")
        if m.minor_units < 0 or (positive and m.minor_units == 0):
            check.fail(
                f"{field}[{i}].minor_units",
                "must be positive" if positive else "must not be negative",
                "OUT_OF_RANGE",
            )
        out[m.currency_code] = m.minor_units
    return out


def validate(check: Checker, p: r.Promotion, prefix: str = "promotion") -> dict[str, Any]:
    """Check a whole promotion; returns its column values."""
    code = normalize_code(p.code)
    if check.require(f"{prefix}.code", p.code) and not CODE_PATTERN.fullmatch(code):
        check.fail(f"{prefix}.code", "must be 3 to 32 letters, digits or '-'", "INVALID_CODE")
    if check.require(f"{prefix}.display_name", p.display_name):
        check.length(f"{prefix}.display_name", p.display_name, max_len=200, min_len=1)
    which = p.WhichOneof("discount")
    percent: int | None = None
    amounts: dict[str, int] | None = None
    if which is None:
        check.fail(f"{prefix}.discount", "set percent_off_basis_points or amount_off", "REQUIRED")
    elif which == "percent_off_basis_points":
        percent = p.percent_off_basis_points
        check.range(f"{prefix}.percent_off_basis_points", percent, low=1, high=10_000)
    else:
        if not p.amount_off.amounts:
            check.fail(f"{prefix}.amount_off.amounts", "is required", "REQUIRED")
        amounts = _money_map(check, f"{prefix}.amount_off.amounts", p.amount_off.amounts, positive=True)
    minimums = _money_map(check, f"{prefix}.minimum_subtotals", p.minimum_subtotals, positive=False)
    seen: set[str] = set()
    for i, item in enumerate(p.items):
        if not names.matches(ITEM_PATTERN, item):
            check.fail(f"{prefix}.items[{i}]", "must be an item name items/{item}", "INVALID_NAME")
        elif item in seen:
            check.fail(f"{prefix}.items[{i}]", "appears twice", "DUPLICATE_ITEM")
        seen.add(item)
    start = from_ts(p.start_time) if p.HasField("start_time") else None
    end = from_ts(p.end_time) if p.HasField("end_time") else None
    if start is not None and end is not None and end <= start:
        check.fail(f"{prefix}.end_time", "must be after start_time", "OUT_OF_RANGE")
    if p.usage_limit < 0:
        check.fail(f"{prefix}.usage_limit", "must not be negative", "OUT_OF_RANGE")
    if p.usage_limit_per_customer < 0:
        check.fail(f"{prefix}.usage_limit_per_customer", "must not be negative", "OUT_OF_RANGE")
    return {
        "code": code,
        "display_name": p.display_name,
        "percent_off_bp": percent,
        "amount_off": amounts,
        "minimum_subtotals": minimums,
        "items": list(p.items),
        "start_time": start,
        "end_time": end,
        "usage_limit": p.usage_limit,
        "usage_limit_per_customer": p.usage_limit_per_customer,
        "active": p.active,
    }


class PromotionAdmin:
    def __init__(self, runtime: Runtime) -> None:
        assert runtime.db is not None
        self.db = runtime.db

    async def create(self, request: Any) -> r.Promotion:
        check = Checker()
        promotion_id = request.promotion_id
        if promotion_id and not names.matches(PROMOTION_PATTERN, f"promotions/{promotion_id}"):
            check.fail(
                "promotion_id", "must be letters, digits, '.', '_', '~' or '-' (at most 128)", "INVALID_ID"
            )
        check.request_id("request_id", request.request_id)
        values = validate(check, request.promotion)
        check.raise_if_invalid()
        promotion_id = promotion_id or uuid.uuid4().hex[:16]
        scope = "CreatePromotion"
        now = datetime.now(UTC)

        async def work(session: AsyncSession) -> r.Promotion:
            taken = (
                await session.execute(
                    select(P.id, P.code).where((P.id == promotion_id) | (P.code == values["code"]))
                )
            ).first()
            if taken is not None:
                what = "id" if taken.id == promotion_id else "code"
                raise AlreadyExists(
                    f"a promotion with this {what} exists",
                    reason="PROMOTION_EXISTS",
                    domain=DOMAIN,
                    metadata={"resource": f"promotions/{taken.id}", "field": what},
                )
            row = (
                await session.execute(
                    insert(store.promotions)
                    .values(
                        id=promotion_id,
                        version=1,
                        usage_count=0,
                        create_time=now,
                        update_time=now,
                        **values,
                    )
                    .returning(store.promotions)
                )
            ).one()
            return promotion_proto(row)

        try:
            return await once(self.db, scope, request.request_id, request, r.Promotion, work)
        except IntegrityError:
            # A concurrent create with another request took the id or the code.
            raise AlreadyExists(
                "a promotion with this id or code exists", reason="PROMOTION_EXISTS", domain=DOMAIN
            ) from None

    async def get(self, name: str) -> r.Promotion:
        parsed = names.parse(PROMOTION_PATTERN, name)
        assert parsed is not None
        async with self.db.transaction() as session:
            row = await store.promotion_row(session, parsed["promotion"])
        if row is None:
            raise NotFound(name, domain=DOMAIN)
        return promotion_proto(row)

    async def list(self, query: ListQuery) -> tuple[builtins.list[r.Promotion], str, int]:
        async with self.db.transaction() as session:
            rows, token = await query.page(session, select(store.promotions))
            total = await query.count(session, store.promotions)
        return [promotion_proto(row) for row in rows], token, total

    async def update(self, request: Any, paths: builtins.list[str]) -> r.Promotion:
        given: r.Promotion = request.promotion
        parsed = names.parse(PROMOTION_PATTERN, given.name)
        assert parsed is not None
        promotion_id = parsed["promotion"]
        scope = f"UpdatePromotion:{given.name}"

        async def work(session: AsyncSession) -> r.Promotion:
            row = await store.promotion_row(session, promotion_id, lock=True)
            if row is None:
                raise NotFound(given.name, domain=DOMAIN)
            if given.etag and given.etag != str(row.version):
                raise Aborted(
                    f"{given.name} changed since etag {given.etag!r}",
                    current_etag=str(row.version),
                    domain=DOMAIN,
                    metadata={"resource": given.name},
                )
            merged = promotion_proto(row)
            for path in paths:
                if path == "percent_off_basis_points":
                    merged.percent_off_basis_points = given.percent_off_basis_points
                elif path == "amount_off":
                    merged.amount_off.CopyFrom(given.amount_off)
                elif path in ("minimum_subtotals", "items"):
                    merged.ClearField(path)  # type: ignore[arg-type]
                    getattr(merged, path).extend(getattr(given, path))
                elif path in ("start_time", "end_time"):
                    merged.ClearField(path)  # type: ignore[arg-type]
                    if given.HasField(path):  # type: ignore[arg-type]
                        getattr(merged, path).CopyFrom(getattr(given, path))
                else:
                    setattr(merged, path, getattr(given, path))
            check = Checker()
            values = validate(check, merged)
            check.raise_if_invalid()
            values.pop("code")
            updated = (
                await session.execute(
                    update(store.promotions)
                    .where(P.id == promotion_id)
                    .values(version=row.version + 1, update_time=datetime.now(UTC), **values)
                    .returning(store.promotions)
                )
            ).one()
            return promotion_proto(updated)

        return await once(self.db, scope, request.request_id, request, r.Promotion, work)


def update_paths(check: Checker, mask: field_mask_pb2.FieldMask, given: r.Promotion) -> list[str]:
    """AIP-134 for UpdatePromotion: ``*`` is every updatable field; an empty mask the fields set."""
    if not mask.paths:
        return [f.name for f, _ in given.ListFields() if f.name in UPDATABLE]
    return check.update_mask("update_mask", mask, UPDATABLE, given)
