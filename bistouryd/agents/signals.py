"""The signals agent: market data in, strategy signals out.

It subscribes to ``md.*``, runs the enabled strategies for every traded coin through a
``SignalEngine`` (the same one replays and the backtester use), publishes each signal
on ``sig.<strategy>.<coin>`` for the trader and hands it to the recorder. A reload
re-parameterises, enables or disables strategies in place: the others keep their state.

Compute time of every strategy update goes to ``bistoury_signal_compute_seconds``; a
strategy that raises is counted and logged (at most once a minute per strategy) and
skipped for that event, so a bug in one plug-in does not silence the others.
"""

from __future__ import annotations

import asyncio
import logging
import time

from bistouryd.agents.base import Agent, run
from bistouryd.config import strategy_settings
from bistouryd.logs import SIGNAL
from bistouryd.market import AssetCtx, Candle, FundingRate, L2Book, Trades
from bistouryd.strategies.base import Signal
from bistouryd.strategies.engine import SignalEngine
from bistouryd.supervision import HistogramFamily, MetricSample, sample

log = logging.getLogger(__name__)

FEEDS = (Candle, L2Book, Trades, AssetCtx, FundingRate)
BATCH = 200  # events handled between two chances for the agent's other tasks
ERROR_LOG_EVERY_S = 60.0
# From 1 µs to 100 ms: strategies work in microseconds; the PRD tolerates far more.
COMPUTE_BOUNDS = (
    1e-6,
    2.5e-6,
    5e-6,
    1e-5,
    2.5e-5,
    5e-5,
    1e-4,
    2.5e-4,
    5e-4,
    1e-3,
    2.5e-3,
    1e-2,
    1e-1,
)


class SignalsAgent(Agent):
    name = "signals"

    async def start(self) -> None:
        self.compute = HistogramFamily(
            "bistoury_signal_compute_seconds",
            "Time one strategy takes to process one market-data update",
            COMPUTE_BOUNDS,
            "strategy",
        )
        self.emitted: dict[str, int] = {}
        self.events = 0
        self.errors: dict[str, int] = {}
        self._error_logged_s: dict[str, float] = {}
        self.engine = SignalEngine(
            strategy_settings(self.config),
            self.pairs,
            on_compute=self.compute.observe,
            on_error=self._failed_update,
        )
        log.info(
            "signals agent running %s for %s",
            ", ".join(self.engine.enabled) or "no strategy",
            ", ".join(self.pairs),
        )
        self.spawn(self._consume(), "consume")

    async def on_config(self, changed: list[str]) -> None:
        if any(c.startswith(("strategies", "trading.pairs")) for c in changed):
            self._reconfigure()

    async def on_mode(self) -> None:
        self._reconfigure()  # `collect --pairs` may have changed the coins

    def _reconfigure(self) -> None:
        before = self.engine.enabled, list(self.engine.coins)
        self.engine.configure(strategy_settings(self.config), self.pairs)
        if (self.engine.enabled, list(self.engine.coins)) != before:
            log.info(
                "signals agent now runs %s for %s",
                ", ".join(self.engine.enabled) or "no strategy",
                ", ".join(self.pairs),
            )

    async def _consume(self) -> None:
        sub = self.subscribe(["md."])
        while True:
            batch = await sub.recv_batch(BATCH)
            for _, envelope in batch:
                event = envelope.body
                if isinstance(event, FEEDS):
                    self.events += 1
                    for signal in self.engine.feed(event):
                        self._emit(signal)
            if len(batch) == BATCH:
                await asyncio.sleep(0)  # a full batch: let heartbeats and reloads run

    def _emit(self, signal: Signal) -> None:
        self.publisher.send(signal.topic, signal)
        self.store.push(signal.topic, signal)
        self.emitted[signal.strategy] = self.emitted.get(signal.strategy, 0) + 1
        log.log(
            SIGNAL,
            "%s %s %s (strength %.2f, confidence %.2f): %s",
            signal.coin,
            signal.strategy,
            signal.direction,
            signal.strength,
            signal.confidence,
            signal.narrative,
        )

    def _failed_update(self, strategy: str, coin: str, exc: Exception) -> None:
        self.errors[strategy] = self.errors.get(strategy, 0) + 1
        now = time.monotonic()
        if now - self._error_logged_s.get(strategy, -ERROR_LOG_EVERY_S) >= ERROR_LOG_EVERY_S:
            self._error_logged_s[strategy] = now
            log.error(
                "strategy %s failed on a %s update (%d failures so far): %r\n"
                "  → the event was skipped for this strategy; report the bug to its author",
                strategy,
                coin,
                self.errors[strategy],
                exc,
                exc_info=exc,
            )

    def metrics(self) -> list[MetricSample]:
        out = self.compute.samples()
        out.append(
            sample(
                "bistoury_signal_events_total",
                "counter",
                "Market-data events the strategies were fed",
                self.events,
            )
        )
        out += [
            sample("bistoury_signals_total", "counter", "Signals emitted", n, strategy=name)
            for name, n in sorted(self.emitted.items())
        ]
        out += [
            sample(
                "bistoury_signal_errors_total",
                "counter",
                "Strategy updates that raised an exception",
                n,
                strategy=name,
            )
            for name, n in sorted(self.errors.items())
        ]
        return out


if __name__ == "__main__":
    run(SignalsAgent)
