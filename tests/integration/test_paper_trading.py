"""Paper-live end to end: the simulated exchange feeds the collector, the signals agent
feeds the trader, a scripted model (through the real ChatOpenAI client and the fake
provider) opens and closes positions, the risk engine sizes and checks every order, the
paper broker fills them against the published books, and everything is stored, shown and
counted. A reload lowers a limit and the next open is refused; a tiny daily-loss limit
pauses trading."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
import zmq.asyncio

from bistouryd.bus import BusStats, Publisher
from bistouryd.llm.fakeprovider import Answer, FakeProvider, LlmRequest, hold
from bistouryd.market import L2Book
from bistouryd.paths import RuntimePaths
from bistouryd.simexchange import SimConfig, SimExchange
from bistouryd.strategies.base import Signal
from bistouryd.strategies.registry import strategy_classes
from tests.conftest import Daemon, wait_for

pytestmark = pytest.mark.integration

MakeDaemon = Callable[..., Daemon]
TAKER = 0.00045


def flip_flop(request: LlmRequest) -> Answer:
    """Open long when flat, close when long: a round trip every two decisions (BTC only)."""
    coin = "ETH" if "Coin: ETH" in request.text else "BTC"
    if coin != "BTC":
        return hold(coin)
    if "Position: flat" in request.text:
        return {
            "coin": coin,
            "action": "open_long",
            "size_fraction": 0.5,
            "stop_loss_pct": 0.05,
            "take_profit_pct": 0.05,
            "confidence": 0.7,
            "rationale": "Scripted: flat, so open long.",
        }
    return {
        "coin": coin,
        "action": "close",
        "size_fraction": 0.0,
        "confidence": 0.6,
        "rationale": "Scripted: long, so close.",
    }


def config(sim_url: str, fake_url: str, position_size_pct: float, loss_pct: float) -> str:
    return f"""
exchange:
  network: custom
  base_url: {sim_url}
metrics:
  port: 0
storage:
  batch_max_ms: 50
collector:
  backfill_minutes: 120
trading:
  pairs: [BTC, ETH]
  paper_equity_usd: 10000
  position_size_pct: {position_size_pct}
risk:
  daily_loss_limit_pct: {loss_pct}
llm:
  provider: openai
  decision_interval_s: 1
  min_strength_change: 0.5
  allow_contaminated: true
  providers:
    openai: {{model: gpt-4o-mini, base_url: "{fake_url}/v1", timeout_s: 5}}
agents:
  enabled: [recorder, collector, signals, trader, positions]
  heartbeat_interval_s: 0.2
  heartbeat_timeout_s: 2.0
  stop_timeout_s: 5
