"""Stock levels: what is available, what status that is, and which thresholds a change crosses.

One definition of ``available`` serves reservations (the SQL guard uses the same formula),
availability answers and events, so a channel never sees a number the ledger would refuse.
"""

from __future__ import annotations

from dataclasses import dataclass

from omni.inventory.v1 import resources_pb2 as res

IN_STOCK = res.STOCK_STATUS_IN_STOCK
LOW_STOCK = res.STOCK_STATUS_LOW_STOCK
OUT_OF_STOCK = res.STOCK_STATUS_OUT_OF_STOCK
OVERSOLD = res.STOCK_STATUS_OVERSOLD


@dataclass(frozen=True, slots=True)
class Quantities:
    """The numbers of one stock level (a level that never held stock is all zeros)."""

    on_hand: int = 0
    reserved: int = 0
    safety_stock: int = 0
    low_stock_threshold: int = 0

    @property
    def available(self) -> int:
        """Units that can still be sold or reserved; never negative (the contract's definition)."""
        return max(0, self.on_hand - self.reserved - self.safety_stock)

    @property
    def oversold(self) -> bool:
        """Some reservations here cannot be honoured (a till sold units a reservation held)."""
        return self.on_hand < self.reserved

    @property
    def status(self) -> res.StockStatus.ValueType:
        if self.oversold:
            return OVERSOLD
        available = self.available
        if available == 0:
            return OUT_OF_STOCK
        if self.low_stock_threshold > 0 and available <= self.low_stock_threshold:
            return LOW_STOCK
        return IN_STOCK

    def moved(self, on_hand_delta: int, reserved_delta: int) -> Quantities:
        return Quantities(
            self.on_hand + on_hand_delta,
            self.reserved + reserved_delta,
            self.safety_stock,
            self.low_stock_threshold,
        )


@dataclass(frozen=True, slots=True)
class Crossings:
    """Threshold events one movement causes (each at most once per crossing)."""

    low_stock: bool = False
    out_of_stock: bool = False
    back_in_stock: bool = False


def crossings(before: Quantities, after: Quantities) -> Crossings:
    """Which thresholds the change from ``before`` to ``after`` crossed.

    Low stock fires when ``available`` drops from above the threshold into (0, threshold]: the
    contract's "dropped to or below while staying positive". Coming back from 0 into the low
    band is a back-in-stock, not a drop, so it does not also fire low stock.
    """
    old, new = before.available, after.available
    threshold = after.low_stock_threshold
    return Crossings(
        low_stock=threshold > 0 and old > threshold and 0 < new <= threshold,
        out_of_stock=old > 0 and new == 0,
        back_in_stock=old == 0 and new > 0,
    )


@dataclass(frozen=True, slots=True)
class AdjustmentRule:
    """What an adjustment reason records and which sign its delta must have (0: either)."""

    kind: int
    sign: int
    accepts_count: bool = False


ADJUSTMENTS: dict[int, AdjustmentRule] = {
    res.ADJUSTMENT_REASON_RECEIPT: AdjustmentRule(res.MOVEMENT_KIND_RECEIPT, +1),
    res.ADJUSTMENT_REASON_SALE: AdjustmentRule(res.MOVEMENT_KIND_SALE, -1),
    res.ADJUSTMENT_REASON_RETURN: AdjustmentRule(res.MOVEMENT_KIND_RETURN, +1),
    res.ADJUSTMENT_REASON_CORRECTION: AdjustmentRule(res.MOVEMENT_KIND_CORRECTION, 0, accepts_count=True),
    res.ADJUSTMENT_REASON_DAMAGE: AdjustmentRule(res.MOVEMENT_KIND_DAMAGE, -1),
    res.ADJUSTMENT_REASON_TRANSFER_IN: AdjustmentRule(res.MOVEMENT_KIND_TRANSFER_IN, +1),
    res.ADJUSTMENT_REASON_TRANSFER_OUT: AdjustmentRule(res.MOVEMENT_KIND_TRANSFER_OUT, -1),
}


def movement_kind_label(kind: int) -> str:
    """``MOVEMENT_KIND_RESERVATION_COMMIT`` → ``reservation_commit`` (metric label)."""
    return res.MovementKind.Name(kind).removeprefix("MOVEMENT_KIND_").lower()  # type: ignore[arg-type]
