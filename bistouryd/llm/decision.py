"""``TradeDecision``: what a model (a language model or the ``rules`` model) answers.

It is the structured-output schema handed to the providers, so its field descriptions
are part of the prompt. A decision that does not validate never becomes an order. Sizes
are fractions of the remaining risk budget, stops and targets fractions of the entry
price; the risk engine turns them into orders and may refuse them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Action = Literal["open_long", "open_short", "close", "reduce", "hold"]
OPENING: frozenset[str] = frozenset({"open_long", "open_short"})


class SignalContribution(BaseModel):
    """How much one strategy's signal weighed in the decision, and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: str = Field(min_length=1, max_length=64, description="the signal's strategy")
    direction: Literal["long", "short", "neutral"] = Field(description="what the signal said")
    weight: float = Field(ge=0, le=1, description="its share in the decision, 0 to 1")
    reason: str = Field(min_length=1, max_length=300, description="why it counted this much")


class TradeDecision(BaseModel):
    """One decision for one coin."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    coin: str = Field(min_length=1, max_length=32, description="the coin, as in the prompt")
    action: Action = Field(
        description="open_long or open_short a new position, close or reduce the open one, "
        "or hold (do nothing)"
    )
    size_fraction: float = Field(
        ge=0,
        le=1,
        description="for open_* and reduce: the share of the remaining risk budget (open) or "
        "of the position (reduce), 0 to 1; 0 for hold and close",
    )
    stop_loss_pct: float | None = Field(
        default=None,
        gt=0,
        le=0.5,
        description="for open_*: the stop's distance from the entry price, as a fraction "
        "(0.01 is 1%)",
    )
    take_profit_pct: float | None = Field(
        default=None,
        gt=0,
        le=2,
        description="for open_*: the target's distance from the entry price, as a fraction",
    )
    confidence: float = Field(ge=0, le=1, description="how sure, 0 to 1")
    rationale: str = Field(
        min_length=1, max_length=2000, description="why, in a few sentences a trader can check"
    )
    contributions: list[SignalContribution] = Field(
        default_factory=list,
        max_length=20,
        description="the signals that mattered, with their weight and why",
    )

    @model_validator(mode="after")
    def _consistent(self) -> TradeDecision:
        if self.action in OPENING:
            if self.size_fraction <= 0:
                raise ValueError(f"{self.action} needs a size_fraction above 0")
            if self.stop_loss_pct is None:
                raise ValueError(f"{self.action} needs a stop_loss_pct: every position has a stop")
        elif self.action == "reduce":
            if not 0 < self.size_fraction < 1:
                raise ValueError("reduce needs a size_fraction between 0 and 1 (1 is close)")
        elif self.size_fraction != 0:
            raise ValueError(f"{self.action} takes size_fraction 0")
        if self.action not in OPENING and (
            self.stop_loss_pct is not None or self.take_profit_pct is not None
        ):
            raise ValueError("stop_loss_pct and take_profit_pct belong to open_* decisions")
        return self
