"""Market data as the rest of Bistoury sees it, and its parsing from HyperLiquid's JSON.

HyperLiquid sends numbers as strings and uses one-letter keys (``{"t","T","s","i","o",
"c","h","l","v","n"}`` for a candle). These models give them names with units (``px``,
``sz``, ``ts_ms``) and floats. The same models travel on the bus (``md.*`` topics), are
written by the recorder to the typed tables, and feed the strategies, the paper broker
and the backtester, whether the data comes live from the collector or from a replay.

Pure: no I/O. The ``parse_*`` functions raise ``MarketDataError`` on a malformed message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bistouryd.bus import payload

Interval = Literal[
    "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "8h", "12h", "1d", "3d", "1w", "1M"
]
INTERVAL_MS: dict[str, int] = {
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
    "3d": 259_200_000,
    "1w": 604_800_000,
}
Side = Literal["buy", "sell"]


_T = TypeVar("_T")


class MarketDataError(ValueError):
    """A HyperLiquid message that does not have the expected shape."""


class _Md(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


@payload
class Candle(_Md):
    """One OHLCV bar (``md.candle.<COIN>.<interval>``). The last bar may still be open:
    later messages for the same ``open_ts_ms`` replace it."""

    coin: str
    interval: Interval
    open_ts_ms: int
    close_ts_ms: int
    open_px: float
    high_px: float
    low_px: float
    close_px: float
    volume_sz: float = Field(ge=0, description="traded size in the base asset")
    trades_n: int | None = Field(default=None, ge=0)

    @property
    def topic(self) -> str:
        return f"md.candle.{self.coin}.{self.interval}"


class BookLevel(_Md):
    px: float
    sz: float
    n: int = Field(ge=0, description="number of orders at this price")


@payload
class L2Book(_Md):
    """A full L2 snapshot (``md.l2.<COIN>``): bids best (highest) first, asks best first.

    Levels are kept as parallel columns (``bid_px[i]``, ``bid_sz[i]``, ``bid_n[i]``): a
    snapshot is the most frequent message on the bus and this is about four times
    cheaper to build, send and read than a list of level objects, and it is already the
    layout of the table it is stored in. ``bids``/``asks`` give level objects on demand,
    and are accepted at construction too.
    """

    coin: str
    ts_ms: int
    bid_px: list[float]
    bid_sz: list[float]
    bid_n: list[int]
    ask_px: list[float]
    ask_sz: list[float]
    ask_n: list[int]

    @model_validator(mode="before")
    @classmethod
    def _from_levels(cls, data: Any) -> Any:
        if isinstance(data, dict) and ("bids" in data or "asks" in data):
            data = dict(data)
            for side in ("bid", "ask"):
                levels = data.pop(f"{side}s", [])
                data[f"{side}_px"] = [lv.px for lv in levels]
                data[f"{side}_sz"] = [lv.sz for lv in levels]
                data[f"{side}_n"] = [lv.n for lv in levels]
        return data

    @model_validator(mode="after")
    def _same_lengths(self) -> L2Book:
        if not len(self.bid_px) == len(self.bid_sz) == len(self.bid_n):
            raise ValueError("bid columns differ in length")
        if not len(self.ask_px) == len(self.ask_sz) == len(self.ask_n):
            raise ValueError("ask columns differ in length")
        return self

    @property
    def bids(self) -> list[BookLevel]:
        return [
            BookLevel(px=p, sz=s, n=n)
            for p, s, n in zip(self.bid_px, self.bid_sz, self.bid_n, strict=True)
        ]

    @property
    def asks(self) -> list[BookLevel]:
        return [
            BookLevel(px=p, sz=s, n=n)
            for p, s, n in zip(self.ask_px, self.ask_sz, self.ask_n, strict=True)
        ]

    @property
    def topic(self) -> str:
        return f"md.l2.{self.coin}"

    @property
    def mid_px(self) -> float | None:
        if not self.bid_px or not self.ask_px:
            return None
        return (self.bid_px[0] + self.ask_px[0]) / 2


class Trade(_Md):
    """One public trade. ``side`` is the aggressor's: ``buy`` lifted an ask."""

    coin: str
    ts_ms: int
    px: float
    sz: float
    side: Side
    tid: int
    hash: str


