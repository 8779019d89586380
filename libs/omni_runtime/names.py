"""Resource names (AIP-122): parse and build ``customers/{customer}/cart``-style names.

One implementation so every service validates names the same way and reports the same
error text.
"""

from __future__ import annotations

import re
from functools import lru_cache

# AIP-122 resource ids: lower-case letters, digits and hyphens; SKUs also allow upper case,
# dots and underscores, so ids are checked against this wider, still URL-safe set.
ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._~-]{0,127}"
_VAR = re.compile(r"\{([a-z_]+)\}")


@lru_cache(maxsize=256)
def _compile(pattern: str) -> re.Pattern[str]:
    parts = []
    pos = 0
    for match in _VAR.finditer(pattern):
        parts.append(re.escape(pattern[pos : match.start()]))
        parts.append(f"(?P<{match.group(1)}>{ID_PATTERN}|-)")
        pos = match.end()
    parts.append(re.escape(pattern[pos:]))
    return re.compile("".join(parts))


def parse(pattern: str, name: str, *, allow_wildcard: bool = False) -> dict[str, str] | None:
    """The variables of ``name`` under ``pattern``, or None if it does not match.

    ``-`` (AIP-159 "any") is accepted as a segment only with ``allow_wildcard``.
    """
    match = _compile(pattern).fullmatch(name)
    if match is None:
        return None
    values = match.groupdict()
    if not allow_wildcard and "-" in values.values():
        return None
    return values


def build(pattern: str, **values: str) -> str:
    return _VAR.sub(lambda m: values[m.group(1)], pattern)


def matches(pattern: str, name: str) -> bool:
    return parse(pattern, name) is not None


def customer_of(name: str) -> str | None:
    """``customers/abc/cart`` → ``customers/abc``; None for names outside a customer."""
    parts = name.split("/")
    if len(parts) >= 2 and parts[0] == "customers" and parts[1] and parts[1] != "-":
        return f"customers/{parts[1]}"
    return None
