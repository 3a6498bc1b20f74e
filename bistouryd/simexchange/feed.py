"""What a market-data source hands the engine: one ``Block`` per coin per step of replay time.

Two sources implement ``CoinFeed``: ``replay.ReplayFeed`` (recorded data, with trades and book
generated from the candles where nothing was recorded) and ``synthetic.SyntheticFeed`` (a seeded
random walk). The engine does not care which one it steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from bistouryd.exchange.rules import AssetRules
from bistouryd.market import Candle, FundingRate, L2Book
from bistouryd.simexchange.candles import CandleSeries

AggressorSide = Literal["B", "A"]
Origin = Literal["recorded", "synthetic"]


@dataclass(frozen=True, slots=True)
class PublicTrade:
    """One print of the public tape; ``side`` is the aggressor's (``B`` lifted an ask)."""

    coin: str
    ts_ms: int
    px: float
    sz: float
    side: AggressorSide
    tid: int
    hash: str
    users: tuple[str, str]  # (buyer, seller)


@dataclass(frozen=True, slots=True)
class Block:
    """One coin's market over one step ending at ``ts_ms``: the trades printed in the step,
    the best bid/ask after it, and a recorded book or a settled funding rate if there was one."""

    coin: str
    ts_ms: int
    trades: tuple[PublicTrade, ...]
    bid_px: float
    ask_px: float
    recorded_book: L2Book | None
    funding: FundingRate | None


@dataclass(frozen=True)
class Source:
    """Where one channel of one coin comes from, for ``GET /admin/status``."""

    coin: str
    channel: str
    origin: Origin
    detail: str


class CoinFeed(Protocol):
    rules: AssetRules
    bid_px: float  # the touch after the last block (before the first: at the start time)
    ask_px: float

    @property
    def candles(self) -> CandleSeries:
        """Closed bars per interval (recorded, or generated for a synthetic coin)."""

    @property
    def time_ms(self) -> int:
        """End of the last block handed out: the feed's "now"."""

    @property
    def next_ts_ms(self) -> int | None:
        """When the next block ends, or ``None`` once the data is exhausted."""

    def next_block(self) -> Block: ...

    def partial_bar(self) -> Candle | None:
        """The base-interval bar still open at ``time_ms``, from the trades so far."""

    def funding_history(self, start_ms: int, end_ms: int) -> list[FundingRate]:
        """Settled funding with ``start_ms <= time <= end_ms``, never after ``time_ms``."""

    def sources(self) -> list[Source]: ...
