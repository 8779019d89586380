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
    if value.tzinfo is None:  # naive means UTC, as Timestamp.FromDatetime reads it
        value = value.replace(tzinfo=UTC)
    # Seconds and nanos directly: FromDatetime's Python code costs more than the rest of a
    # small response's conversion (a cart's lines carry three timestamps each).
    delta = value - _EPOCH
    return timestamp_pb2.Timestamp(
        seconds=delta.days * 86_400 + delta.seconds, nanos=delta.microseconds * 1000
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
