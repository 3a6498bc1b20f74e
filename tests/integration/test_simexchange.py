"""The simulated exchange driven only through the official hyperliquid-python-sdk, in-process.

One paused simulator serves the module (time moves only when a test advances it); each test
trades on its own fresh account.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from eth_account import Account
from eth_account.signers.local import LocalAccount
from hyperliquid.exchange import Exchange
from hyperliquid.info import Info
from hyperliquid.utils.error import ClientError, ServerError
from hyperliquid.utils.types import Cloid

from bistouryd.exchange.book import walk_levels
from bistouryd.exchange.rules import round_px, valid_px
from bistouryd.simexchange import SimConfig, SimExchange
from bistouryd.simexchange.datafiles import bundled_data_dir, load_folder
from tests.conftest import wait_for

pytestmark = pytest.mark.integration

TAKER = 0.00045


@pytest.fixture(scope="module")
def sim() -> Iterator[SimExchange]:
    with SimExchange(SimConfig(port=0, speed=0.0, seed=1)) as running:
        yield running


@pytest.fixture
def wallet(sim: SimExchange) -> LocalAccount:
    account: LocalAccount = Account.create()
    sim.add_account(account.address, 10_000.0)
    return account


@pytest.fixture
def exchange(sim: SimExchange, wallet: LocalAccount) -> Exchange:
    return Exchange(wallet, sim.url)


@pytest.fixture
def info(sim: SimExchange) -> Info:
    return Info(sim.url, skip_ws=True)


class Inbox:
    """Messages an SDK subscription callback received, by channel."""

    def __init__(self) -> None:
        self.by_channel: dict[str, list[Any]] = collections.defaultdict(list)
        self._lock = threading.Lock()

    def __call__(self, msg: Any) -> None:
        with self._lock:
            self.by_channel[msg["channel"]].append(msg)

    def count(self, channel: str) -> int:
        with self._lock:
            return len(self.by_channel[channel])

    def last(self, channel: str) -> Any:
        with self._lock:
            return self.by_channel[channel][-1]


@pytest.fixture
def ws_info(sim: SimExchange) -> Iterator[Info]:
    client = Info(sim.url, skip_ws=False)
    wait_for(lambda: client.ws_manager is not None and client.ws_manager.ws_ready, 5, "ws open")
    yield client
    if client.ws_manager is not None and client.ws_manager.is_alive():
        client.disconnect_websocket()


def statuses(answer: dict[str, Any]) -> list[Any]:
    assert answer["status"] == "ok", answer
    return list(answer["response"]["data"]["statuses"])


# ---- market data ------------------------------------------------------------------------


def test_info_constructs_with_its_websocket_and_serves_meta(ws_info: Info) -> None:
    meta = ws_info.meta()
    assert [(a["name"], a["szDecimals"], a["maxLeverage"]) for a in meta["universe"]] == [
        ("BTC", 5, 50),
        ("ETH", 4, 50),
    ]
    assert ws_info.name_to_asset("ETH") == 1
    mids = ws_info.all_mids()
    assert set(mids) == {"BTC", "ETH"} and all(isinstance(v, str) for v in mids.values())
    ctxs = ws_info.meta_and_asset_ctxs()
    assert ctxs[0] == meta and set(ctxs[1][0]) >= {"funding", "markPx", "oraclePx", "impactPxs"}


def test_the_book_is_20_levels_a_side_on_the_tick_grid(info: Info) -> None:
    book = info.l2_snapshot("BTC")
    bids, asks = book["levels"]
    assert len(bids) == len(asks) == 20
    bid_px = [float(x["px"]) for x in bids]
    ask_px = [float(x["px"]) for x in asks]
    assert bid_px == sorted(bid_px, reverse=True) and ask_px == sorted(ask_px)
    assert bid_px[0] < ask_px[0]
    assert all(valid_px(x["px"], 5) for x in bids + asks)
    assert all(isinstance(x["n"], int) and x["n"] >= 1 for x in bids + asks)
    mid = (bid_px[0] + ask_px[0]) / 2
    assert float(info.all_mids()["BTC"]) == mid


def test_candles_never_come_from_the_future(sim: SimExchange, info: Info) -> None:
    now = sim.now_ms()
    bars = info.candles_snapshot("BTC", "1m", now - 30 * 60_000, now + 86_400_000)
    assert 29 <= len(bars) <= 31
    assert all(b["t"] <= now for b in bars) and bars[-1]["T"] >= now - 60_000
    assert all(set(b) == {"t", "T", "s", "i", "o", "c", "h", "l", "v", "n"} for b in bars)
    hours = info.candles_snapshot("BTC", "1h", now - 30 * 86_400_000, now + 86_400_000)
    assert len(hours) > 24 * 20  # the recorded 1h history before the 1m data
    fives = info.candles_snapshot("BTC", "5m", now - 3_600_000, now)
    assert all(b["T"] - b["t"] == 5 * 60_000 - 1 for b in fives)
    five = next(f for f in fives if f["t"] >= bars[0]["t"])
    ones = [b for b in bars if five["t"] <= b["t"] < five["t"] + 5 * 60_000]
    assert len(ones) == 5 and (five["o"], five["c"]) == (ones[0]["o"], ones[-1]["c"])
    assert float(five["h"]) == max(float(b["h"]) for b in ones)
    assert float(five["v"]) == pytest.approx(sum(float(b["v"]) for b in ones))


def test_funding_history_up_to_now(sim: SimExchange, info: Info) -> None:
    now = sim.now_ms()
    history = info.funding_history("BTC", now - 2 * 86_400_000)
    assert len(history) >= 40 and all(r["time"] < now for r in history)
    assert set(history[0]) == {"coin", "fundingRate", "time"}  # the recording has no premium
    assert info.funding_history("BTC", now + 1) == []


def test_websocket_subscriptions_deliver_through_sdk_callbacks(
    sim: SimExchange, ws_info: Info
) -> None:
    inbox = Inbox()
    for sub in (
        {"type": "candle", "coin": "BTC", "interval": "1m"},
        {"type": "l2Book", "coin": "BTC"},
        {"type": "trades", "coin": "ETH"},
        {"type": "activeAssetCtx", "coin": "BTC"},
        {"type": "allMids"},
    ):
        ws_info.subscribe(sub, inbox)  # type: ignore[arg-type]
    time.sleep(0.3)
    sim.advance(10_000)
    for channel in ("candle", "l2Book", "trades", "activeAssetCtx", "allMids"):
        wait_for(lambda c=channel: inbox.count(c) > 0, 5, f"a {channel} message")  # type: ignore[misc]
    candle = inbox.last("candle")["data"]
    assert (candle["s"], candle["i"]) == ("BTC", "1m") and candle["t"] <= sim.now_ms()
    trades = inbox.last("trades")["data"]
    assert trades[0]["coin"] == "ETH" and trades[0]["side"] in ("A", "B")
    assert len(trades[0]["users"]) == 2 and isinstance(trades[0]["tid"], int)
    ctx = inbox.last("activeAssetCtx")["data"]
    assert ctx["coin"] == "BTC" and isinstance(ctx["ctx"]["markPx"], str)
    assert set(inbox.last("allMids")["data"]["mids"]) == {"BTC", "ETH"}
    # One book per second of replay time; the last ones may still be on their way.
    wait_for(lambda: inbox.count("l2Book") >= 10, 5, "ten l2Book messages")
    time.sleep(0.2)
    assert inbox.count("l2Book") == 10
    book = inbox.last("l2Book")["data"]
    assert book["time"] == sim.now_ms()
    recent = ws_info.post("/info", {"type": "recentTrades", "coin": "ETH"})
    # The websocket frame with the newest trade may still be on its way under load.
    wait_for(lambda: inbox.last("trades")["data"][-1] == recent[-1], 5, "the newest trade")


# ---- trading ----------------------------------------------------------------------------


def test_market_open_fills_at_the_walked_average_and_pays_the_taker_fee(
    sim: SimExchange, ws_info: Info, exchange: Exchange, wallet: LocalAccount
) -> None:
    inbox = Inbox()
    ws_info.subscribe({"type": "userFills", "user": wallet.address}, inbox)
    ws_info.subscribe({"type": "orderUpdates", "user": wallet.address}, inbox)
    ws_info.subscribe({"type": "userEvents", "user": wallet.address}, inbox)
    wait_for(lambda: inbox.count("userFills") == 1, 5, "the userFills snapshot")
    assert inbox.last("userFills")["data"]["isSnapshot"] is True
    asks = ws_info.l2_snapshot("BTC")["levels"][1]
    ask_px, ask_sz = [float(a["px"]) for a in asks], [float(a["sz"]) for a in asks]
    size = round(ask_sz[0] + ask_sz[1] / 2, 5)  # more than the best level holds
    expected = walk_levels(ask_px, ask_sz, size, is_buy=True)
    assert len(expected.fills) == 2
    [status] = statuses(exchange.market_open("BTC", True, size))
    assert float(status["filled"]["totalSz"]) == size
    assert float(status["filled"]["avgPx"]) == pytest.approx(expected.avg_px, rel=1e-9)
    fills = ws_info.user_fills(wallet.address)
    assert [(float(f["px"]), float(f["sz"])) for f in reversed(fills)] == [
        (f.px, pytest.approx(f.sz)) for f in expected.fills
    ]
    fee = sum(float(f["fee"]) for f in fills)
    assert fee == pytest.approx(expected.notional_usd * TAKER, abs=2e-6)
    assert all(f["crossed"] and f["dir"] == "Open Long" and f["feeToken"] == "USDC" for f in fills)
    state = ws_info.user_state(wallet.address)
    [position] = state["assetPositions"]
    assert float(position["position"]["szi"]) == size
    assert float(position["position"]["entryPx"]) == pytest.approx(expected.avg_px)
    wait_for(lambda: inbox.count("userFills") == 2, 5, "the fills on the websocket")
    pushed = inbox.last("userFills")["data"]
    assert "isSnapshot" not in pushed and pushed["user"] == wallet.address.lower()
    assert [f["tid"] for f in pushed["fills"]] == [f["tid"] for f in reversed(fills)]
    wait_for(lambda: inbox.count("user") == 1 and inbox.count("orderUpdates") == 1, 5, "events")
    assert inbox.last("user")["data"]["fills"] == pushed["fills"]
    [update] = inbox.last("orderUpdates")["data"]
    assert update["status"] == "filled" and update["order"]["oid"] == status["filled"]["oid"]
    assert ws_info.user_fills_by_time(wallet.address, 0) == list(reversed(fills))
    limits = ws_info.user_rate_limit(wallet.address)
    assert limits["nRequestsUsed"] == 1 and float(limits["cumVlm"]) > 0
    assert ws_info.user_fees(wallet.address)["userCrossRate"] == "0.00045"
    after = ws_info.l2_snapshot("BTC")["levels"][1]
    assert float(after[0]["px"]) == ask_px[1]  # the depth taken is gone until the next step


def test_a_limit_order_rests_and_is_cancelled(
    exchange: Exchange, info: Info, wallet: LocalAccount
) -> None:
    mid = float(info.all_mids()["BTC"])
    px = round_px(mid * 0.97, 5)
    [status] = statuses(exchange.order("BTC", True, 0.001, px, {"limit": {"tif": "Gtc"}}))
    oid = status["resting"]["oid"]
    [listed] = info.open_orders(wallet.address)
    assert (listed["oid"], float(listed["limitPx"]), listed["side"]) == (oid, px, "B")
    [front] = info.frontend_open_orders(wallet.address)
    assert front["orderType"] == "Limit" and front["tif"] == "Gtc" and not front["isTrigger"]
    assert info.query_order_by_oid(wallet.address, oid)["order"]["status"] == "open"
    assert statuses(exchange.cancel("BTC", oid)) == ["success"]
    assert info.query_order_by_oid(wallet.address, oid)["order"]["status"] == "canceled"
    assert info.open_orders(wallet.address) == []
    assert statuses(exchange.cancel("BTC", oid)) == [
        {"error": "Order was never placed, already canceled, or filled."}
    ]
    assert info.query_order_by_oid(wallet.address, 1) == {"status": "unknownOid"}
    [history] = info.historical_orders(wallet.address)
    assert history["status"] == "canceled" and history["order"]["oid"] == oid


def test_cancel_by_cloid(exchange: Exchange, info: Info, wallet: LocalAccount) -> None:
    cloid = Cloid.from_int(42)
    px = round_px(float(info.all_mids()["ETH"]) * 1.03, 4)
    [status] = statuses(
        exchange.order("ETH", False, 0.01, px, {"limit": {"tif": "Gtc"}}, cloid=cloid)
    )
    assert status["resting"]["cloid"] == cloid.to_raw()
    found = info.query_order_by_cloid(wallet.address, cloid)
    assert found["order"]["order"]["cloid"] == cloid.to_raw()
    assert statuses(exchange.cancel_by_cloid("ETH", cloid)) == ["success"]
    assert info.query_order_by_cloid(wallet.address, cloid)["order"]["status"] == "canceled"


def test_modify_order(exchange: Exchange, info: Info, wallet: LocalAccount) -> None:
    mid = float(info.all_mids()["BTC"])
    cloid = Cloid.from_int(7)
    order_type: Any = {"limit": {"tif": "Gtc"}}
    [status] = statuses(
        exchange.order("BTC", True, 0.001, round_px(mid * 0.95, 5), order_type, cloid=cloid)
    )
    old = status["resting"]["oid"]
    new_px = round_px(mid * 0.96, 5)
    answer = exchange.modify_order(cloid, "BTC", True, 0.002, new_px, order_type, cloid=cloid)
    assert answer["response"]["type"] == "batchModify"
    [modified] = statuses(answer)
    [listed] = info.open_orders(wallet.address)
    assert listed["oid"] == modified["resting"]["oid"] != old
    assert (float(listed["limitPx"]), listed["sz"]) == (new_px, "0.002")
    assert info.query_order_by_oid(wallet.address, old)["order"]["status"] == "canceled"


def test_update_leverage(exchange: Exchange, info: Info, wallet: LocalAccount) -> None:
    assert exchange.update_leverage(5, "ETH") == {"status": "ok", "response": {"type": "default"}}
    statuses(exchange.market_open("ETH", False, 0.01))
    [position] = info.user_state(wallet.address)["assetPositions"]
    assert position["position"]["leverage"] == {"type": "cross", "value": 5}
    notional = float(position["position"]["positionValue"])
    assert float(position["position"]["marginUsed"]) == pytest.approx(notional / 5, abs=1e-6)
    assert exchange.update_leverage(51, "ETH")["status"] == "err"


def test_an_unknown_signer_gets_the_real_error_shape(sim: SimExchange) -> None:
    stranger = Account.create()
    answer = Exchange(stranger, sim.url).market_open("BTC", True, 0.001)
    assert answer == {
        "status": "err",
        "response": f"User or API Wallet {stranger.address.lower()} does not exist.",
    }


def test_an_agent_trades_for_its_account(sim: SimExchange, wallet: LocalAccount) -> None:
    agent = Account.create()
    sim.add_agent(agent.address, wallet.address)
    exchange = Exchange(agent, sim.url, account_address=wallet.address)
    [status] = statuses(exchange.market_open("ETH", True, 0.01))
    assert "filled" in status
    assert exchange.market_close("ETH") is not None  # reads the account's position
    assert Info(sim.url, skip_ws=True).user_state(wallet.address)["assetPositions"] == []


def test_a_reused_nonce_is_rejected(
    exchange: Exchange, info: Info, monkeypatch: pytest.MonkeyPatch
) -> None:
    nonce = int(time.time() * 1000)  # two actions signed in the same millisecond
    monkeypatch.setattr("hyperliquid.exchange.get_timestamp_ms", lambda: nonce)
    px = round_px(float(info.all_mids()["BTC"]) * 0.9, 5)
    first = exchange.order("BTC", True, 0.001, px, {"limit": {"tif": "Gtc"}})
    assert first["status"] == "ok"
    second = exchange.order("BTC", True, 0.001, px, {"limit": {"tif": "Gtc"}})
    assert second == {"status": "err", "response": f"Invalid nonce: duplicate nonce {nonce}"}


def test_orders_the_exchange_refuses(exchange: Exchange, info: Info) -> None:
    mid = float(info.all_mids()["BTC"])
    gtc: Any = {"limit": {"tif": "Gtc"}}
    below = round_px(mid * 0.97, 5)

    def error(*args: Any, **kwargs: Any) -> str:
        [status] = statuses(exchange.order(*args, **kwargs))
        return str(status["error"])

    assert error("BTC", True, 0.001, below + 0.5, gtc) == "Price must be divisible by tick size."
    assert error("BTC", True, 0.00005, below, gtc) == "Order must have minimum value of $10."
    assert error("BTC", True, 5.0, below, gtc) == "Insufficient margin to place order."
    assert error("BTC", True, 0.001, below, gtc, reduce_only=True) == (
        "Reduce only order would increase position."
    )
    ask = float(info.l2_snapshot("BTC")["levels"][1][0]["px"])
    assert error("BTC", True, 0.001, ask, {"limit": {"tif": "Alo"}}).startswith(
        "Post only order would have immediately matched, bbo was "
    )
    assert error("BTC", True, 0.001, below, {"limit": {"tif": "Ioc"}}) == (
        "Order could not immediately match against any resting orders."
    )


def test_a_stop_loss_waits_then_fires_when_the_mark_crosses(
    sim: SimExchange, exchange: Exchange, info: Info, wallet: LocalAccount
) -> None:
    statuses(exchange.market_open("BTC", True, 0.01))
    now, mid = sim.now_ms(), float(info.all_mids()["BTC"])
    recorded = load_folder(bundled_data_dir()).candles["BTC"][60_000]
    ahead = [b for b in recorded if now <= b.open_ts_ms < now + 3 * 3_600_000]
    low = min(b.low_px for b in ahead)
    assert low < mid - 30, "the recorded data should dip within three hours"
    trigger = round_px(mid - 0.6 * (mid - low), 5)
    order_type: Any = {"trigger": {"triggerPx": trigger, "isMarket": True, "tpsl": "sl"}}
    [status] = statuses(
        exchange.order("BTC", False, 0.01, round_px(trigger * 0.9, 5), order_type, reduce_only=True)
    )
    oid = status["resting"]["oid"]
    [waiting] = info.frontend_open_orders(wallet.address)
    assert waiting["orderType"] == "Stop Market" and waiting["isTrigger"]
    assert waiting["triggerCondition"] == f"Price below {trigger}"
    for _ in range(36):
        sim.advance(5 * 60_000)
        if not info.open_orders(wallet.address):
            break
    assert info.query_order_by_oid(wallet.address, oid)["order"]["status"] == "filled"
    assert info.user_state(wallet.address)["assetPositions"] == []
    closing = info.user_fills(wallet.address)[0]
    assert closing["dir"] == "Close Long" and closing["oid"] == oid
    assert float(closing["px"]) <= trigger


def test_funding_is_paid_every_hour(
    sim: SimExchange, exchange: Exchange, info: Info, wallet: LocalAccount
) -> None:
    statuses(exchange.market_open("ETH", True, 1.0))
    start = sim.now_ms()
    sim.advance(3_600_000)
    [payment] = info.user_funding_history(wallet.address, start)
    delta = payment["delta"]
    [rate] = [r for r in info.funding_history("ETH", start) if r["time"] == payment["time"]]
    assert delta["fundingRate"] == rate["fundingRate"] and delta["szi"] == "1.0"
    oracle = -float(delta["usdc"]) / float(rate["fundingRate"])
    assert oracle == pytest.approx(float(info.all_mids()["ETH"]), rel=0.02)
    cum = info.user_state(wallet.address)["assetPositions"][0]["position"]["cumFunding"]
    assert float(cum["allTime"]) == pytest.approx(-float(delta["usdc"]), abs=1e-6)


# ---- faults -----------------------------------------------------------------------------


def test_http_errors_surface_as_sdk_exceptions(sim: SimExchange, info: Info) -> None:
    sim.fail_http(429, count=1)
    with pytest.raises(ClientError) as client_error:
        info.all_mids()
    assert client_error.value.status_code == 429
    assert info.all_mids()  # only the next request failed
    sim.fail_http(500, count=2)
    for _ in range(2):
        with pytest.raises(ServerError) as server_error:
            info.l2_snapshot("BTC")
        assert server_error.value.status_code == 500
    assert info.l2_snapshot("BTC")["coin"] == "BTC"


def test_delayed_answers(sim: SimExchange, info: Info) -> None:
    sim.delay_responses(300)
    try:
        started = time.monotonic()
        info.all_mids()
        assert time.monotonic() - started >= 0.3
    finally:
        sim.delay_responses(0)


def test_a_dropped_websocket_closes_the_sdk_socket(sim: SimExchange, ws_info: Info) -> None:
    manager = ws_info.ws_manager
    assert manager is not None
    assert sim.drop_websockets() >= 1
    wait_for(lambda: not manager.is_alive(), 5, "the SDK's websocket thread to end")
    manager.stop()
    closed = sim.status()["websocket"]["recently_closed"]
    assert any(c["close_reason"] == "dropped (admin)" for c in closed)


def test_a_stalled_websocket_stays_open_but_sends_nothing(sim: SimExchange, ws_info: Info) -> None:
    inbox = Inbox()
    ws_info.subscribe({"type": "l2Book", "coin": "ETH"}, inbox)
    time.sleep(0.3)
    sim.stall_websockets(1.5)
    sim.advance(3_000)
    time.sleep(1.0)
    assert inbox.count("l2Book") == 0
    assert sim.status()["faults"]["ws_frames_dropped_by_stall"] >= 3
    time.sleep(0.7)
    sim.advance(2_000)
    wait_for(lambda: inbox.count("l2Book") == 2, 5, "books after the stall")
    assert ws_info.ws_manager is not None and ws_info.ws_manager.is_alive()


def test_going_away_refuses_connections_then_comes_back(sim: SimExchange, info: Info) -> None:
    sim.go_away(1.0)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(sim.url + "/info", json={"type": "allMids"}, timeout=2)

    def back() -> bool:
        try:
            return bool(info.all_mids())
        except requests.exceptions.ConnectionError:
            return False

    wait_for(back, 5, "the simulator to listen again", interval=0.1)


def test_the_sent_frame_log_is_what_the_client_received(sim: SimExchange, ws_info: Info) -> None:
    received: list[str] = []
    manager = ws_info.ws_manager
    assert manager is not None
    original: Callable[[Any, str], None] = manager.on_message

    def record(ws: Any, message: str) -> None:
        received.append(message)
        original(ws, message)

    manager.ws.on_message = record
    ws_info.subscribe({"type": "trades", "coin": "BTC"}, lambda m: None)
    time.sleep(0.3)
    since = sim.sent_frames()[-1].seq + 1
    sim.advance(5_000)
    wait_for(lambda: len(received) >= 6, 5, "the ack and five seconds of trades")
    conn_id = sim.status()["websocket"]["open"][-1]["id"]
    sent = [f.text for f in sim.sent_frames(since, conn_id)]
    assert sent and sent == received[-len(sent) :]


def test_websocket_protocol_replies(ws_info: Info) -> None:
    """Pong, acks and errors, as the real servers word them (read off the SDK's socket)."""
    manager = ws_info.ws_manager
    assert manager is not None
    received: list[str] = []
    manager.ws.on_message = lambda ws, message: received.append(message)
    for request in (
        {"method": "ping"},
        {"method": "subscribe", "subscription": {"type": "l2Book", "coin": "ETH"}},
        {"method": "subscribe", "subscription": {"type": "l2Book", "coin": "ETH"}},
        {"method": "subscribe", "subscription": {"type": "trades", "coin": "NOPE"}},
        {"method": "unsubscribe", "subscription": {"type": "allMids"}},
        {"method": "hello"},
    ):
        manager.ws.send(json.dumps(request))

    # Market data may come in between (the l2Book subscription works): look at replies only.
    def replies() -> list[Any]:
        return [m for m in map(json.loads, list(received)) if m["channel"] != "l2Book"]

    wait_for(lambda: len(replies()) >= 6, 15, "six replies")
    assert replies() == [
        {"channel": "pong"},
        {
            "channel": "subscriptionResponse",
            "data": {
                "method": "subscribe",
                "subscription": {
                    "type": "l2Book",
                    "coin": "ETH",
                    "nSigFigs": None,
                    "mantissa": None,
                },
            },
        },
        {"channel": "error", "data": 'Already subscribed: {"type":"l2Book","coin":"ETH"}'},
        {"channel": "error", "data": 'Invalid subscription: {"type":"trades","coin":"NOPE"}'},
        {"channel": "error", "data": 'Already unsubscribed: {"type":"allMids"}'},
        {
            "channel": "error",
            "data": 'Error parsing JSON into valid websocket request: {"method": "hello"}',
        },
    ]