@payload
class Trades(_Md):
    """The trades of one websocket message (``md.trades.<COIN>``), oldest first."""

    coin: str
    trades: list[Trade]

    @property
    def topic(self) -> str:
        return f"md.trades.{self.coin}"


@payload
class AssetCtx(_Md):
    """Funding, open interest and prices of one perp (``md.ctx.<COIN>``).

    HyperLiquid's ``activeAssetCtx`` carries no time stamp; ``ts_ms`` is when it was
    received (or, in a replay, the replay clock).
    """

    coin: str
    ts_ms: int
    funding_rate: float = Field(description="current hourly funding rate (predicted)")
    open_interest_sz: float
    mark_px: float
    oracle_px: float
    mid_px: float | None = None
    premium: float | None = None
    prev_day_px: float | None = None
    day_ntl_vlm_usd: float | None = None
    impact_bid_px: float | None = None
    impact_ask_px: float | None = None

    @property
    def topic(self) -> str:
        return f"md.ctx.{self.coin}"


@payload
class FundingRate(_Md):
    """One settled hourly funding rate (``fundingHistory``)."""

    coin: str
    ts_ms: int
    funding_rate: float
    premium: float | None = None

    @property
    def topic(self) -> str:
        return f"md.funding.{self.coin}"


MarketEvent = Candle | L2Book | Trades | AssetCtx | FundingRate


@payload
class RawMessage(_Md):
    """A message exactly as HyperLiquid sent it (``raw.<channel>.<COIN>``), for the raw
    store: a websocket frame's text, a REST response body, or a line of the exchange's
    public historical archive (``archive``, imported with ``bistoury data import``)."""

    received_ts_ms: int
    source: Literal["ws", "rest", "archive"]
    channel: str
    coin: str | None
    text: str

    @property
    def topic(self) -> str:
        return f"raw.{self.channel}.{self.coin or '-'}"


# ---- parsing HyperLiquid's shapes -------------------------------------------------------


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


def _wrap(kind: str, build: Callable[[], _T]) -> _T:
    try:
        return build()
    except (KeyError, TypeError, ValueError, IndexError, ValidationError) as exc:
        raise MarketDataError(f"malformed {kind}: {exc!s:.200}") from None


def parse_candle(d: Mapping[str, Any]) -> Candle:
    """``{"t","T","s","i","o","c","h","l","v","n"}`` (``n`` is absent in some exports)."""
    return _wrap(
        "candle",
        lambda: Candle(
            coin=d["s"],
            interval=d["i"],
            open_ts_ms=int(d["t"]),
            close_ts_ms=int(d["T"]),
            open_px=float(d["o"]),
            high_px=float(d["h"]),
            low_px=float(d["l"]),
            close_px=float(d["c"]),
            volume_sz=float(d["v"]),
            trades_n=int(d["n"]) if d.get("n") is not None else None,
        ),
    )


def parse_l2book(d: Mapping[str, Any]) -> L2Book:
    """``{"coin","time","levels":[[bids],[asks]]}``, as REST ``l2Book`` and the websocket.

    The most frequent message of all, so it is built in one pass per side and without a
    second validation: the columns have equal lengths by construction and every number
    went through ``float``/``int`` (anything else raises ``MarketDataError``).
    """

    def build() -> L2Book:
        bids, asks = d["levels"]
        columns: list[list[Any]] = [[], [], [], [], [], []]
        for side, levels in ((0, bids), (3, asks)):
            px, sz, n = columns[side], columns[side + 1], columns[side + 2]
            for lv in levels:
                px.append(float(lv["px"]))
                sz.append(float(lv["sz"]))
                n.append(int(lv.get("n", 0)))
        return L2Book.model_construct(
            coin=str(d["coin"]),
            ts_ms=int(d["time"]),
            bid_px=columns[0],
            bid_sz=columns[1],
            bid_n=columns[2],
            ask_px=columns[3],
            ask_sz=columns[4],
            ask_n=columns[5],
        )

    return _wrap("l2Book", build)


