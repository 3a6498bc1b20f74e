"""Orders, fills and positions: what the risk engine approves, what the paper broker and
the live gateway execute, and what the positions agent publishes and stores.

Sizes are in coin units (``sz``, unsigned; a position's ``szi`` is signed, positive
long), prices in USD (``px``), money in USD (``*_usd``), times in epoch milliseconds
(``ts_ms``). Every order carries a client order id (``cloid``, HyperLiquid's 16-byte hex
form) chosen before it is sent, so a retry after a timeout can never place it twice.
"""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bistouryd.bus import payload

OrderKind = Literal["market", "limit", "stop_loss", "take_profit"]
Purpose = Literal["open", "close", "reduce", "stop_loss", "take_profit", "emergency"]
OrderStatus = Literal[
    "filled", "partially_filled", "resting", "waiting_trigger", "rejected", "canceled"
]
Liquidity = Literal["taker", "maker"]
TradingMode = Literal["paper", "live"]

CLOID_PATTERN = r"^0x[0-9a-f]{32}$"


def new_cloid() -> str:
    """A fresh client order id: ``0x`` and 32 hex digits (HyperLiquid's ``Cloid``)."""
    return "0x" + uuid.uuid4().hex


@payload
class OrderRequest(BaseModel):
    """One order as approved by the risk engine, rounded to the asset's tick and lot.

    ``market`` orders are IoC limits at ``limit_px`` (the worst price accepted: mark ±
    slippage), as the SDK sends them. ``stop_loss`` and ``take_profit`` are reduce-only
    trigger orders that become market orders when the mark crosses ``trigger_px``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    cloid: str = Field(default_factory=new_cloid, pattern=CLOID_PATTERN)
    ts_ms: int = Field(gt=0)
    coin: str
    is_buy: bool
    sz: float = Field(gt=0)
    kind: OrderKind
    limit_px: float | None = Field(default=None, gt=0)
    trigger_px: float | None = Field(default=None, gt=0)
    reduce_only: bool = False
    purpose: Purpose
    decision_id: str | None = None
    mode: TradingMode = "paper"

    @model_validator(mode="after")
    def _prices(self) -> OrderRequest:
        if self.kind in ("stop_loss", "take_profit"):
            if self.trigger_px is None or not self.reduce_only:
                raise ValueError(f"a {self.kind} order needs a trigger_px and is reduce-only")
        elif self.trigger_px is not None:
            raise ValueError(f"a {self.kind} order takes no trigger_px")
        if self.kind == "limit" and self.limit_px is None:
            raise ValueError("a limit order needs a limit_px")
        return self

    @property
    def side(self) -> str:
        return "buy" if self.is_buy else "sell"

    @property
    def topic(self) -> str:
        return f"order.{self.coin}"


@payload
class OrderUpdate(BaseModel):
    """What became of an order: the broker's or the exchange's answer, or a later change."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cloid: str = Field(pattern=CLOID_PATTERN)
    ts_ms: int = Field(gt=0)
    coin: str
    status: OrderStatus
    filled_sz: float = Field(default=0.0, ge=0)
    avg_px: float | None = Field(default=None, gt=0)
    oid: int | None = None
    error: str | None = None

    @property
    def topic(self) -> str:
        return f"order.{self.coin}"


@payload
class Fill(BaseModel):
    """One execution of one order (an order walking three levels fills three times)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    ts_ms: int = Field(gt=0)
    coin: str
    cloid: str = Field(pattern=CLOID_PATTERN)
    is_buy: bool
    px: float = Field(gt=0)
    sz: float = Field(gt=0)
    fee_usd: float = Field(description="paid (+) or rebated (-)")
    liquidity: Liquidity
    closed_pnl_usd: float = Field(default=0.0, description="realised by this fill, before fees")
    purpose: Purpose
    decision_id: str | None = None
    opened_by: str | None = Field(
        default=None, description="the decision that opened the position this fill reduces"
    )
    mode: TradingMode = "paper"

    @property
    def topic(self) -> str:
        return f"fill.{self.coin}"

    @property
    def notional_usd(self) -> float:
        return self.px * self.sz


@payload
class FundingPayment(BaseModel):
    """One hourly funding payment on an open position (positive: received)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ts_ms: int = Field(gt=0)
    coin: str
    szi: float
    rate: float
    px: float = Field(gt=0, description="the oracle price it was computed at")
    amount_usd: float
    mode: TradingMode = "paper"

    @property
    def topic(self) -> str:
        return f"funding.{self.coin}"


@payload
class RiskRefusal(BaseModel):
    """A decision the risk engine refused, and why (kept for review and the metrics)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    ts_ms: int = Field(gt=0)
    coin: str
    decision_id: str | None = None
    action: str
    rule: str
    message: str
    hint: str
    mode: TradingMode = "paper"

    @property
    def topic(self) -> str:
        return f"risk.{self.coin}"


class Position(BaseModel):
    """One coin's open position with its protection and what it has earned so far."""

    model_config = ConfigDict(extra="forbid")

    coin: str
    szi: float = Field(description="signed size: positive long, negative short")
    entry_px: float = Field(gt=0)
    opened_ts_ms: int = Field(gt=0)
    stop_px: float | None = Field(default=None, gt=0)
    target_px: float | None = Field(default=None, gt=0)
    decision_id: str | None = None
    realised_pnl_usd: float = 0.0
    fees_usd: float = 0.0
    funding_usd: float = Field(default=0.0, description="received (+) or paid (-)")

    @property
    def side(self) -> Literal["long", "short"]:
        return "long" if self.szi > 0 else "short"

    def unrealised_pnl_usd(self, mark_px: float) -> float:
        return self.szi * (mark_px - self.entry_px)

    def notional_usd(self, mark_px: float) -> float:
        return abs(self.szi) * mark_px
