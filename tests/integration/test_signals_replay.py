"""Every strategy over the bundled real HyperLiquid data, through the simulator's engine
(``market_tape``: the events the collector would publish, without sockets).

Candles and funding are recorded; books and the public tape inside each bar are generated
by the simulator from them (see bistouryd/simexchange/data/SOURCES.md).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from functools import cache
from pathlib import Path

import pytest

from bistouryd.config import Config, strategy_settings
from bistouryd.market import MarketEvent
from bistouryd.simexchange.config import SimConfig
from bistouryd.simexchange.datafiles import bundled_data_dir
from bistouryd.simexchange.tape import market_tape
from bistouryd.strategies.base import Signal, unbacked_numbers
from bistouryd.strategies.engine import SignalEngine
from bistouryd.strategies.registry import strategy_classes

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000
# Two hours into the bundled candles (2025-07-21 11:28 UTC onwards), on an hour boundary.
CUT_MS = (1753097280000 // HOUR_MS + 30) * HOUR_MS
START_MS = CUT_MS - 45 * 60_000
AFTER_CUT_MS = 15 * 60_000
COINS = ["BTC", "ETH"]


def run_engine(events: list[MarketEvent]) -> list[Signal]:
    engine = SignalEngine(strategy_settings(Config()), COINS)
    return [s for e in events for s in engine.feed(e)]


def comparable(signals: list[Signal]) -> list[dict[str, object]]:
    return [s.model_dump(exclude={"id"}) for s in signals]


def tape(folder: Path | None, until_ms: int) -> list[MarketEvent]:
    config = SimConfig(data_dir=folder, start_ms=START_MS, seed=7)
    return list(market_tape(config, until_ms - START_MS))


@cache
def full_run() -> tuple[list[MarketEvent], list[Signal]]:
    events = tape(None, CUT_MS + AFTER_CUT_MS)
    return events, run_engine(events)


def truncated_copy(dest: Path) -> Path:
    """The bundled data with every candle and funding point from ``CUT_MS`` on removed."""
    shutil.copytree(bundled_data_dir(), dest)
    for path in dest.glob("candles_*.json"):
        bars = json.loads(path.read_text())
        path.write_text(json.dumps([b for b in bars if b["T"] < CUT_MS]))
    for path in dest.glob("funding_*.json"):
        rows = json.loads(path.read_text())
        path.write_text(json.dumps([r for r in rows if r["time"] < CUT_MS]))
    return dest


def test_every_strategy_speaks_for_every_coin_and_each_number_is_backed() -> None:
    _, signals = full_run()
    counts = Counter((s.strategy, s.coin) for s in signals)
    for name in strategy_classes():
        for coin in COINS:
            assert counts[(name, coin)] > 0, f"no {name} signal for {coin}: {counts}"
    for s in signals:
        assert unbacked_numbers(s) == [], (s.strategy, s.narrative, s.features)
        assert START_MS - 6 * HOUR_MS <= s.ts_ms <= CUT_MS + AFTER_CUT_MS


def test_signals_before_a_time_do_not_depend_on_data_after_it(tmp_path: Path) -> None:
    events, signals = full_run()
    cut_events = tape(truncated_copy(tmp_path / "data"), CUT_MS + AFTER_CUT_MS)
    # The market itself: nothing before the cut changes when later data is missing.
    assert cut_events == events[: len(cut_events)]
    assert max(_known_at(e) for e in cut_events) <= CUT_MS
    assert min(_known_at(e) for e in events[len(cut_events) :]) >= CUT_MS
    # The signals: the same ones, in the same order, up to the cut.
    cut_signals = run_engine(cut_events)
    early = [s for s in signals if s.ts_ms < CUT_MS]
    assert len(early) > 50
    assert comparable([s for s in cut_signals if s.ts_ms < CUT_MS]) == comparable(early)
    assert {s.strategy for s in early} == set(strategy_classes())


def _known_at(event: MarketEvent) -> int:
    """When the collector could first have seen the event (a forming bar: when it opened)."""
    if hasattr(event, "open_ts_ms"):
        return int(event.open_ts_ms)
    if hasattr(event, "trades"):
        return max(t.ts_ms for t in event.trades)
    return int(event.ts_ms)
