"""The emergency stop: with a paper position open and the trader frozen (SIGSTOP), it
cancels the stop-loss and take-profit, closes the position at market, saves the state,
reports what it did and exits 79; SIGUSR1 does the same."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bistouryd.llm.fakeprovider import Answer, FakeProvider, LlmRequest, hold
from bistouryd.protocol import DAEMON_EXIT_EMERGENCY
from bistouryd.simexchange import SimExchange
from tests.conftest import Daemon, wait_for
from tests.integration.test_paper_trading import config

pytestmark = pytest.mark.integration

MakeDaemon = Callable[..., Daemon]


def open_and_hold(request: LlmRequest) -> Answer:
    """Open a BTC long once, then hold it."""
    if "Coin: BTC" in request.text and "Position: flat" in request.text:
        return {
            "coin": "BTC",
            "action": "open_long",
            "size_fraction": 0.5,
            "stop_loss_pct": 0.05,
            "take_profit_pct": 0.05,
            "confidence": 0.7,
            "rationale": "Scripted: open once.",
        }
    return hold("ETH" if "Coin: ETH" in request.text else "BTC")


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(open_and_hold) as provider:
        yield provider


def btc_position(d: Daemon) -> dict[str, Any] | None:
    account = json.loads(d.ctl("positions", "--json").stdout)["portfolio"]
    return account if account and "BTC" in account["positions"] else None


def test_the_emergency_stop_flattens_while_the_trader_is_frozen(
    make_daemon: MakeDaemon, replay_sim: SimExchange, fake: FakeProvider
) -> None:
    d = make_daemon(config=config(replay_sim.url, fake.url, 10, 50)).start()
    assert d.ctl("mode", "paper-live").returncode == 0
    held = wait_for(lambda: btc_position(d), 90, "an open BTC position", 0.5)
    size = held["positions"]["BTC"]["size_sz"]

    trader = d.agent("trader")["pid"]
    os.kill(trader, signal.SIGSTOP)
    try:
        done = d.ctl("stop", "--emergency", timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):  # stopped with the daemon
            os.kill(trader, signal.SIGCONT)
    assert done.returncode == 0, done.stderr
    assert f"closed: BTC {size:g}" in done.stdout
    assert "canceled 2 order(s)" in done.stdout  # the stop-loss and the take-profit
    assert d.wait_exit(30) == DAEMON_EXIT_EMERGENCY

    snapshots = list(d.state.glob("emergency-*.json"))
    assert len(snapshots) == 1
    saved = json.loads(snapshots[0].read_text())
    assert "BTC" in saved["before"]["positions"] and saved["after"]["positions"] == {}
    assert saved["last_decisions"]["BTC"]["decision"]["action"] in ("open_long", "hold")

    db = str(d.state / "bistoury.duckdb")
    fills = json.loads(d.ctl("trades", "--db", db, "--json").stdout)["fills"]
    out = [f for f in fills if f["purpose"] == "emergency"]
    assert out and not any(f["is_buy"] for f in out)
    assert sum(f["sz"] for f in out) == pytest.approx(size)
    shown = d.ctl("positions", "--db", db)
    assert "no open position" in shown.stdout

    events = d.ctl("events", "--db", db, "--json", "--limit", "1000")
    kinds = [(e["kind"], e["message"]) for e in json.loads(events.stdout)["events"]]
    assert any(k == "emergency_stop" and "closed BTC" in m for k, m in kinds)


def test_sigusr1_is_an_emergency_stop(make_daemon: MakeDaemon) -> None:
    d = make_daemon().start()
    assert d.proc is not None
    os.kill(d.proc.pid, signal.SIGUSR1)
    assert d.wait_exit(30) == DAEMON_EXIT_EMERGENCY
