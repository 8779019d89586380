"""What both examples share: where the services are and how to print money (not part of the API)."""

from __future__ import annotations

import os

LOCAL_PORTS = {"identity": 50051, "cart": 50053, "inventory": 50054, "messaging": 50055}


def target(service: str) -> str:
    """``$OMNI_<SERVICE>_TARGET``, else the local platform's port (``make run``)."""
    return os.environ.get(f"OMNI_{service.upper()}_TARGET") or f"127.0.0.1:{LOCAL_PORTS[service]}"


def money(amount: object) -> str:
    minor = int(getattr(amount, "minor_units", 0))
    return f"{minor / 100:.2f} {getattr(amount, 'currency_code', '')}"
