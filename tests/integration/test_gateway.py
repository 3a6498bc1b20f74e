"""The live gateway against the simulated exchange: real SDK signing, matching, fees, and the
fault injection that loses an answer after the order was placed, or refuses it before.

One paused simulator serves the module (its books move only when a test advances it); each
test trades for a fresh funded account through its own approved API wallet.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from eth_account import Account
from eth_account.signers.local import LocalAccount
from hyperliquid.info import Info

from bistouryd.exchange.gateway import ExchangeFill, GatewayError, LiveGateway
from bistouryd.exchange.orders import OrderRequest, OrderUpdate
from bistouryd.exchange.rules import round_px
from bistouryd.simexchange import SimConfig, SimExchange
from tests.conftest import wait_for
from tests.integration.conftest import funded_account

pytestmark = pytest.mark.integration

EQUITY_USD = 10_000.0
BTC_SZ = 0.002


@pytest.fixture(scope="module")
def sim() -> Iterator[SimExchange]:
    with SimExchange(SimConfig(port=0, speed=0.0, seed=0)) as running:
        yield running


@pytest.fixture
def accounts(sim: SimExchange) -> tuple[LocalAccount, LocalAccount]:
    return funded_account(sim, EQUITY_USD)


@pytest.fixture
def owner(accounts: tuple[LocalAccount, LocalAccount]) -> LocalAccount:
    return accounts[0]


@pytest.fixture
def api_wallet(accounts: tuple[LocalAccount, LocalAccount]) -> LocalAccount:
    return accounts[1]


@pytest.fixture
def gateway(sim: SimExchange, owner: LocalAccount, api_wallet: LocalAccount) -> LiveGateway:
    return LiveGateway(sim.url, owner.address, api_wallet.key.hex(), timeout_s=5.0)


@pytest.fixture
def info(sim: SimExchange) -> Info:
    return Info(sim.url, skip_ws=True)


@pytest.fixture
def exchange_posts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every POST /exchange the process sends (to prove a retry did or did not happen)."""
    sent: list[str] = []
    original = requests.Session.post

    def post(self: requests.Session, url: str, *args: Any, **kwargs: Any) -> Any:
        if url.endswith("/exchange"):
            sent.append(url)
        return original(self, url, *args, **kwargs)

    monkeypatch.setattr(requests.Session, "post", post)
    return sent


def order(**fields: Any) -> OrderRequest:
    base: dict[str, Any] = {"ts_ms": int(time.time() * 1000), "coin": "BTC", "purpose": "open"}
    return OrderRequest(**{**base, **fields})


def market_buy(info: Info, sz: float = BTC_SZ) -> OrderRequest:
    ask = float(info.l2_snapshot("BTC")["levels"][1][0]["px"])
    return order(is_buy=True, sz=sz, kind="market", limit_px=round_px(ask * 1.01, 5), mode="live")


def far_bid(info: Info) -> OrderRequest:
    mid = float(info.all_mids()["BTC"])
    return order(is_buy=True, sz=BTC_SZ, kind="limit", limit_px=round_px(mid * 0.9, 5))


def with_cloid(gateway: LiveGateway, cloid: str) -> list[Any]:
    return [o for o in gateway.open_orders() if o.cloid == cloid]


# ---- credentials ------------------------------------------------------------------------


def test_the_api_wallet_key_is_accepted_and_shows_the_accounts_equity(
    gateway: LiveGateway, exchange_posts: list[str]
) -> None:
    account = gateway.check_credentials()
    assert account.equity_usd == pytest.approx(EQUITY_USD)
    assert account.margin_used_usd == 0 and account.positions == {}
    assert len(exchange_posts) == 1  # the probe cancel, and nothing else was sent


def test_the_accounts_own_key_is_accepted(sim: SimExchange, owner: LocalAccount) -> None:
    gateway = LiveGateway(sim.url, owner.address, owner.key.hex())
    assert gateway.check_credentials().equity_usd == pytest.approx(EQUITY_USD)


