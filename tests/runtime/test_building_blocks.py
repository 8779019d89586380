"""Configuration, names, validation, permissions and key caching (idempotency: test_idempotency.py)."""

from __future__ import annotations

import datetime as dt

import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2

from omni.probe.v1 import probe_pb2
from omni_runtime import names, timestamps
from omni_runtime.auth.keys import JwksKeySource
from omni_runtime.auth.permissions import Scope, grant
from omni_runtime.auth.tokens import SigningKey, TokenVerifier, issue_token
from omni_runtime.config import ConfigError, Settings
from omni_runtime.errors import InvalidArgument, Unauthenticated
from omni_runtime.validation import Checker


def test_settings_local_defaults_and_overrides() -> None:
    local = Settings.from_env("cart", env={})
    assert (local.grpc_port, local.metrics_port) == (50053, 9103)
    assert local.target("inventory") == "127.0.0.1:50054"
    k8s = Settings.from_env(
        "cart",
        env={
            "OMNI_GRPC_PORT": "50051",
            "OMNI_INVENTORY_TARGET": "omni-inventory:50051",
            "OMNI_CART_PRICE_TTL": "60",
        },
    )
    assert k8s.grpc_port == 50051
    assert k8s.target("inventory") == "omni-inventory:50051"
    assert k8s.setting("price_ttl", "300") == "60"