def parse_trades(items: list[Mapping[str, Any]]) -> Trades:
    """The websocket ``trades`` list: ``{"coin","side":"A"|"B","px","sz","time","hash","tid"}``."""

    def build() -> Trades:
        if not items:
            raise ValueError("empty trades message")
        trades = [
            Trade(
                coin=t["coin"],
                ts_ms=int(t["time"]),
                px=float(t["px"]),
                sz=float(t["sz"]),
                side="buy" if t["side"] == "B" else "sell" if t["side"] == "A" else t["side"],
                tid=int(t["tid"]),
                hash=str(t["hash"]),
            )
            for t in items
        ]
        return Trades(coin=trades[0].coin, trades=trades)

    return _wrap("trades", build)


def parse_asset_ctx(coin: str, ctx: Mapping[str, Any], ts_ms: int) -> AssetCtx:
    """An ``activeAssetCtx`` ``ctx`` (or one entry of ``metaAndAssetCtxs``)."""

    def build() -> AssetCtx:
        impact = ctx.get("impactPxs") or [None, None]
        return AssetCtx(
            coin=coin,
            ts_ms=ts_ms,
            funding_rate=float(ctx["funding"]),
            open_interest_sz=float(ctx["openInterest"]),
            mark_px=float(ctx["markPx"]),
            oracle_px=float(ctx["oraclePx"]),
            mid_px=_num(ctx.get("midPx")),
            premium=_num(ctx.get("premium")),
            prev_day_px=_num(ctx.get("prevDayPx")),
            day_ntl_vlm_usd=_num(ctx.get("dayNtlVlm")),
            impact_bid_px=_num(impact[0]),
            impact_ask_px=_num(impact[1]),
        )

    return _wrap("activeAssetCtx", build)


def parse_funding(d: Mapping[str, Any]) -> FundingRate:
    """One ``fundingHistory`` entry: ``{"coin","fundingRate","premium"?,"time"}``."""
    return _wrap(
        "fundingHistory entry",
        lambda: FundingRate(
            coin=d["coin"],
            ts_ms=int(d["time"]),
            funding_rate=float(d["fundingRate"]),
            premium=_num(d.get("premium")),
        ),
    )


def parse_ws_message(msg: Mapping[str, Any], received_ts_ms: int) -> list[MarketEvent]:
    """The market events in one websocket message; ``[]`` for acks, pongs and others."""
    channel = msg.get("channel")
    data = msg.get("data")
    if channel == "candle" and isinstance(data, Mapping):
        return [parse_candle(data)]
    if channel == "l2Book" and isinstance(data, Mapping):
        return [parse_l2book(data)]
    if channel == "trades" and isinstance(data, list):
        return [parse_trades(data)] if data else []
    if channel == "activeAssetCtx" and isinstance(data, Mapping):
        try:
            coin, ctx = data["coin"], data["ctx"]
        except KeyError as exc:
            raise MarketDataError(f"malformed activeAssetCtx: missing {exc}") from None
        return [parse_asset_ctx(coin, ctx, received_ts_ms)]
    return []


def ws_channel_coin(msg: Mapping[str, Any]) -> tuple[str, str | None]:
    """(channel, coin) of a websocket message, for indexing the raw store."""
    channel = str(msg.get("channel", ""))
    data = msg.get("data")
    coin: Any = None
    if isinstance(data, Mapping):
        coin = data.get("coin") or data.get("s")
    elif isinstance(data, list) and data and isinstance(data[0], Mapping):
        coin = data[0].get("coin")
    return channel, coin if isinstance(coin, str) else None
