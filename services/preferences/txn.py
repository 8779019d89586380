"""What every preferences use case shares: the database, the outbox and the configuration.

Mutations run through ``omni_runtime.db.idempotency.once`` (AIP-155); writers of one customer's
consents, caps and merges serialise on ``store.lock_customer`` (a transaction-level advisory
lock), which is what makes a cap impossible to exceed and a merge impossible to interleave with
a consent change.
"""

from __future__ import annotations

from dataclasses import dataclass

from omni_runtime.db.engine import Database
from omni_runtime.events.outbox import Outbox
from services.preferences.config import PreferencesConfig

# Who the ledger says recorded what the service did on its own (expiry of pending consents).
SERVICE_PRINCIPAL = "serviceClients/omni-preferences"


@dataclass(frozen=True)
class Unit:
    db: Database
    outbox: Outbox
    config: PreferencesConfig
