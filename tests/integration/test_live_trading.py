"""Live trading end to end against the simulated exchange (real SDK signing, matching and
fees): only `trade --confirm` enters live, decisions become exchange orders with an
exchange-side stop-loss and take-profit, a daemon killed mid-trade comes back live,
reconciles to the exchange's true position and places no duplicate, and the emergency
stop leaves the account flat."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import yaml
from eth_account.signers.local import LocalAccount

from bistouryd.exchange.gateway import LiveGateway
from bistouryd.llm.fakeprovider import FakeProvider
from bistouryd.market import parse_l2book
from bistouryd.protocol import DAEMON_EXIT_EMERGENCY
from bistouryd.simexchange import SimConfig, SimExchange
from bistouryd.strategies.registry import strategy_classes
from tests.conftest import Daemon, wait_for
from tests.integration.conftest import funded_account
from tests.integration.test_emergency_stop import open_and_hold
from tests.integration.test_paper_trading import config, publish_signals

pytestmark = pytest.mark.integration

MakeDaemon = Callable[..., Daemon]


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(open_and_hold) as provider:
        yield provider


@pytest.fixture
def accounts(replay_sim: SimExchange) -> tuple[LocalAccount, LocalAccount]:
    return funded_account(replay_sim, 10_000.0)


@pytest.fixture
def owner(accounts: tuple[LocalAccount, LocalAccount]) -> LocalAccount:
    return accounts[0]


@pytest.fixture
def api_wallet(accounts: tuple[LocalAccount, LocalAccount]) -> LocalAccount:
    return accounts[1]


def env(owner: LocalAccount, api_wallet: LocalAccount) -> str:
    return (
        f"HYPERLIQUID_ACCOUNT_ADDRESS={owner.address}\n"
        f"HYPERLIQUID_API_WALLET_KEY=0x{api_wallet.key.hex().removeprefix('0x')}\n"
    )


def exchange_btc(gw: LiveGateway) -> float:
    position = gw.account().positions.get("BTC")
    return position.szi if position else 0.0


def protection(gw: LiveGateway) -> list[str]:
    return sorted(o.kind for o in gw.open_orders() if o.coin == "BTC")


def test_live_session_trades_survives_a_kill_and_flattens(
    make_daemon: MakeDaemon,
    replay_sim: SimExchange,
    fake: FakeProvider,
    owner: LocalAccount,
    api_wallet: LocalAccount,
) -> None:
    d = make_daemon(config=config(replay_sim.url, fake.url, 10, 50), env=env(owner, api_wallet))
    d.start()
    gw = LiveGateway(replay_sim.url, owner.address, api_wallet.key.hex())

    refused = d.ctl("mode", "live")
    assert refused.returncode != 0 and "trade --confirm" in refused.stderr
    unconfirmed = d.ctl("trade", "--risk-limit", "2000")
    assert unconfirmed.returncode == 2 and "--confirm" in unconfirmed.stderr

    confirmed = d.ctl("trade", "--confirm", "--risk-limit", "2000", timeout=60)
    assert confirmed.returncode == 0, confirmed.stderr
    assert "LIVE TRADING confirmed" in confirmed.stdout and "10,000.00 USD" in confirmed.stdout
    assert d.status()["mode"] == "live"

    # The scripted model opens a BTC long once: a real order, with its stop and target.
    try:
        szi = wait_for(lambda: exchange_btc(gw) or None, 90, "a BTC position on the exchange", 0.5)
    except pytest.fail.Exception:
        lines = d.log_file.read_text().splitlines()
        said = [ln for ln in lines if any(w in ln for w in ("positions", "LLM", "TRADE", "trader"))]
        pytest.fail("no BTC position on the exchange; the daemon said:\n" + "\n".join(said[-60:]))
    assert szi > 0
    wait_for(lambda: protection(gw) == ["stop_loss", "take_profit"], 30, "its protection", 0.5)
    fills: list[dict[str, Any]] = wait_for(
        lambda: (
            [
                f
                for f in json.loads(d.ctl("trades", "--json").stdout)["fills"]
                if f["mode"] == "live" and f["purpose"] == "open"
            ]
            or None
        ),
        30,
        "the live fill recorded",
        0.5,
    )
    assert sum(f["sz"] for f in fills) == pytest.approx(szi)
    assert all(f["decision_id"] for f in fills)

    # Killed mid-trade: the restart resumes live, reconciles, and places nothing twice.
    d.kill_all()
    d.start()
    assert d.status()["mode"] == "live"
    wait_for(lambda: "reconciled with the exchange" in d.log_file.read_text(), 60, "reconcile")
    account = wait_for(
        lambda: (
            (a := json.loads(d.ctl("positions", "--json").stdout)["portfolio"])
            and a["mode"] == "live"
            and "BTC" in a["positions"]
            and a
        ),
        30,
        "the reconciled live account",
        0.5,
    )
    assert account["positions"]["BTC"]["size_sz"] == pytest.approx(szi)
    assert exchange_btc(gw) == pytest.approx(szi)  # still one position, not two
    assert protection(gw) == ["stop_loss", "take_profit"]  # not duplicated

    # Emergency stop: the exchange account ends flat with no order left.
    done = d.ctl("stop", "--emergency", timeout=60)
    assert done.returncode == 0, done.stderr
    assert "closed: BTC" in done.stdout
    assert d.wait_exit(30) == DAEMON_EXIT_EMERGENCY
    assert exchange_btc(gw) == 0 and gw.open_orders() == []


def test_rules_decisions_open_and_close_live(make_daemon: MakeDaemon) -> None:
    """The rules model on a strong cross_signal (published on the bus by the test, with the
    exchange's own BTC book) opens a real long, the opposite signal closes it, and the
    long's stop and target do not outlive it."""
    enabled = {name: {"enabled": name == "cross_signal"} for name in strategy_classes()}
    with SimExchange(SimConfig(port=0, speed=0.0, seed=0)) as sim:
        owner, agent = funded_account(sim, 10_000.0)
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
            ),
            env=env(owner, agent),
        ).start()
        confirmed = d.ctl("trade", "--confirm", "--risk-limit", "2000", timeout=60)
        assert confirmed.returncode == 0, confirmed.stderr
        wait_for(lambda: "reconciled with the exchange" in d.log_file.read_text(), 30, "reconcile")
        book = parse_l2book(
            httpx.post(f"{sim.url}/info", json={"type": "l2Book", "coin": "BTC"}).json()
        )
        # Stamped with the exchange's clock, as the collector's data would be.
        asyncio.run(publish_signals(d, ["long", "short", "short"], book, sim.now_ms()))
        fills = wait_for(lambda: live_round_trip(d), 30, "a live open and close by rules", 0.5)
        gw = LiveGateway(sim.url, owner.address, agent.key.hex())
        # The long's stop and target (sells) went with it; a short opened after the close
        # (the trader asks again when the position changes) has its own (buys).
        wait_for(
            lambda: not any(not o.is_buy for o in gw.open_orders()),
            15,
            "the closed long's stop and target canceled",
            0.5,
        )
        assert exchange_btc(gw) <= 0
    decisions = json.loads(d.ctl("decisions", "list", "--json").stdout)["decisions"]
    by_id = {x["id"]: x for x in decisions}
    # The paused exchange stamps every fill with the same time: find them by decision.
    opened = next(
        f
        for f in fills
        if f["purpose"] == "open" and by_id[f["decision_id"]]["decision"]["action"] == "open_long"
    )
    closed = next(f for f in fills if f["purpose"] == "close")
    assert by_id[opened["decision_id"]]["provider"] == "rules" and opened["is_buy"]
    assert by_id[closed["decision_id"]]["decision"]["action"] == "close"
    assert closed["opened_by"] == opened["decision_id"]


def live_round_trip(d: Daemon) -> list[dict[str, Any]] | None:
    fills = [
        f for f in json.loads(d.ctl("trades", "--json").stdout)["fills"] if f["mode"] == "live"
    ]
    return fills if {"open", "close"} <= {f["purpose"] for f in fills} else None
