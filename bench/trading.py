"""The trading suite: signal → order latency through the real agents and bus.

A real bistouryd runs the recorder, the trader (with the ``rules`` model) and the
positions agent in paper-live, its asset list from a paused simulated exchange. This
process publishes on the daemon's bus, as the signals agent would, a fresh L2 book and
then a ``cross_signal`` for BTC that alternates long and short, one every
``PERIOD_S``: each makes the trader decide (open, then close the position it opened, and
so on) and the positions agent check the order with the risk engine and fill it on the
paper broker. The latency of one signal is from its publication to the fill the order
got, as published on ``fill.BTC`` (the order is submitted just before). Each signal is
2 s of data time after the last, so the decision interval (1 s) never holds one back.

The baseline, in the same run: a message of the same kind published and received by
this process through the same proxy (one bus hop). The path measured has three hops
(signal, decision, fill) and two agents' work.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import zmq.asyncio

from bench.daemon import Daemon
from bench.foundation import SuiteResult
from bench.procs import BenchError
from bench.stats import Aim, Dist, compare
from bistouryctl.client import Client
from bistouryd.bus import BusStats, Publisher, Subscriber
from bistouryd.exchange.orders import Fill
from bistouryd.llm.record import DecisionRecord
from bistouryd.market import L2Book
from bistouryd.paths import RuntimePaths
from bistouryd.simexchange import SimConfig, SimExchange
from bistouryd.strategies.base import Signal
from bistouryd.strategies.registry import strategy_classes

Log = Callable[[str], None]
SIGNALS = 300
PINGS = 300
PERIOD_S = 0.05
START_MS = 1_753_200_000_000
PRD_AIM = Aim(100.0, text="< 100 ms (PRD)")
P99_AIM = Aim(10.0, text="< 10 ms")
DEADLINE_S = 120.0


def run(log: Log) -> SuiteResult:
    result = SuiteResult()
    with SimExchange(SimConfig(port=0, speed=0.0, seed=0)) as sim:
        overrides: dict[str, Any] = {
            "exchange": {"network": "custom", "base_url": sim.url},
            "agents": {"enabled": ["recorder", "trader", "positions"]},
            "llm": {"provider": "rules", "decision_interval_s": 1, "min_strength_change": 0.05},
            "strategies": {
                name: {"enabled": name == "cross_signal"} for name in strategy_classes()
            },
        }
        with Daemon(overrides) as daemon:
            log(f"trading: starting bistouryd (recorder, trader, positions; sim {sim.url})")
            daemon.wait_ready()
            Client(daemon.socket).call("mode", mode="paper-live")
            chain, bare, info = asyncio.run(_measure(RuntimePaths(daemon.runtime), log))
            daemon.stop()
    d_chain = Dist.of("signal → decision → order filled (rules, paper)", "ms", chain, 1e-6)
    d_bare = Dist.of("one bus hop, same run", "ms", bare, 1e-6)
    result.add("signal_to_order", {"chain": d_chain, "bare": d_bare})
    result.details["signal_to_order"] = info
    log(f"trading: signal → order p50 {d_chain.p50} ms, p99 {d_chain.p99} ms")
    result.figures += [
        compare(
            "signal_to_order_p50", "Signal → order filled, p50", d_chain, "p50", d_bare, PRD_AIM
        ),
        compare(
            "signal_to_order_p99", "Signal → order filled, p99", d_chain, "p99", d_bare, P99_AIM
        ),
    ]
    return result


async def _measure(
    paths: RuntimePaths, log: Log
) -> tuple[list[float], list[float], dict[str, Any]]:
    ctx = zmq.asyncio.Context()
    stats = BusStats()
    pub = Publisher(ctx, paths, "bench", stats)
    sub = Subscriber(ctx, paths, ["fill.", "dec.", "bench."], stats)
    try:
        await asyncio.sleep(0.5)  # let the subscriptions reach the proxy
        sent_ns: dict[str, int] = {}  # signal id -> when published
        signal_of: dict[str, str] = {}  # decision id -> signal id
        latencies: list[float] = []
        pings: list[float] = []
        actions: dict[str, int] = {}
        done = asyncio.Event()

        async def receive() -> None:
            while len(latencies) < SIGNALS or len(pings) < PINGS:
                _, env = await sub.recv()
                now = time.monotonic_ns()
                body = env.body
                if isinstance(body, Signal) and body.id in sent_ns:  # a ping
                    pings.append(float(now - sent_ns.pop(body.id)))
                elif isinstance(body, DecisionRecord):
                    actions[body.decision.action] = actions.get(body.decision.action, 0) + 1
                    for sid in body.signal_ids:
                        signal_of[body.id] = sid
                elif isinstance(body, Fill) and body.decision_id in signal_of:
                    sid = signal_of.pop(body.decision_id)
                    if sid in sent_ns:
                        latencies.append(float(now - sent_ns.pop(sid)))
            done.set()

        receiver = asyncio.create_task(receive())
        for i in range(max(SIGNALS, PINGS) * 2):
            ts_ms = START_MS + i * 2000
            if len(pings) < PINGS:
                ping = _signal(ts_ms, "long", topic_coin="PING")
                sent_ns[ping.id] = time.monotonic_ns()
                pub.send("bench.ping", ping)
                await asyncio.sleep(PERIOD_S / 2)
            if len(latencies) < SIGNALS:
                pub.send("md.l2.BTC", _book(ts_ms))
                signal = _signal(ts_ms, "long" if i % 2 == 0 else "short")
                sent_ns[signal.id] = time.monotonic_ns()
                pub.send(signal.topic, signal)
            await asyncio.sleep(PERIOD_S)
            if done.is_set():
                break
        try:
            await asyncio.wait_for(done.wait(), DEADLINE_S)
        except asyncio.TimeoutError:
            raise BenchError(
                f"trading: {len(latencies)} of {SIGNALS} signals became orders "
                f"(decisions by action: {actions})"
            ) from None
        receiver.cancel()
        info = {"signals": SIGNALS, "pings": PINGS, "decisions": actions}
        log(f"trading: decisions by action {actions}")
        return latencies, pings, info
    finally:
        pub.close()
        sub.close()
        ctx.term()


def _signal(ts_ms: int, direction: str, topic_coin: str = "BTC") -> Signal:
    score = 0.8 if direction == "long" else -0.8
    return Signal(
        strategy="cross_signal",
        coin=topic_coin,
        ts_ms=ts_ms,
        direction=direction,  # type: ignore[arg-type]
        strength=0.8,
        confidence=0.9,
        narrative=f"Trending regime; combined score {score:+.2f}.",
        features={"score": score, "regime_code": 1.0},
    )


def _book(ts_ms: int) -> L2Book:
    """A deep book around 100,000 (enough for any order the risk engine allows)."""
    return L2Book(
        coin="BTC",
        ts_ms=ts_ms,
        bid_px=[100_000.0 - i for i in range(20)],
        bid_sz=[5.0] * 20,
        bid_n=[3] * 20,
        ask_px=[100_001.0 + i for i in range(20)],
        ask_sz=[5.0] * 20,
        ask_n=[3] * 20,
    )
