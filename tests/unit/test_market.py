"""bistouryd.market: HyperLiquid's JSON shapes into typed events, checked on real samples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bistouryd.bus import decode, encode
from bistouryd.market import (
    Candle,
    L2Book,
    MarketDataError,
    RawMessage,
    Trades,
    parse_asset_ctx,
    parse_candle,
    parse_funding,
    parse_l2book,
    parse_trades,
    parse_ws_message,
    ws_channel_coin,
)

BUNDLED = Path(__file__).resolve().parents[2] / "bistouryd" / "simexchange" / "data"

# Real frames from HyperLiquid's order_book_server tests (see shared SOURCES.md), trimmed.
L2_FRAME = {
    "channel": "l2Book",
    "data": {
        "coin": "BTC",
        "time": 1751427259657,
        "levels": [
            [{"px": "106217.0", "sz": "0.001", "n": 1}, {"px": "106215.0", "sz": "0.001", "n": 1}],
            [{"px": "106233.0", "sz": "0.26739", "n": 3}],
        ],
    },
}
TRADES_FRAME = {
    "channel": "trades",
    "data": [
        {
            "coin": "BTC",
            "side": "A",
            "px": "106296.0",
            "sz": "0.00017",
            "time": 1751430933565,
            "hash": "0xde93",
            "tid": 293353986402527,
            "users": ["0x1", "0x2"],
        },
        {
            "coin": "BTC",
            "side": "B",
            "px": "106297.0",
            "sz": "0.5",
            "time": 1751430933566,
            "hash": "0xde94",
            "tid": 293353986402528,
        },
    ],
}
CANDLE = {
    "t": 1753097280000,
    "T": 1753097339999,
    "s": "BTC",
    "i": "1m",
    "o": "118712.0",
    "c": "118675.0",
    "h": "118727.0",
    "l": "118654.0",
    "v": "2.63688",
    "n": 42,
}
CTX = {
    "funding": "0.0000125",
    "openInterest": "31234.5",
    "oraclePx": "106200.0",
    "markPx": "106210.0",
    "midPx": "106225.0",
    "premium": "0.0001",
    "prevDayPx": "105000.0",
    "dayNtlVlm": "1234567.8",
    "impactPxs": ["106220.0", "106230.0"],
}


def test_candle_fields_and_units() -> None:
    c = parse_candle(CANDLE)
    assert (c.coin, c.interval, c.open_ts_ms, c.close_ts_ms) == (
        "BTC",
        "1m",
        1753097280000,
        1753097339999,
    )
    assert (c.open_px, c.high_px, c.low_px, c.close_px) == (118712.0, 118727.0, 118654.0, 118675.0)
    assert c.volume_sz == pytest.approx(2.63688) and c.trades_n == 42
    assert c.topic == "md.candle.BTC.1m"


def test_candle_without_trade_count() -> None:
    row = {k: v for k, v in CANDLE.items() if k != "n"}
    assert parse_candle(row).trades_n is None


def test_l2book_keeps_order_and_counts() -> None:
    book = parse_l2book(L2_FRAME["data"])
    assert [lv.px for lv in book.bids] == [106217.0, 106215.0]
    assert book.asks[0].n == 3 and book.asks[0].sz == pytest.approx(0.26739)
    assert book.mid_px == pytest.approx((106217.0 + 106233.0) / 2)
    assert book.topic == "md.l2.BTC"


def test_trades_aggressor_side() -> None:
    trades = parse_trades(TRADES_FRAME["data"])
    assert [t.side for t in trades.trades] == ["sell", "buy"]
    assert trades.trades[0].tid == 293353986402527 and trades.coin == "BTC"


def test_asset_ctx_and_funding() -> None:
    ctx = parse_asset_ctx("BTC", CTX, 1000)
    assert ctx.funding_rate == pytest.approx(0.0000125) and ctx.impact_ask_px == 106230.0
    assert parse_asset_ctx("BTC", {**CTX, "impactPxs": None, "midPx": None}, 1).mid_px is None
    rate = parse_funding({"coin": "BTC", "fundingRate": "-0.0006133368", "time": 1683849600048})
    assert rate.premium is None and rate.funding_rate == pytest.approx(-0.0006133368)


def test_ws_dispatch() -> None:
    assert isinstance(parse_ws_message(L2_FRAME, 1)[0], L2Book)
    assert isinstance(parse_ws_message(TRADES_FRAME, 1)[0], Trades)
    assert isinstance(parse_ws_message({"channel": "candle", "data": CANDLE}, 1)[0], Candle)
    ctx = parse_ws_message({"channel": "activeAssetCtx", "data": {"coin": "ETH", "ctx": CTX}}, 7)
    assert ctx[0].ts_ms == 7 and ctx[0].topic == "md.ctx.ETH"
    assert parse_ws_message({"channel": "pong"}, 1) == []
    assert parse_ws_message({"channel": "trades", "data": []}, 1) == []
    ack = {"channel": "subscriptionResponse", "data": {"method": "subscribe"}}
    assert parse_ws_message(ack, 1) == []


@pytest.mark.parametrize(
    "msg",
    [
        {"channel": "candle", "data": {**CANDLE, "o": "not a number"}},
        {"channel": "candle", "data": {**CANDLE, "i": "7m"}},
        {"channel": "l2Book", "data": {"coin": "BTC", "time": 1, "levels": [[]]}},
        {
            "channel": "trades",
            "data": [
                {"coin": "BTC", "side": "X", "px": "1", "sz": "1", "time": 1, "hash": "h", "tid": 1}
            ],
        },
        {"channel": "activeAssetCtx", "data": {"coin": "BTC"}},
        {"channel": "activeAssetCtx", "data": {"coin": "BTC", "ctx": {"funding": "x"}}},
    ],
)
def test_malformed_messages_raise_market_data_error(msg: dict[str, object]) -> None:
    with pytest.raises(MarketDataError):
        parse_ws_message(msg, 1)


def test_channel_and_coin_for_the_raw_store() -> None:
    assert ws_channel_coin(L2_FRAME) == ("l2Book", "BTC")
    assert ws_channel_coin(TRADES_FRAME) == ("trades", "BTC")
    assert ws_channel_coin({"channel": "candle", "data": CANDLE}) == ("candle", "BTC")
    assert ws_channel_coin({"channel": "pong"}) == ("pong", None)


def test_events_round_trip_through_the_bus_envelope() -> None:
    for event in (
        parse_candle(CANDLE),
        parse_l2book(L2_FRAME["data"]),
        parse_trades(TRADES_FRAME["data"]),
        RawMessage(
            received_ts_ms=1, source="ws", channel="l2Book", coin="BTC", text=json.dumps(L2_FRAME)
        ),
    ):
        assert decode(encode("collector", 1, 1, event)).body == event


def test_every_recorded_candle_parses() -> None:
    """The bundled real candles (see bistouryd/simexchange/data/SOURCES.md)."""
    rows = json.loads((BUNDLED / "candles_btc_1m.json").read_text())
    candles = [parse_candle(r) for r in rows]
    assert len(candles) == len(rows) > 5000
    assert all(c.low_px <= min(c.open_px, c.close_px) for c in candles)
