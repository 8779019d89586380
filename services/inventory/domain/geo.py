"""Distances on the Earth's surface, for "stores near me" and the NEAREST allocation strategy.

Store counts per retailer are in the hundreds or low thousands, so a bounding box in SQL plus
an exact haversine in Python is both simple and fast; no PostGIS needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

EARTH_RADIUS_M = 6_371_008.8  # mean radius (IUGG)


def haversine_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Great-circle distance in metres between two points given in degrees."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi = phi2 - phi1
    dlambda = math.radians(lng2 - lng1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlambda / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


@dataclass(frozen=True, slots=True)
class BoundingBox:
    """A lat/lng rectangle containing every point within a radius; ``lng`` None = any longitude."""

    min_lat: float
    max_lat: float
    min_lng: float | None
    max_lng: float | None


def bounding_box(lat: float, lng: float, radius_m: float) -> BoundingBox:
    """A box that surely contains the circle; the exact distance filters afterwards.

    Near a pole or across the antimeridian the longitude bound is dropped rather than wrapped:
    over-selecting a few rows is cheaper than getting the wrap-around right twice.
    """
    dlat = math.degrees(radius_m / EARTH_RADIUS_M)
    min_lat, max_lat = max(-90.0, lat - dlat), min(90.0, lat + dlat)
    cos_lat = math.cos(math.radians(max(abs(min_lat), abs(max_lat))))
    if cos_lat < 1e-6:
        return BoundingBox(min_lat, max_lat, None, None)
    dlng = math.degrees(radius_m / (EARTH_RADIUS_M * cos_lat))
    if dlng >= 180 or lng - dlng < -180 or lng + dlng > 180:
        return BoundingBox(min_lat, max_lat, None, None)
    return BoundingBox(min_lat, max_lat, lng - dlng, lng + dlng)


def valid_point(lat: float, lng: float) -> bool:
    return -90.0 <= lat <= 90.0 and -180.0 <= lng <= 180.0 and not (math.isnan(lat) or math.isnan(lng))
