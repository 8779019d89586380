"""The cart service's own settings, ``OMNI_CART_*`` (read once at start-up, like the runtime's)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from omni_runtime.config import ConfigError, Settings
from services.cart.domain.lines import Limits
from services.cart.domain.merge import MergeMode


@dataclass(frozen=True, slots=True)
class CartConfig:
    # A line's price snapshot older than this is refreshed at the cart's next change.
    price_ttl: timedelta = timedelta(minutes=15)
    # How long a catalogue read may be reused when adding or re-pricing lines (0: never).
    catalogue_cache_seconds: float = 2.0
    # Currency of a cart whose first AddCartLine names none.
    default_currency: str = "EUR"
    limits: Limits = field(default_factory=Limits)
    # A non-empty cart unchanged this long is reported once as abandoned.
    abandon_after: timedelta = timedelta(hours=24)
    sweep_interval: float = 60.0
    # How long checkout's reservations hold the stock of an order not yet collected or shipped.
    reservation_ttl: timedelta = timedelta(days=7)
    # Default time a store holds a pickup once marked ready; the contract caps it at 14 days
    # after the order was placed.
    pickup_window: timedelta = timedelta(days=3)
    # A WatchCart stream ends (OK) after this long so clients re-balance over replicas.
    watch_max_age: float = 1800.0
    # Changes buffered per watcher before it is sent a fresh snapshot instead.
    watch_queue_size: int = 16
    # How the guest_upgraded consumer merges a guest's cart into the customer's.
    guest_merge_mode: MergeMode = MergeMode.SUM_QUANTITIES

    @classmethod
    def from_settings(cls, settings: Settings) -> CartConfig:
        mode_name = settings.setting("GUEST_MERGE_MODE", "SUM_QUANTITIES").upper()
        try:
            mode = MergeMode[mode_name.removeprefix("MERGE_MODE_")]
        except KeyError:
            raise ConfigError(f"OMNI_CART_GUEST_MERGE_MODE: unknown merge mode {mode_name!r}") from None
        currency = settings.setting("DEFAULT_CURRENCY", "EUR").upper()
        if len(currency) != 3 or not currency.isalpha():
            raise ConfigError("OMNI_CART_DEFAULT_CURRENCY must be an ISO 4217 code")
        return cls(
            price_ttl=timedelta(seconds=settings.number("PRICE_TTL_SECONDS", 900)),
            catalogue_cache_seconds=settings.number("CATALOGUE_CACHE_SECONDS", 2.0),
            default_currency=currency,
            limits=Limits(
                max_lines=int(settings.number("MAX_LINES", 100)),
                max_units=int(settings.number("MAX_UNITS", 5000)),
            ),
            abandon_after=timedelta(seconds=settings.number("ABANDON_AFTER_SECONDS", 86400)),
            sweep_interval=settings.number("SWEEP_INTERVAL_SECONDS", 60),
            reservation_ttl=timedelta(seconds=settings.number("RESERVATION_TTL_SECONDS", 7 * 86400)),
            pickup_window=timedelta(seconds=settings.number("PICKUP_WINDOW_SECONDS", 3 * 86400)),
            watch_max_age=settings.number("WATCH_MAX_AGE_SECONDS", 1800),
            watch_queue_size=max(1, int(settings.number("WATCH_QUEUE_SIZE", 16))),
            guest_merge_mode=mode,
        )
