"""Roles → permissions: the one table that says what each kind of caller may do.

Every RPC names its permission in the contract (``omni.type.v1.auth``); this table grants
permissions to roles with a scope:
- ``ALL``: any resource;
- ``STORE``: resources of the caller's own store (checked by the domain, which knows where an
  order is picked up or which location a stock level belongs to; see ``require_store``);
- ``SELF``: only the caller's own resources: its own name (``customers/c1``,
  ``staffMembers/s1``) or anything beneath it (checked by the runtime).
Patterns use ``*`` as a wildcard over the dotted name.
"""

from __future__ import annotations

import contextvars
import enum
import fnmatch
from collections.abc import Iterable
from functools import lru_cache

from omni_runtime.context import current_principal
from omni_runtime.errors import PermissionDenied


class Scope(enum.IntEnum):
    SELF = 1
    STORE = 2
    ALL = 3


ALL, STORE, SELF = Scope.ALL, Scope.STORE, Scope.SELF

# Read-only catalogue and store information every signed-in caller may see.
_CATALOGUE = (
    ("inventory.items.get", ALL),
    ("inventory.items.list", ALL),
    ("inventory.locations.get", ALL),
    ("inventory.locations.list", ALL),
    ("inventory.availability.*", ALL),
    ("inventory.stockLevels.get", ALL),
    ("inventory.stockLevels.list", ALL),
)

# What a customer (or a guest, who is a customer not yet registered) may do to their own data.
_OWN_DATA = (
    ("identity.customers.get", SELF),
    ("identity.customers.update", SELF),
    ("identity.credentials.update", ALL),  # ChangePassword acts on the caller only
    ("identity.identifiers.*", SELF),
    ("identity.sessions.*", SELF),
    ("profile.profiles.get", SELF),
    ("profile.profiles.update", SELF),
    ("profile.profiles.export", SELF),
    ("profile.customerViews.get", SELF),
    ("profile.addresses.*", SELF),
    ("profile.interactions.create", SELF),
    ("profile.interactions.list", SELF),
    ("cart.carts.*", SELF),
    ("cart.orders.get", SELF),
    ("cart.orders.list", SELF),
    ("cart.orders.cancel", SELF),
    ("preferences.preferences.get", SELF),
    ("preferences.preferences.update", SELF),
    ("preferences.preferences.decide", SELF),
    ("preferences.consents.*", SELF),
    ("preferences.consentEvents.list", SELF),
    ("messaging.conversations.get", SELF),
    ("messaging.conversations.list", SELF),
    ("messaging.conversations.create", SELF),
    ("messaging.messages.*", SELF),
    ("messaging.notifications.get", SELF),
    ("messaging.notifications.list", SELF),
    ("inventory.stockSubscriptions.*", SELF),
)

# Every member of staff manages their own sessions and password.
_STAFF_SELF = (
    ("identity.sessions.*", SELF),
    ("identity.credentials.update", ALL),
    ("identity.staffMembers.get", SELF),
)