def test_an_unknown_key_is_an_auth_error_that_does_not_show_the_key(
    sim: SimExchange, owner: LocalAccount
) -> None:
    stranger: LocalAccount = Account.create()
    key = stranger.key.hex()
    gateway = LiveGateway(sim.url, owner.address, key)
    with pytest.raises(GatewayError) as caught:
        gateway.check_credentials()
    error = caught.value
    assert error.kind == "auth"
    assert f"User or API Wallet {stranger.address.lower()} does not exist." in error.message
    bare = key.removeprefix("0x")
    assert bare not in str(error) and bare not in error.hint


def test_an_api_wallet_of_another_account_is_an_auth_error(
    sim: SimExchange, owner: LocalAccount
) -> None:
    other: LocalAccount = Account.create()
    sim.add_account(other.address, 1_000.0)
    agent: LocalAccount = Account.create()
    sim.add_agent(agent.address, other.address)
    with pytest.raises(GatewayError) as caught:
        LiveGateway(sim.url, owner.address, agent.key.hex()).check_credentials()
    assert caught.value.kind == "auth" and other.address.lower() in caught.value.message


def test_a_malformed_key_is_an_auth_error_that_does_not_show_it(
    sim: SimExchange, owner: LocalAccount
) -> None:
    key = "0x" + "zz" * 32
    with pytest.raises(GatewayError) as caught:
        LiveGateway(sim.url, owner.address, key)
    assert caught.value.kind == "auth" and "zz" not in str(caught.value)


def test_an_unreachable_exchange_is_unavailable(owner: LocalAccount) -> None:
    with pytest.raises(GatewayError) as caught:
        LiveGateway("http://127.0.0.1:9", owner.address, owner.key.hex(), timeout_s=1.0)
    assert caught.value.kind == "unavailable"


# ---- orders -----------------------------------------------------------------------------


def test_a_market_buy_fills_and_shows_as_position_and_fills(
    sim: SimExchange, gateway: LiveGateway, info: Info
) -> None:
    since_ms = sim.now_ms()
    request = market_buy(info)
    update = gateway.submit(request)
    assert update.status == "filled" and update.filled_sz == BTC_SZ
    assert update.cloid == request.cloid and update.oid is not None
    assert update.avg_px is not None and update.avg_px <= (request.limit_px or 0)
    position = gateway.account().positions["BTC"]
    assert position.szi == BTC_SZ and position.entry_px == pytest.approx(update.avg_px)
    assert position.liquidation_px is None  # $240 of BTC on $10,000: no price liquidates it
    fills = gateway.fills_since(since_ms)
    assert fills and all(f.cloid == request.cloid and f.oid == update.oid for f in fills)
    assert all(f.crossed and f.is_buy and f.fee_usd > 0 for f in fills)
    assert sum(f.sz for f in fills) == pytest.approx(BTC_SZ)
    assert sum(f.px * f.sz for f in fills) / BTC_SZ == pytest.approx(update.avg_px)
    assert [f.ts_ms for f in fills] == sorted(f.ts_ms for f in fills)
    assert gateway.fills_since(sim.now_ms() + 1) == []
    assert gateway.order_status(request.cloid) == update.model_copy(
        update={"ts_ms": sim.now_ms(), "error": None}
    )


def test_fills_stream_over_the_websocket(gateway: LiveGateway, info: Info) -> None:
    batches: list[list[ExchangeFill]] = []
    lock = threading.Lock()

    def arrived(fills: list[ExchangeFill]) -> None:
        with lock:
            batches.append(fills)

    close = gateway.stream_fills(arrived)
    try:
        time.sleep(0.5)  # the subscription reaches the exchange
        request = market_buy(info)
        assert gateway.submit(request).status == "filled"

        def streamed() -> list[ExchangeFill]:
            with lock:
                return [f for batch in batches for f in batch if f.cloid == request.cloid]

        fills = wait_for(streamed, 10, "the fill on the websocket", 0.05)
        assert sum(f.sz for f in fills) == pytest.approx(BTC_SZ)
        assert all(f.is_buy and f.crossed and f.fee_usd > 0 for f in fills)
    finally:
        close()


