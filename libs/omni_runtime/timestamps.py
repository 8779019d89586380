"""Time as the contracts carry it: aware UTC datetimes in code, ``google.protobuf.Timestamp`` on the wire."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload

from google.protobuf import timestamp_pb2


def utcnow() -> datetime:
    return datetime.now(UTC)


@overload
def to_proto(value: datetime) -> timestamp_pb2.Timestamp: ...
@overload
def to_proto(value: None) -> None: ...
def to_proto(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    """A Timestamp for ``value`` (None stays None, for optional fields)."""
    if value is None:
        return None
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value.astimezone(UTC))
    return out
