"""Request validation that gathers every bad field before answering INVALID_ARGUMENT.

A servicer builds a ``Checker``, calls its checks, then ``raise_if_invalid()``: the caller gets
one BadRequest listing every violation (AIP-193), not one error per round trip.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable

from google.protobuf import field_mask_pb2
from google.protobuf.message import Message

from omni_runtime import names
from omni_runtime.errors import FieldViolation, InvalidArgument

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50
_CURRENCY = re.compile(r"[A-Z]{3}")


class Checker:
    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def fail(self, field: str, description: str, reason: str = "INVALID_FIELD") -> None:
        self.violations.append(FieldViolation(field, description, reason))

    def require(self, field: str, value: object) -> bool:
        if value in ("", None, 0) or (isinstance(value, list | tuple) and not value):
            self.fail(field, "is required", "REQUIRED")
            return False
        return True

    def name(self, field: str, value: str, pattern: str, *, allow_wildcard: bool = False) -> dict[str, str]:
        """Check a required resource name; returns its variables ({} if invalid)."""
        if not self.require(field, value):
            return {}
        parsed = names.parse(pattern, value, allow_wildcard=allow_wildcard)
        if parsed is None:
            self.fail(field, f"must be a resource name of the form {pattern}", "INVALID_NAME")
            return {}
        return parsed

    def optional_name(self, field: str, value: str, pattern: str) -> dict[str, str]:
        return self.name(field, value, pattern) if value else {}

    def request_id(self, field: str, value: str, *, required: bool = False) -> None:
        """AIP-155: a request id, when given, is a UUID."""
        if not value:
            if required:
                self.fail(field, "is required", "REQUIRED")
            return
        try:
            uuid.UUID(value)
        except ValueError:
            self.fail(field, "must be a UUID", "INVALID_REQUEST_ID")

    def length(self, field: str, value: str, *, max_len: int, min_len: int = 0) -> None:
        if not min_len <= len(value) <= max_len:
            self.fail(field, f"must be between {min_len} and {max_len} characters", "INVALID_LENGTH")

    def range(self, field: str, value: int | float, *, low: float, high: float) -> None:
        if not low <= value <= high:
            self.fail(field, f"must be between {low:g} and {high:g}", "OUT_OF_RANGE")

    def positive(self, field: str, value: int) -> None:
        if value <= 0:
            self.fail(field, "must be greater than 0", "OUT_OF_RANGE")

    def currency(self, field: str, value: str) -> None:
        if not _CURRENCY.fullmatch(value or ""):
            self.fail(field, "must be an ISO 4217 code of three upper-case letters", "INVALID_CURRENCY")

    def page_size(self, field: str, value: int) -> int:
        """AIP-158: negative is an error, 0 means the default, above the maximum is coerced."""
        if value < 0:
            self.fail(field, "must not be negative", "OUT_OF_RANGE")
            return DEFAULT_PAGE_SIZE
        return min(value or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)

    def update_mask(
        self, field: str, mask: field_mask_pb2.FieldMask, allowed: Iterable[str], resource: Message
    ) -> list[str]:
        """AIP-134: an empty mask means every updatable field; unknown or immutable paths fail."""
        allowed_set = set(allowed)
        paths = list(mask.paths)
        if not paths:
            return sorted(allowed_set)
        if paths == ["*"]:
            return sorted(allowed_set)
        out: list[str] = []
        for i, path in enumerate(paths):
            top = path.split(".", 1)[0]
            if top not in resource.DESCRIPTOR.fields_by_name:
                self.fail(f"{field}.paths[{i}]", f"unknown field {path!r}", "UNKNOWN_FIELD")
            elif top not in allowed_set and path not in allowed_set:
                self.fail(f"{field}.paths[{i}]", f"field {path!r} cannot be updated", "IMMUTABLE_FIELD")
            else:
                out.append(path)
        return out

    def raise_if_invalid(self, message: str | None = None) -> None:
        if self.violations:
            raise InvalidArgument(self.violations, message)
