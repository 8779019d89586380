"""Validation rules of the catalogue's resources (items, locations), shared by create and update.

They add violations to an ``omni_runtime.validation.Checker`` under a field prefix, so a batch
can report ``items[3].prices[1].currency_code`` and an update can validate the merged result.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from omni.inventory.v1 import resources_pb2 as res
from omni_runtime.validation import Checker
from services.inventory.domain import geo, hours

ITEM_FIELDS = ("title", "description", "attributes", "prices", "active")
LOCATION_FIELDS = (
    "type",
    "display_name",
    "address",
    "coordinates",
    "opening_hours",
    "ship_from",
    "pickup_enabled",
    "allocation_priority",
)
_ATTRIBUTE_KEY = re.compile(r"[a-z][a-z0-9_]{0,63}")
_REGION = re.compile(r"[A-Z]{2}")


def check_item(check: Checker, item: res.Item, prefix: str, fields: Collection[str] = ITEM_FIELDS) -> None:
    if "title" in fields and check.require(f"{prefix}.title", item.title.strip()):
        check.length(f"{prefix}.title", item.title, max_len=200)
    if "description" in fields:
        check.length(f"{prefix}.description", item.description, max_len=10_000)
    if "attributes" in fields:
        if len(item.attributes) > 64:
            check.fail(f"{prefix}.attributes", "must have at most 64 entries", "TOO_MANY")
        for key, value in sorted(item.attributes.items()):
            if not _ATTRIBUTE_KEY.fullmatch(key):
                check.fail(f"{prefix}.attributes[{key!r}]", "keys must be lower_snake_case", "INVALID_KEY")
            check.length(f"{prefix}.attributes[{key!r}]", value, max_len=1000)
    if "prices" in fields:
        seen: set[str] = set()
        for i, price in enumerate(item.prices):
            path = f"{prefix}.prices[{i}]"
            check.currency(f"{path}.currency_code", price.currency_code)
            if price.currency_code in seen:
                check.fail(f"{path}.currency_code", "each currency may have one price only", "DUPLICATE")
            seen.add(price.currency_code)
            if price.minor_units < 0:
                check.fail(f"{path}.minor_units", "must not be negative", "OUT_OF_RANGE")


def check_location(check: Checker, loc: res.Location, prefix: str) -> None:
    """Validate a whole location (create, or the merged result of an update)."""
    if loc.type not in (res.LOCATION_TYPE_WAREHOUSE, res.LOCATION_TYPE_STORE):
        check.fail(f"{prefix}.type", "must be LOCATION_TYPE_WAREHOUSE or LOCATION_TYPE_STORE", "REQUIRED")
    if check.require(f"{prefix}.display_name", loc.display_name.strip()):
        check.length(f"{prefix}.display_name", loc.display_name, max_len=200)
    if loc.type == res.LOCATION_TYPE_STORE and not loc.HasField("address"):
        check.fail(f"{prefix}.address", "is required for a store", "REQUIRED")
    if loc.HasField("address"):
        addr = loc.address
        if addr.region_code and not _REGION.fullmatch(addr.region_code):
            check.fail(
                f"{prefix}.address.region_code", "must be a CLDR region code such as RO", "INVALID_REGION"
            )
        for attr in ("postal_code", "administrative_area", "locality", "recipient"):
            check.length(f"{prefix}.address.{attr}", getattr(addr, attr), max_len=200)
        if len(addr.address_lines) > 5:
            check.fail(f"{prefix}.address.address_lines", "must have at most 5 lines", "TOO_MANY")
        for i, line in enumerate(addr.address_lines):
            check.length(f"{prefix}.address.address_lines[{i}]", line, max_len=200)
    if loc.HasField("coordinates") and not geo.valid_point(
        loc.coordinates.latitude, loc.coordinates.longitude
    ):
        check.fail(
            f"{prefix}.coordinates",
            "latitude must be within [-90, 90] and longitude within [-180, 180]",
            "OUT_OF_RANGE",
        )
    for path, description in hours.validate(loc.opening_hours, f"{prefix}.opening_hours"):
        check.fail(path, description, "INVALID_OPENING_HOURS")
    if loc.pickup_enabled and loc.type != res.LOCATION_TYPE_STORE:
        check.fail(f"{prefix}.pickup_enabled", "only stores may offer pickup", "PICKUP_NOT_A_STORE")