ROLE_GRANTS: dict[str, tuple[tuple[str, Scope], ...]] = {
    "customer": (*_CATALOGUE, *_OWN_DATA, ("identity.customers.erase", SELF)),
    "guest": (*_CATALOGUE, *_OWN_DATA),
    # Call-center and chat agents: read every customer, work their conversations and carts.
    "agent": (
        *_CATALOGUE,
        *_STAFF_SELF,
        ("identity.customers.get", ALL),
        ("identity.identities.resolve", ALL),
        ("identity.identifiers.list", ALL),
        ("identity.identifiers.link", ALL),
        ("profile.profiles.get", ALL),
        ("profile.profiles.update", ALL),
        ("profile.profiles.merge", ALL),
        ("profile.customerViews.get", ALL),
        ("profile.addresses.*", ALL),
        ("profile.interactions.*", ALL),
        ("profile.segments.get", ALL),
        ("profile.segments.list", ALL),
        ("cart.carts.*", ALL),
        ("cart.orders.*", ALL),
        ("cart.promotions.get", ALL),
        ("cart.promotions.list", ALL),
        ("preferences.preferences.get", ALL),
        ("preferences.preferences.decide", ALL),
        # Count a manual outbound marketing call or message against the customer's caps.
        ("preferences.preferences.recordContact", ALL),
        ("preferences.consents.*", ALL),
        ("preferences.consentEvents.list", ALL),
        ("messaging.*", ALL),
        # See a customer's pickup reservations; sign them up for back-in-stock news on the phone.
        ("inventory.reservations.get", ALL),
        ("inventory.reservations.list", ALL),
        ("inventory.stockSubscriptions.*", ALL),
    ),
    # A store associate works at one store: its orders, its stock, its customers at the till.
    "store_associate": (
        *_CATALOGUE,
        *_STAFF_SELF,
        ("identity.customers.get", ALL),
        ("identity.identities.resolve", ALL),
        # Recognize the customer at the till: see and attest their loyalty card.
        ("identity.identifiers.list", ALL),
        ("identity.identifiers.link", ALL),
        ("profile.profiles.get", ALL),
        ("profile.customerViews.get", ALL),
        ("profile.interactions.create", ALL),
        # "Would you like our offers?" at the till: record the answer, see what was agreed.
        ("preferences.preferences.get", ALL),
        ("preferences.consents.set", ALL),
        ("preferences.consents.get", ALL),
        ("preferences.consents.list", ALL),
        ("cart.carts.*", ALL),
        ("cart.orders.get", STORE),
        ("cart.orders.list", STORE),
        ("cart.orders.markReady", STORE),
        ("cart.orders.collect", STORE),
        ("cart.orders.cancel", STORE),
        ("inventory.stockLevels.adjust", STORE),
        ("inventory.stockMovements.get", STORE),
        ("inventory.stockMovements.list", STORE),
        ("inventory.reservations.*", STORE),
        # "Tell me when it is back": signing up the customer at the till.
        ("inventory.stockSubscriptions.*", ALL),
        # The store's conversations (started at the till or about its pickups) and its inbox;
        # the associate's own agent (availability while on shift).
        ("messaging.conversations.*", STORE),
        ("messaging.messages.*", STORE),
        ("messaging.inboxItems.*", STORE),
        ("messaging.agents.get", STORE),
        ("messaging.agents.setAvailability", STORE),
    ),
    "marketer": (
        *_CATALOGUE,
        *_STAFF_SELF,
        ("profile.segments.*", ALL),
        ("profile.journeyReports.get", ALL),
        ("profile.profiles.get", ALL),
        ("preferences.customers.listOptedIn", ALL),
        ("preferences.preferences.decide", ALL),
        ("cart.promotions.*", ALL),
        ("messaging.templates.*", ALL),
        ("messaging.notifications.*", ALL),
        ("inventory.items.*", ALL),
    ),
    "admin": (("*", ALL),),
    # Channel backends and Omni's own services acting for any customer.
    "service": (("*", ALL),),
}

current_scope: contextvars.ContextVar[Scope] = contextvars.ContextVar("omni_scope", default=Scope.ALL)


@lru_cache(maxsize=4096)
def _grant(roles: frozenset[str], permission: str) -> Scope | None:
    best: Scope | None = None
    for role in roles:
        for pattern, scope in ROLE_GRANTS.get(role, ()):
            if fnmatch.fnmatchcase(permission, pattern) and (best is None or scope > best):
                best = scope
    return best


def grant(roles: Iterable[str], permission: str) -> Scope | None:
    """The widest scope any of ``roles`` grants for ``permission``; None when none does."""
    return _grant(frozenset(roles), permission)


def require_store(location: str) -> None:
    """Domain-level check for STORE-scoped grants: the resource must belong to the caller's store."""
    if current_scope.get() is not Scope.STORE:
        return
    principal = current_principal.get()
    if not principal.store or principal.store != location:
        raise PermissionDenied(
            "this store associate may act only on their own store's resources",
            reason="STORE_SCOPE",
            metadata={"store": principal.store, "resource_store": location},
        )