def test_a_limit_far_from_the_market_rests_until_cancelled(
    gateway: LiveGateway, info: Info
) -> None:
    request = far_bid(info)
    update = gateway.submit(request)
    assert update.status == "resting" and update.oid is not None
    [listed] = gateway.open_orders()
    assert (listed.cloid, listed.oid, listed.kind) == (request.cloid, update.oid, "limit")
    assert (listed.is_buy, listed.sz, listed.limit_px) == (True, BTC_SZ, request.limit_px)
    assert listed.trigger_px is None and not listed.reduce_only
    status = gateway.order_status(request.cloid)
    assert status is not None and status.status == "resting"
    assert gateway.cancel(request.cloid, "BTC").status == "canceled"
    assert gateway.open_orders() == []
    again = gateway.cancel(request.cloid, "BTC")
    assert again.status == "rejected"
    assert again.error == "Order was never placed, already canceled, or filled."
    status = gateway.order_status(request.cloid)
    assert status is not None and status.status == "canceled"


def test_stop_loss_and_take_profit_wait_for_their_trigger(gateway: LiveGateway, info: Info) -> None:
    assert gateway.submit(market_buy(info)).status == "filled"
    mid = float(info.all_mids()["BTC"])
    stop_px, target_px = round_px(mid * 0.95, 5), round_px(mid * 1.05, 5)
    protect: dict[str, Any] = {"is_buy": False, "sz": BTC_SZ, "reduce_only": True}
    stop = order(kind="stop_loss", trigger_px=stop_px, purpose="stop_loss", **protect)
    target = order(kind="take_profit", trigger_px=target_px, purpose="take_profit", **protect)
    for request in (stop, target):
        update = gateway.submit(request)
        assert update.status == "waiting_trigger" and update.oid is not None
    listed = {o.cloid: o for o in gateway.open_orders()}
    assert set(listed) == {stop.cloid, target.cloid}
    assert (listed[stop.cloid].kind, listed[stop.cloid].trigger_px) == ("stop_loss", stop_px)
    assert (listed[target.cloid].kind, listed[target.cloid].trigger_px) == (
        "take_profit",
        target_px,
    )
    assert all(o.reduce_only and not o.is_buy and o.sz == BTC_SZ for o in listed.values())
    assert listed[stop.cloid].limit_px == round_px(stop_px * 0.9, 5)
    status = gateway.order_status(stop.cloid)
    assert status is not None and status.status == "waiting_trigger"


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"sz": 0.00001}, "Order must have minimum value of $10."),
        ({"tick": 0.5}, "Price must be divisible by tick size."),
    ],
)
def test_orders_the_exchange_refuses_are_rejected_with_its_reason(
    gateway: LiveGateway, info: Info, change: dict[str, float], error: str
) -> None:
    bid = far_bid(info)
    assert bid.limit_px is not None
    request = bid.model_copy(
        update={
            "sz": change.get("sz", bid.sz),
            "limit_px": bid.limit_px + change.get("tick", 0.0),
        }
    )
    update = gateway.submit(request)
    assert (update.status, update.error, update.cloid) == ("rejected", error, request.cloid)
    assert gateway.open_orders() == [] and gateway.order_status(request.cloid) is None


def test_a_market_order_without_a_worst_price_is_not_sent(
    gateway: LiveGateway, exchange_posts: list[str]
) -> None:
    update = gateway.submit(order(is_buy=True, sz=BTC_SZ, kind="market"))
    assert update.status == "rejected" and "limit_px" in (update.error or "")
    assert exchange_posts == []


def test_an_unknown_cloid_has_no_status(gateway: LiveGateway) -> None:
    assert gateway.order_status("0x" + "ab" * 16) is None