@pytest.mark.parametrize(
    ("env", "message"),
    [({"OMNI_GRPC_PORT": "fifty"}, "OMNI_GRPC_PORT"), ({"OMNI_LOG_LEVEL": "LOUD"}, "OMNI_LOG_LEVEL")],
)
def test_bad_settings_fail_at_start_up(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env("cart", env=env)


def test_resource_names() -> None:
    assert names.parse("customers/{customer}/cart", "customers/c-1/cart") == {"customer": "c-1"}
    assert names.parse("customers/{customer}/cart", "customers/c-1/carts") is None
    assert names.parse("customers/{customer}/orders", "customers/-/orders") is None
    assert names.parse("customers/{customer}/orders", "customers/-/orders", allow_wildcard=True) == {
        "customer": "-"
    }
    assert names.parse("items/{item}", "items/SKU_1.a") == {"item": "SKU_1.a"}
    assert names.parse("items/{item}", "items/a/b") is None
    assert (
        names.build("locations/{location}/stockLevels/{item}", location="s1", item="k")
        == "locations/s1/stockLevels/k"
    )
    assert names.customer_of("customers/c1/cart") == "customers/c1"
    assert names.customer_of("locations/s1") is None


def test_checker_collects_every_violation() -> None:
    check = Checker()
    check.name("name", "nope", "items/{item}")
    check.request_id("request_id", "not-a-uuid")
    check.currency("price.currency_code", "eur")
    check.positive("quantity", 0)
    assert check.page_size("page_size", 5000) == 1000
    assert check.page_size("page_size", 0) == 50
    mask = field_mask_pb2.FieldMask(paths=["text", "name", "bogus"])
    assert check.update_mask("update_mask", mask, ["text"], probe_pb2.EchoRequest()) == ["text"]
    with pytest.raises(InvalidArgument) as info:
        check.raise_if_invalid()
    fields = [v.field for v in info.value.violations]
    assert fields == [
        "name",
        "request_id",
        "price.currency_code",
        "quantity",
        "update_mask.paths[1]",
        "update_mask.paths[2]",
    ]


@pytest.mark.parametrize(
    ("roles", "permission", "scope"),
    [
        ({"customer"}, "cart.carts.update", Scope.SELF),
        ({"customer"}, "cart.orders.collect", None),
        ({"customer"}, "inventory.items.get", Scope.ALL),
        ({"store_associate"}, "cart.orders.collect", Scope.STORE),
        ({"store_associate", "agent"}, "cart.orders.get", Scope.ALL),
        ({"marketer"}, "cart.carts.get", None),
        ({"admin"}, "anything.at.all", Scope.ALL),
        (set(), "cart.carts.get", None),
    ],
)
def test_role_table(roles: set[str], permission: str, scope: Scope | None) -> None:
    assert grant(roles, permission) is scope


async def test_jwks_cache_refetches_once_for_an_unknown_kid() -> None:
    """Rotation: a token signed by a key announced after the last fetch triggers one refetch."""
    old, new = SigningKey.generate("old"), SigningKey.generate("new")
    published = [old.jwk()]
    fetches = 0

    async def fetch() -> list[dict[str, str]]:
        nonlocal fetches
        fetches += 1
        return list(published)

    verifier = TokenVerifier(JwksKeySource(fetch, ttl=300, min_refresh=0))
    await verifier.verify(issue_token(old, subject="customers/a", roles=["customer"]))
    assert fetches == 1
    await verifier.verify(issue_token(old, subject="customers/a", roles=["customer"]))
    assert fetches == 1  # cached
    published.append(new.jwk())
    principal = await verifier.verify(issue_token(new, subject="customers/b", roles=["customer"], store=""))
    assert principal.subject == "customers/b"
    assert fetches == 2
    with pytest.raises(Unauthenticated):
        await verifier.verify(issue_token(SigningKey.generate("ghost"), subject="customers/c", roles=[]))


async def test_forged_kids_are_rate_limited() -> None:
    fetches = 0

    async def fetch() -> list[dict[str, str]]:
        nonlocal fetches
        fetches += 1
        return []

    source = JwksKeySource(fetch, ttl=300, min_refresh=60)
    for i in range(20):
        assert await source.key(f"forged-{i}") is None
    assert fetches == 1


async def test_verified_tokens_are_remembered_until_they_expire() -> None:
    key = SigningKey.generate("k")
    lookups = 0

    class CountingKeys:
        async def key(self, kid: str):  # type: ignore[no-untyped-def]
            nonlocal lookups
            lookups += 1
            return key.private_key.public_key() if kid == "k" else None

    verifier = TokenVerifier(CountingKeys(), cache_size=2)
    token = issue_token(key, subject="customers/a", roles=["customer"])
    first = await verifier.verify(token)
    assert await verifier.verify(token) == first
    assert lookups == 2  # the second call only checked that the key is still published
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    with pytest.raises(Unauthenticated):
        await verifier.verify(tampered)
    expired = issue_token(key, subject="customers/b", roles=["customer"], ttl_seconds=60, now=1_000_000)
    for _ in range(2):
        with pytest.raises(Unauthenticated, match="expired"):
            await verifier.verify(expired)
    for n in range(3):
        await verifier.verify(issue_token(key, subject=f"customers/x{n}", roles=["customer"]))
    assert len(verifier._verified) == 2


async def test_remembered_tokens_end_when_their_key_is_retired() -> None:
    key = SigningKey.generate("k1")
    published = {"k1": key.private_key.public_key()}

    class Keys:
        async def key(self, kid: str):  # type: ignore[no-untyped-def]
            return published.get(kid)

    verifier = TokenVerifier(Keys())
    token = issue_token(key, subject="customers/a", roles=["customer"])
    assert (await verifier.verify(token)).subject == "customers/a"
    published.clear()  # rotation retired k1
    with pytest.raises(Unauthenticated):
        await verifier.verify(token)


@pytest.mark.parametrize(
    "value",
    [
        dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC),
        dt.datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=dt.UTC),
        dt.datetime(2030, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=3))),
        dt.datetime(2024, 1, 1, 12, 0, 0),  # naive: UTC
    ],
)
def test_timestamps_match_protobufs_own_conversion(value: dt.datetime) -> None:
    expected = timestamp_pb2.Timestamp()
    expected.FromDatetime(value)
    assert timestamps.to_proto(value) == expected
    assert timestamps.to_proto(None) is None
