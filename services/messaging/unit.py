"""What every messaging use case shares: the database, the outbox, the providers, the peers, the
configuration and the clock.

The clock is injected (never ``datetime.now()`` in a use case) so that tests can move time to
the end of quiet hours instead of sleeping; leases use the database's clock, because they are
about real elapsed time between replicas, not about the business calendar.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from omni_runtime.db.engine import Database
from omni_runtime.events.outbox import Outbox
from omni_runtime.timestamps import utcnow
from services.messaging.adapters.identity import IdentityClient
from services.messaging.adapters.preferences import PreferencesClient
from services.messaging.config import MessagingConfig, Providers


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return utcnow()


@dataclass
class Unit:
    db: Database
    outbox: Outbox
    config: MessagingConfig
    providers: Providers
    preferences: PreferencesClient
    identity: IdentityClient
    clock: Clock = field(default_factory=SystemClock)
    rng: random.Random = field(default_factory=random.Random)
    # Wakes this replica's delivery worker after a commit that made something due now.
    wake: Callable[[], None] = lambda: None