# ---- idempotency ------------------------------------------------------------------------


def test_an_answer_lost_after_the_fill_is_found_by_cloid_and_not_resent(
    sim: SimExchange, gateway: LiveGateway, info: Info, exchange_posts: list[str]
) -> None:
    since_ms = sim.now_ms()
    request = market_buy(info)
    sim.fail_http(500, count=1, paths=frozenset({"/exchange"}), after=True)
    update = gateway.submit(request)
    assert exchange_posts == [sim.url + "/exchange"]  # looked up, not sent again
    fills = gateway.fills_since(since_ms)
    assert {f.cloid for f in fills} == {request.cloid} and len({f.oid for f in fills}) == 1
    assert sum(f.sz for f in fills) == pytest.approx(BTC_SZ)
    assert gateway.account().positions["BTC"].szi == BTC_SZ  # one order, not two
    assert (update.status, update.filled_sz, update.oid) == ("filled", BTC_SZ, fills[0].oid)
    assert update.avg_px == pytest.approx(sum(f.px * f.sz for f in fills) / BTC_SZ)


def test_a_request_refused_before_placing_is_sent_once_more(
    sim: SimExchange, gateway: LiveGateway, info: Info, exchange_posts: list[str]
) -> None:
    request = far_bid(info)
    sim.fail_http(429, count=1, paths=frozenset({"/exchange"}))
    update = gateway.submit(request)
    assert len(exchange_posts) == 2
    [listed] = with_cloid(gateway, request.cloid)
    assert (update.status, update.oid) == ("resting", listed.oid)
    assert len(gateway.open_orders()) == 1


def test_a_copy_arriving_after_the_gateway_gave_up_places_one_order_only(
    sim: SimExchange, owner: LocalAccount, api_wallet: LocalAccount, info: Info
) -> None:
    """Both sends time out while the exchange is slow; both copies then arrive. The exchange
    must end with exactly one order: the resend was the same signed request (same nonce)."""
    slow = LiveGateway(sim.url, owner.address, api_wallet.key.hex(), timeout_s=0.3)
    request = far_bid(info)
    sim.delay_responses(2000, paths=frozenset({"/exchange"}))
    try:
        with pytest.raises(GatewayError) as caught:
            slow.submit(request)
        assert caught.value.kind == "unavailable" and "order_status" in caught.value.hint
        late: OrderUpdate = wait_for(lambda: slow.order_status(request.cloid), 5, "the order")
        time.sleep(1.0)  # the second copy lands too, and is refused
    finally:
        sim.delay_responses(0)
    [listed] = with_cloid(slow, request.cloid)
    assert (late.status, late.oid) == ("resting", listed.oid)
    assert len(slow.open_orders()) == 1
    rate = info.user_rate_limit(owner.address)
    assert rate["nRequestsUsed"] == 1  # one action took effect


def test_a_lost_cancel_answer_is_settled_by_looking_the_order_up(
    sim: SimExchange, gateway: LiveGateway, info: Info, exchange_posts: list[str]
) -> None:
    request = far_bid(info)
    assert gateway.submit(request).status == "resting"
    sim.fail_http(502, count=1, paths=frozenset({"/exchange"}), after=True)
    update = gateway.cancel(request.cloid, "BTC")
    assert update.status == "canceled" and len(exchange_posts) == 2
    assert gateway.open_orders() == []


def test_an_exchange_that_stays_down_makes_the_order_unavailable(
    sim: SimExchange, gateway: LiveGateway, info: Info
) -> None:
    request = far_bid(info)
    sim.fail_http(503, count=2, paths=frozenset({"/exchange"}))
    with pytest.raises(GatewayError) as caught:
        gateway.submit(request)
    assert caught.value.kind == "unavailable" and "HTTP 503" in caught.value.message
    assert gateway.order_status(request.cloid) is None and gateway.open_orders() == []