"""


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(flip_flop) as provider:
        yield provider


def trades(d: Daemon) -> list[dict[str, Any]]:
    done = d.ctl("trades", "--json", "--limit", "1000")
    assert done.returncode == 0, done.stderr
    found: list[dict[str, Any]] = json.loads(done.stdout)["fills"]
    return found


def round_trip(d: Daemon) -> list[dict[str, Any]] | None:
    fills = trades(d)
    purposes = {f["purpose"] for f in fills}
    return fills if {"open", "close"} <= purposes else None


def scrape(d: Daemon) -> str:
    with urllib.request.urlopen(d.status()["metrics_url"], timeout=5) as response:
        body: str = response.read().decode()
    return body


def test_paper_live_opens_and_closes_from_decisions_and_explains_them(
    make_daemon: MakeDaemon, replay_sim: SimExchange, fake: FakeProvider
) -> None:
    d = make_daemon(config=config(replay_sim.url, fake.url, 10, 50)).start()
    assert d.ctl("mode", "paper-live").returncode == 0
    fills = wait_for(lambda: round_trip(d), 90, "an open and a close", 0.5)

    opened = next(f for f in fills if f["purpose"] == "open")
    closed = next(f for f in fills if f["purpose"] == "close")
    assert opened["coin"] == "BTC" and opened["is_buy"] and not closed["is_buy"]
    # Sized by the risk engine: 10% of the 5,000 USD budget (50% of 10,000), at most.
    notional = sum(f["px"] * f["sz"] for f in fills if f["cloid"] == opened["cloid"])
    assert 10 <= notional <= 500.01
    assert opened["fee_usd"] == pytest.approx(opened["px"] * opened["sz"] * TAKER, rel=1e-6)
    assert closed["opened_by"] == opened["decision_id"]

    shown = d.ctl("decisions", "show", opened["decision_id"][:10])
    assert shown.returncode == 0, shown.stderr
    assert "WHAT FOLLOWED" in shown.stdout
    assert "market      open" in shown.stdout and "stop_loss" in shown.stdout
    assert "P&L" in shown.stdout and "USD realised after fees" in shown.stdout

    table = d.ctl("trades", "--coin", "BTC")
    assert table.returncode == 0 and "Scripted: flat, so open long." in table.stdout

    account = json.loads(d.ctl("positions", "--json").stdout)["portfolio"]
    assert account is not None and account["mode"] == "paper"
    assert account["fees_usd"] > 0 and account["equity_usd"] > 0
    assert {"BTC", "ETH"} <= account["buy_and_hold"].keys()  # the market to beat
    assert account["session_return"] == pytest.approx(account["equity_usd"] / 10_000 - 1)
    assert "vs market     this session" in d.ctl("positions").stdout

    status = d.ctl("status")
    assert "TRADING  equity" in status.stdout and "orders" in status.stdout
    assert json.loads(d.ctl("status", "--json").stdout)["trading"]["orders"] >= 2

    body = scrape(d)
    assert 'bistoury_orders_total{result="filled"}' in body
    assert "bistoury_equity_usd" in body and "bistoury_order_latency_seconds_count" in body

    # A reload shrinks position_size_pct: the next open is refused, nothing is sent.
    d.config.write_text(config(replay_sim.url, fake.url, 0.01, 50))
    assert d.ctl("reload").returncode == 0

    def refused() -> bool:
        return 'bistoury_risk_rejections_total{rule="position_size"}' in scrape(d)

    wait_for(refused, 60, "a refusal by position_size", 0.5)

    # `risk set` raises it again at run time: orders flow once more.
    filled_before = len(trades(d))
    assert d.ctl("risk", "set", "trading.position_size_pct", "10").returncode == 0
    wait_for(lambda: len(trades(d)) > filled_before, 60, "fills after risk set", 0.5)
    stats = d.ctl("decisions", "stats")
    assert stats.returncode == 0 and "by confidence" in stats.stdout

    # Stopped, the same answers come from the file.
    assert d.ctl("stop").returncode == 0 and d.wait_exit() == 0
    db = str(d.state / "bistoury.duckdb")
    offline = json.loads(d.ctl("trades", "--db", db, "--json", "--limit", "1000").stdout)
    assert {f["id"] for f in fills} <= {f["id"] for f in offline["fills"]}
    assert "Scripted: flat, so open long." in offline["rationales"].values()
    shown = d.ctl("positions", "--db", db)
    assert shown.returncode == 0 and shown.stdout.startswith("account (paper)")


def test_a_daily_loss_breach_pauses_trading(
    make_daemon: MakeDaemon, replay_sim: SimExchange, fake: FakeProvider
) -> None:
    # 0.005% of 10,000 USD is 50 cents: the fees of a few round trips breach it.
    d = make_daemon(config=config(replay_sim.url, fake.url, 10, 0.005)).start()
    assert d.ctl("mode", "paper-live").returncode == 0
    status = wait_for(
        lambda: s if "trading" in (s := d.status())["paused"] else None,
        90,
        "trading paused by the daily loss limit",
        0.5,
    )
    assert status["mode"] == "paper-live"
    pauses = [e for e in d.events() if e["kind"] == "pause" and e["source"] == "positions"]
    assert pauses and "daily loss limit" in pauses[0]["message"]
    asked = len(fake.requests)
    time.sleep(3)
    assert len(fake.requests) == asked  # paused: the trader asks no model either


def test_rules_decisions_open_and_close_on_paper(make_daemon: MakeDaemon) -> None:
    """The deterministic rules model drives the same path: a strong cross_signal opens,
    the opposite one closes. The signals and books are published on the daemon's bus by
    the test, as the signals agent and the collector would."""
    enabled = {name: {"enabled": name == "cross_signal"} for name in strategy_classes()}
    with SimExchange(SimConfig(port=0, speed=0.0, seed=0)) as sim:  # its asset list only
        d = make_daemon(
            config=yaml.safe_dump(
                {
                    "exchange": {"network": "custom", "base_url": sim.url},
                    "metrics": {"port": 0},
                    "storage": {"batch_max_ms": 50},
                    "strategies": enabled,
                    "llm": {"provider": "rules", "decision_interval_s": 1},
                    "agents": {"enabled": ["recorder", "trader", "positions"]},
                }
            )
        ).start()
        assert d.ctl("mode", "paper-live").returncode == 0
        asyncio.run(publish_signals(d, ["long", "short", "short"]))
        fills = wait_for(lambda: round_trip(d), 30, "an open and a close by rules", 0.5)
    decisions = json.loads(d.ctl("decisions", "list", "--json").stdout)["decisions"]
    by_id = {x["id"]: x for x in decisions}
    opened = next(f for f in fills if f["purpose"] == "open")
    closed = next(f for f in fills if f["purpose"] == "close")
    assert by_id[opened["decision_id"]]["provider"] == "rules"
    assert by_id[opened["decision_id"]]["decision"]["action"] == "open_long"
    assert by_id[closed["decision_id"]]["decision"]["action"] == "close"
    assert opened["px"] == 100_001.0  # the best ask of the published book


async def publish_signals(
    d: Daemon,
    directions: list[str],
    book: L2Book | None = None,
    start_ms: int = 1_753_200_000_000,
) -> None:
    """Per direction: a book (``book`` restamped, or a synthetic one), then a strong
    ``cross_signal`` for BTC, one second and five seconds of data time apart."""
    ctx = zmq.asyncio.Context()
    pub = Publisher(ctx, RuntimePaths(d.runtime), "test", BusStats())
    try:
        await asyncio.sleep(0.5)  # the subscriptions reach the proxy
        for i, direction in enumerate(directions):
            ts_ms = start_ms + i * 5_000
            pub.send(
                "md.l2.BTC", book.model_copy(update={"ts_ms": ts_ms}) if book else _book(ts_ms)
            )
            score = 0.8 if direction == "long" else -0.8
            signal = Signal(
                strategy="cross_signal",
                coin="BTC",
                ts_ms=ts_ms,
                direction=direction,  # type: ignore[arg-type]
                strength=0.8,
                confidence=0.9,
                narrative=f"Trending regime; combined score {score:+.2f}.",
                features={"score": score, "regime_code": 1.0},
            )
            pub.send(signal.topic, signal)
            await asyncio.sleep(1.0)
    finally:
        pub.close()
        ctx.term()


def _book(ts_ms: int) -> L2Book:
    return L2Book(
        coin="BTC",
        ts_ms=ts_ms,
        bid_px=[100_000.0 - i for i in range(10)],
        bid_sz=[1.0] * 10,
        bid_n=[1] * 10,
        ask_px=[100_001.0 + i for i in range(10)],
        ask_sz=[1.0] * 10,
        ask_n=[1] * 10,
    )
