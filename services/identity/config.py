"""Identity's own settings (``OMNI_IDENTITY_*``), read once from the runtime's Settings.

| variable | default | meaning |
|---|---|---|
| OMNI_IDENTITY_ACCESS_TOKEN_TTL_SECONDS | 900 | access-token lifetime (customers, guests, staff) |
| OMNI_IDENTITY_REFRESH_TOKEN_TTL_SECONDS | 2592000 | customer/guest refresh-token lifetime (sliding) |
| OMNI_IDENTITY_STAFF_REFRESH_TOKEN_TTL_SECONDS | 43200 | staff refresh-token lifetime (sliding) |
| OMNI_IDENTITY_SERVICE_TOKEN_TTL_SECONDS | 900 | default service-token lifetime |
| OMNI_IDENTITY_MAX_SERVICE_TOKEN_TTL_SECONDS | 3600 | upper bound of ServiceClient.token_lifetime |
| OMNI_IDENTITY_SIGNING_KEY_ROTATE_SECONDS | 604800 | local mode: age at which a new signing key is made |
| OMNI_IDENTITY_ARGON2_TIME_COST | 3 | Argon2id passes |
| OMNI_IDENTITY_ARGON2_MEMORY_KIB | 65536 | Argon2id memory (KiB) |
| OMNI_IDENTITY_ARGON2_PARALLELISM | 4 | Argon2id lanes |
| OMNI_IDENTITY_ONE_TIME_CODE_TTL_SECONDS | 600 | one-time-code lifetime |
| OMNI_IDENTITY_ONE_TIME_CODE_RESEND_SECONDS | 60 | minimum gap between codes to one destination |
| OMNI_IDENTITY_ONE_TIME_CODE_MAX_ATTEMPTS | 5 | wrong codes before a challenge is void |
| OMNI_IDENTITY_LOGIN_THROTTLE_AFTER | 5 | failures per identifier before back-off |
| OMNI_IDENTITY_LOGIN_LOCK_AFTER | 10 | failures per account before a temporary lock |
| OMNI_IDENTITY_BOOTSTRAP_CLIENTS_FILE | (none) | JSON list of Omni's own service clients |

The Argon2 defaults are RFC 9106's second recommended profile (and argon2-cffi's defaults).
Tests lower them (``time_cost=1, memory=1024 KiB``) through the same variables so that a suite
that hashes hundreds of passwords stays fast; nothing else changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from omni_runtime.config import ConfigError, Settings
from services.identity.domain import LockoutPolicy


def _int(settings: Settings, name: str, default: int, *, low: int = 1) -> int:
    raw = settings.setting(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"OMNI_IDENTITY_{name} must be an integer, got {raw!r}") from None
    if value < low:
        raise ConfigError(f"OMNI_IDENTITY_{name} must be at least {low}, got {value}")
    return value


@dataclass(frozen=True, slots=True)
class IdentityConfig:
    access_token_ttl: int = 900
    refresh_token_ttl: int = 30 * 24 * 3600
    staff_refresh_token_ttl: int = 12 * 3600
    service_token_ttl: int = 900
    max_service_token_ttl: int = 3600
    signing_key_rotate: int = 7 * 24 * 3600
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65536
    argon2_parallelism: int = 4
    code_ttl: int = 600
    code_resend: int = 60
    code_max_attempts: int = 5
    lockout: LockoutPolicy = field(default_factory=LockoutPolicy)
    bootstrap_clients_file: Path | None = None

    @property
    def longest_token_ttl(self) -> timedelta:
        """How long a retired signing key must stay published."""
        return timedelta(
            seconds=max(self.access_token_ttl, self.service_token_ttl, self.max_service_token_ttl)
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> IdentityConfig:
        bootstrap = settings.setting("BOOTSTRAP_CLIENTS_FILE", "")
        config = cls(
            access_token_ttl=_int(settings, "ACCESS_TOKEN_TTL_SECONDS", 900),
            refresh_token_ttl=_int(settings, "REFRESH_TOKEN_TTL_SECONDS", 30 * 24 * 3600),
            staff_refresh_token_ttl=_int(settings, "STAFF_REFRESH_TOKEN_TTL_SECONDS", 12 * 3600),
            service_token_ttl=_int(settings, "SERVICE_TOKEN_TTL_SECONDS", 900),
            max_service_token_ttl=_int(settings, "MAX_SERVICE_TOKEN_TTL_SECONDS", 3600),
            signing_key_rotate=_int(settings, "SIGNING_KEY_ROTATE_SECONDS", 7 * 24 * 3600),
            argon2_time_cost=_int(settings, "ARGON2_TIME_COST", 3),
            argon2_memory_kib=_int(settings, "ARGON2_MEMORY_KIB", 65536, low=8),
            argon2_parallelism=_int(settings, "ARGON2_PARALLELISM", 4),
            code_ttl=_int(settings, "ONE_TIME_CODE_TTL_SECONDS", 600),
            code_resend=_int(settings, "ONE_TIME_CODE_RESEND_SECONDS", 60, low=0),
            code_max_attempts=_int(settings, "ONE_TIME_CODE_MAX_ATTEMPTS", 5),
            lockout=LockoutPolicy(
                throttle_after=_int(settings, "LOGIN_THROTTLE_AFTER", 5),
                lock_after=_int(settings, "LOGIN_LOCK_AFTER", 10),
            ),
            bootstrap_clients_file=Path(bootstrap) if bootstrap else None,
        )
        if config.argon2_memory_kib < 8 * config.argon2_parallelism:
            raise ConfigError("OMNI_IDENTITY_ARGON2_MEMORY_KIB must be at least 8 × the parallelism")
        if config.service_token_ttl > config.max_service_token_ttl:
            raise ConfigError("OMNI_IDENTITY_SERVICE_TOKEN_TTL_SECONDS exceeds the maximum service-token TTL")
        return config
