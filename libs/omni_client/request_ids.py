"""Request ids (AIP-155): one per logical call, the same on every retry of it.

Omni's mutations take a ``request_id``; a repeat with the same id returns the first answer and
changes nothing twice. That makes a retry after UNAVAILABLE or a lost response safe, but only if
the retry sends the *same* id, and a *new* logical call a new one. ``with_request_id`` returns a
copy of a request with a fresh id when it has the field and it is empty; the caller's message is
never changed, so re-sending the same request object later is a new call, not a replay.
"""

from __future__ import annotations

import uuid
from typing import TypeVar

from google.protobuf import descriptor, message

M = TypeVar("M", bound=message.Message)
FIELD = "request_id"


def new_request_id() -> str:
    return str(uuid.uuid4())


def has_request_id_field(request: message.Message) -> bool:
    field = request.DESCRIPTOR.fields_by_name.get(FIELD)
    return field is not None and field.type == descriptor.FieldDescriptor.TYPE_STRING


def with_request_id(request: M) -> M:
    """``request`` itself if it has no ``request_id`` field or one is set; else a copy with one."""
    if not has_request_id_field(request) or getattr(request, FIELD):
        return request
    copy = type(request)()
    copy.CopyFrom(request)
    setattr(copy, FIELD, new_request_id())
    return copy
