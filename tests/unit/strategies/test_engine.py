"""The signal engine: routing by input, chaining into signal consumers, reconfiguration
that keeps the other strategies' state, timing and error isolation."""

from __future__ import annotations

from typing import ClassVar

import pytest
from pydantic import Field

from bistouryd.market import AssetCtx, Candle, L2Book, MarketEvent
from bistouryd.strategies.base import Input, Signal, Strategy, StrategyParams
from bistouryd.strategies.engine import SignalEngine


class CountParams(StrategyParams):
    every: int = Field(default=2, ge=1, le=100)


class CountCandles(Strategy[CountParams]):
    """Emits on every ``every``-th candle; its count is the state a reload must keep."""

    name = "count"
    Params = CountParams
    inputs: ClassVar[frozenset[Input]] = frozenset({"candle"})

    def __init__(self, coin: str, params: CountParams):
        super().__init__(coin, params)
        self.seen = 0

    def update(self, event: MarketEvent | Signal) -> Signal | None:
        assert isinstance(event, Candle)
        self.seen += 1
        if self.seen % self.params.every:
            return None
        return self.signal(
            event.close_ts_ms, "long", 0.5, 0.5, f"{self.seen} candles seen.", {"seen": self.seen}
        )


class BookParams(StrategyParams):
    pass


class Books(Strategy[BookParams]):
    name = "books"
    Params = BookParams
    inputs: ClassVar[frozenset[Input]] = frozenset({"l2"})

    def update(self, event: MarketEvent | Signal) -> Signal | None:
        assert isinstance(event, L2Book)
        if not event.bid_px:
            raise ValueError("empty book")
        return self.signal(event.ts_ms, "short", 0.2, 0.3, "A book.", {})


class Echo(Strategy[BookParams]):
    """Takes signals: proves chaining and that nobody hears its own signals."""

    name = "echo"
    Params = BookParams
    inputs: ClassVar[frozenset[Input]] = frozenset({"signal"})

    def __init__(self, coin: str, params: BookParams):
        super().__init__(coin, params)
        self.heard: list[str] = []

    def update(self, event: MarketEvent | Signal) -> Signal | None:
        assert isinstance(event, Signal)
        self.heard.append(event.strategy)
        return self.signal(event.ts_ms, event.direction, 0.1, 0.1, f"Heard {event.strategy}.", {})


CLASSES: dict[str, type[Strategy]] = {"count": CountCandles, "books": Books, "echo": Echo}  # type: ignore[type-arg]


def candle(coin: str, i: int) -> Candle:
    t = 1_700_000_000_000 + i * 60_000
    return Candle(
        coin=coin,
        interval="1m",
        open_ts_ms=t,
        close_ts_ms=t + 59_999,
        open_px=100,
        high_px=101,
        low_px=99,
        close_px=100,
        volume_sz=1,
    )


def book(coin: str, ts_ms: int, empty: bool = False) -> L2Book:
    px = [] if empty else [100.0]
    return L2Book(
        coin=coin,
        ts_ms=ts_ms,
        bid_px=px,
        bid_sz=[1.0] * len(px),
        bid_n=[1] * len(px),
        ask_px=[p + 1 for p in px],
        ask_sz=[1.0] * len(px),
        ask_n=[1] * len(px),
    )


def settings(**overrides: StrategyParams) -> dict[str, StrategyParams]:
    base: dict[str, StrategyParams] = {
        "count": CountParams(),
        "books": BookParams(),
        "echo": BookParams(),
    }
    return base | overrides


def make(**kw: object) -> SignalEngine:
    return SignalEngine(settings(), ["BTC", "ETH"], classes=CLASSES, **kw)  # type: ignore[arg-type]


def test_events_go_to_the_strategies_that_take_them_and_signals_chain() -> None:
    engine = make()
    assert engine.feed(candle("BTC", 0)) == []
    out = engine.feed(candle("BTC", 1))
    assert [(s.strategy, s.coin) for s in out] == [("count", "BTC"), ("echo", "BTC")]
    assert out[1].narrative == "Heard count."
    out = engine.feed(book("ETH", 5))
    assert [s.strategy for s in out] == ["books", "echo"]
    echo = engine.coins["ETH"].strategies["echo"]
    assert isinstance(echo, Echo) and echo.heard == ["books"]  # never its own signals


def test_other_coins_and_unrouted_events_are_ignored() -> None:
    engine = make()
    assert engine.feed(candle("SOL", 1)) == []
    ctx = AssetCtx(
        coin="BTC", ts_ms=1, funding_rate=0.0, open_interest_sz=1, mark_px=1, oracle_px=1
    )
    assert engine.feed(ctx) == []


def test_reload_reparameterises_one_strategy_and_keeps_the_others_state() -> None:
    engine = make()
    for i in range(3):
        engine.feed(candle("BTC", i))
    counter = engine.coins["BTC"].strategies["count"]
    echo = engine.coins["BTC"].strategies["echo"]
    engine.configure(settings(count=CountParams(every=1)), ["BTC", "ETH"])
    assert engine.coins["BTC"].strategies["count"] is counter
    assert engine.coins["BTC"].strategies["echo"] is echo
    assert isinstance(counter, CountCandles) and counter.params.every == 1
    out = engine.feed(candle("BTC", 3))
    assert out[0].features["seen"] == 4  # the count went on from 3


def test_disable_enable_and_coin_changes() -> None:
    engine = make()
    engine.feed(candle("BTC", 0))
    engine.configure(settings(count=CountParams(enabled=False)), ["BTC"])
    assert "count" not in engine.coins["BTC"].strategies
    assert "ETH" not in engine.coins
    assert engine.enabled == ["books", "echo"]
    engine.configure(settings(), ["BTC", "SOL"])
    fresh = engine.coins["BTC"].strategies["count"]
    assert isinstance(fresh, CountCandles) and fresh.seen == 0
    assert set(engine.coins["SOL"].strategies) == {"count", "books", "echo"}


def test_unknown_strategy_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown strategies: nope"):
        SignalEngine({"nope": BookParams()}, ["BTC"], classes=CLASSES)


def test_compute_time_is_reported_per_strategy_update() -> None:
    timings: list[tuple[str, float]] = []
    engine = make(on_compute=lambda name, s: timings.append((name, s)))
    engine.feed(candle("BTC", 0))
    engine.feed(candle("BTC", 1))
    assert [name for name, _ in timings] == ["count", "count", "echo"]
    assert all(0 <= s < 1 for _, s in timings)


def test_a_failing_strategy_is_reported_and_the_others_go_on() -> None:
    errors: list[tuple[str, str, str]] = []
    engine = make(on_error=lambda name, coin, exc: errors.append((name, coin, str(exc))))
    assert engine.feed(book("BTC", 1, empty=True)) == []
    assert errors == [("books", "BTC", "empty book")]
    assert [s.strategy for s in engine.feed(candle("BTC", 1))] == []
    assert [s.strategy for s in engine.feed(candle("BTC", 2))] == ["count", "echo"]


def test_without_an_error_callback_a_failure_propagates() -> None:
    with pytest.raises(ValueError, match="empty book"):
        make().feed(book("BTC", 1, empty=True))
