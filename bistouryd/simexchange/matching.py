"""Orders of the simulated exchange and the rules deciding when they fill or trigger.

Pure: the state changes live in ``venue``. A resting limit order fills in full, as maker, at
its own price when the market trades *through* it (a print beyond its price, or the opposite
touch moving beyond it): being merely touched is not enough, since the queue ahead of it is
unknown. A trigger order fires when the mark price reaches its trigger price: a take-profit
sell or a stop-loss buy when the mark rises to it, the other two when it falls to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Tif = Literal["Gtc", "Ioc", "Alo"]
Tpsl = Literal["tp", "sl"]
Grouping = Literal["na", "normalTpsl", "positionTpsl"]


@dataclass(frozen=True)
class Trigger:
    px: float
    is_market: bool
    tpsl: Tpsl


@dataclass
class SimOrder:
    oid: int
    user: str
    coin: str
    is_buy: bool
    limit_px: float
    sz: float  # still open
    orig_sz: float
    tif: Tif | None  # None for a trigger order until it fires
    reduce_only: bool
    cloid: str | None
    timestamp_ms: int
    trigger: Trigger | None = None
    is_position_tpsl: bool = False
    parent_oid: int | None = None  # a normalTpsl child waits for this order to fill
    children: list[int] = field(default_factory=list)
    siblings: list[int] = field(default_factory=list)  # the other legs of a TP/SL pair
    triggered: bool = False
    status: str = "open"
    status_ts_ms: int = 0

    @property
    def side(self) -> str:
        return "B" if self.is_buy else "A"

    @property
    def waiting_trigger(self) -> bool:
        return self.trigger is not None and not self.triggered

    @property
    def order_type(self) -> str:
        """``frontendOpenOrders``' name: ``Limit``, ``Take Profit Market``, ``Stop Limit``..."""
        if self.trigger is None:
            return "Limit"
        kind = "Take Profit" if self.trigger.tpsl == "tp" else "Stop"
        return f"{kind} {'Market' if self.trigger.is_market else 'Limit'}"

    @property
    def fires_above(self) -> bool:
        """Whether the trigger fires on a rise (sell take-profit, buy stop-loss)."""
        return self.trigger is not None and (self.trigger.tpsl == "tp") != self.is_buy


def trigger_fires(order: SimOrder, mark_px: float) -> bool:
    if order.trigger is None:
        return False
    if order.fires_above:
        return mark_px >= order.trigger.px
    return mark_px <= order.trigger.px


def traded_through(order: SimOrder, px: float) -> bool:
    """Whether a print (or the opposite touch) at ``px`` is beyond the order's price."""
    return px < order.limit_px if order.is_buy else px > order.limit_px


def crosses(is_buy: bool, limit_px: float, best_opposite_px: float | None) -> bool:
    """Whether a limit order at ``limit_px`` would take liquidity at once."""
    if best_opposite_px is None:
        return False
    return best_opposite_px <= limit_px if is_buy else best_opposite_px >= limit_px


def reducible_sz(is_buy: bool, sz: float, position_szi: float) -> float:
    """How much of a reduce-only order may execute: 0 if it would grow the position."""
    if position_szi == 0 or (position_szi > 0) == is_buy:
        return 0.0
    return min(sz, abs(position_szi))
