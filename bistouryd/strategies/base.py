"""The strategy plug-in interface: parameters, rolling state, and the ``Signal`` it emits.

A strategy is pure logic. It is fed typed market-data events (``bistouryd.market``) for
one coin, in time order, and keeps whatever rolling state it needs; every time comes
from the events, never from a clock, so the same code gives the same signals in the live
agent, in a paper-historical replay and in the backtester. It reads no sockets, files
or databases.

Its ``Params`` are a pydantic model of typed, bounded fields (``Field(ge=..., le=...)``):
``config.yaml`` is validated against them, the optimizer searches within their bounds,
and a reload hands a strategy new ones without losing its state.

Its narrative states only what its features show: every number in the text is one of
the features, formatted (``unbacked_numbers`` checks this and the tests use it).
"""

from __future__ import annotations

import math
import re
import uuid
from abc import ABC, abstractmethod
from typing import ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bistouryd.bus import payload
from bistouryd.market import MarketEvent

Direction = Literal["long", "short", "neutral"]
Input = Literal["candle", "l2", "trades", "ctx", "funding", "signal"]


@payload
class Signal(BaseModel):
    """One strategy's view of one coin at ``ts_ms`` (``sig.<strategy>.<coin>``)."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    strategy: str
    coin: str
    ts_ms: int = Field(gt=0)
    direction: Direction
    strength: float = Field(ge=0, le=1, description="how strong the setup is")
    confidence: float = Field(ge=0, le=1, description="how much the data supports it")
    narrative: str = Field(min_length=1, max_length=600)
    features: dict[str, float] = Field(default_factory=dict)

    @field_validator("features")
    @classmethod
    def _finite(cls, features: dict[str, float]) -> dict[str, float]:
        bad = [k for k, v in features.items() if not math.isfinite(v)]
        if bad:
            raise ValueError(f"features must be finite numbers: {', '.join(bad)}")
        return features

    @property
    def topic(self) -> str:
        return f"sig.{self.strategy}.{self.coin}"


class StrategyParams(BaseModel):
    """Base of every strategy's parameters (its section under ``strategies:``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True


P = TypeVar("P", bound=StrategyParams)


class Strategy(ABC, Generic[P]):
    """One strategy for one coin. Subclasses set ``name``, ``Params`` and ``inputs``."""

    name: ClassVar[str]
    Params: ClassVar[type[StrategyParams]]
    inputs: ClassVar[frozenset[Input]]

    def __init__(self, coin: str, params: P):
        self.coin = coin
        self.params = params

    @abstractmethod
    def update(self, event: MarketEvent | Signal) -> Signal | None:
        """Take one event (of this coin, in time order); return a signal when the view
        changed enough to say so, else None."""

    def reconfigure(self, params: P) -> None:
        """New parameters from a reload; the rolling state is kept unless they make it
        meaningless (a strategy that must start over says so by overriding this)."""
        self.params = params

    def signal(
        self,
        ts_ms: int,
        direction: Direction,
        strength: float,
        confidence: float,
        narrative: str,
        features: dict[str, float],
    ) -> Signal:
        return Signal(
            strategy=self.name,
            coin=self.coin,
            ts_ms=ts_ms,
            direction=direction,
            strength=_unit(strength),
            confidence=_unit(confidence),
            narrative=narrative,
            features=features,
        )


def _unit(x: float) -> float:
    return min(1.0, max(0.0, x)) if math.isfinite(x) else 0.0


# ---- narratives backed by features ------------------------------------------------------

# A number, with an optional unit; a number glued to other letters ("15m", "1h") is a
# label, not a measurement.
_NUMBER = re.compile(
    r"(?<![\w.])([-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)"  # 1,234.5 or 1234.5
    r"(?:\s?(%|bps|x)(?![A-Za-z]))?"  # an optional unit
    r"(?![\w]|\.\d|,\d)"  # not glued to letters or more digits ("15m" is a label)
)


def _decimals(token: str) -> int:
    return len(token.split(".", 1)[1]) if "." in token else 0


def unbacked_numbers(signal: Signal) -> list[str]:
    """Numbers in the narrative that no feature supports.

    A number is backed when some feature, scaled by its unit (``%``: ×100, ``bps``:
    ×10,000, none or ``x``: ×1), rounds to it at the precision it is written with.
    Write narratives from the features with ordinary formatting (``f"{v:.1f}x"``,
    ``f"{v * 100:.2f}%"``, ``f"{px:,.0f}"``) and this holds by construction.
    """
    values = list(signal.features.values())
    unbacked = []
    for match in _NUMBER.finditer(signal.narrative):
        token, unit = match.group(1), match.group(2)
        number = float(token.replace(",", ""))
        scale = {"%": 100.0, "bps": 10_000.0}.get(unit or "", 1.0)
        tolerance = 0.5 * 10 ** -_decimals(token) + 1e-9
        if not any(abs(abs(v * scale) - abs(number)) <= tolerance for v in values):
            unbacked.append(match.group(0).strip())
    return unbacked
