"""The account as the trader sees it: open positions, today's P&L and what the risk
engine still allows. The positions agent publishes a ``PortfolioSnapshot`` on ``pos``
after every change; the trader shows it to the model and decides only what it allows.

Until a snapshot arrives (no positions agent, or before its first one), the trader
assumes a flat paper account (``PortfolioSnapshot.assumed``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bistouryd.bus import payload

Side = Literal["flat", "long", "short"]
TOPIC = "pos"


class PositionView(BaseModel):
    """One coin's open position (flat when there is none)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    side: Side = "flat"
    size_sz: float = Field(default=0.0, ge=0, description="size in coin units, unsigned")
    entry_px: float | None = Field(default=None, gt=0)
    unrealised_pnl_usd: float = 0.0

    @model_validator(mode="after")
    def _consistent(self) -> PositionView:
        if self.side == "flat":
            if self.size_sz != 0 or self.entry_px is not None:
                raise ValueError("a flat position has size_sz 0 and no entry_px")
        elif self.size_sz <= 0 or self.entry_px is None:
            raise ValueError(f"a {self.side} position needs size_sz above 0 and an entry_px")
        return self


FLAT = PositionView()


@payload
class PortfolioSnapshot(BaseModel):
    """What the positions agent reports on ``pos``; coins without an entry are flat."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ts_ms: int = Field(gt=0)
    equity_usd: float = Field(ge=0)
    pnl_today_usd: float = 0.0
    risk_budget_usd: float = Field(ge=0, description="what new positions may still commit")
    max_positions_left: int = Field(ge=0)
    positions: dict[str, PositionView] = Field(default_factory=dict)
    cash_usd: float = 0.0
    exposure_usd: float = Field(default=0.0, ge=0, description="total notional at marks")
    unrealised_pnl_usd: float = 0.0
    realised_pnl_usd: float = Field(default=0.0, description="since the session started")
    fees_usd: float = 0.0
    funding_usd: float = Field(default=0.0, description="received (+) or paid (-)")
    trading_paused: bool = False
    session_return: float = Field(default=0.0, description="equity change since the start")
    buy_and_hold: dict[str, float] = Field(
        default_factory=dict,
        description="coin -> its price change over the same period (the market to beat)",
    )
    mode: Literal["paper", "live"] = "paper"
    assumed: bool = Field(
        default=False, description="not reported by a positions agent: the trader's default"
    )

    @property
    def topic(self) -> str:
        return TOPIC

    def position(self, coin: str) -> PositionView:
        return self.positions.get(coin, FLAT)

    @classmethod
    def assumed_flat(
        cls, ts_ms: int, equity_usd: float, exposure_pct: float, max_positions: int
    ) -> PortfolioSnapshot:
        """A flat account of ``equity_usd`` that may commit ``exposure_pct`` of it."""
        return cls(
            ts_ms=ts_ms,
            equity_usd=equity_usd,
            risk_budget_usd=equity_usd * exposure_pct / 100,
            max_positions_left=max_positions,
            assumed=True,
        )
