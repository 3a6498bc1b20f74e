"""The signals agent in a real daemon fed by the simulated exchange replaying the bundled
real data: every strategy speaks for every coin, the recorder keeps every signal,
``bistouryctl signals`` shows them, and a reload re-parameterises without a restart."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from bistouryd.simexchange import SimExchange
from bistouryd.strategies.base import Signal, unbacked_numbers
from bistouryd.strategies.registry import strategy_classes
from tests.conftest import BISTOURYCTL, Daemon, wait_for

pytestmark = pytest.mark.integration

MakeDaemon = Callable[..., Daemon]
COINS = ("BTC", "ETH")


def signals_config(url: str, volume_profile: bool = True, wall_multiple: float = 5.0) -> str:
    return f"""
exchange:
  network: custom
  base_url: {url}
metrics:
  port: 0
logging:
  level: DEBUG
storage:
  batch_max_ms: 50
collector:
  backfill_minutes: 360
  funding_poll_s: 5
strategies:
  funding_rate:
    emit_interval_s: 10
    oi_change_hours: 0.25
  order_flow:
    emit_interval_s: 2
    wall_size_multiple: {wall_multiple}
  volume_profile:
    enabled: {str(volume_profile).lower()}
    emit_interval_s: 10
  cross_signal:
    emit_interval_s: 5
agents:
  enabled: [recorder, collector, signals]
  heartbeat_interval_s: 0.2
  heartbeat_timeout_s: 1.0
  restart_backoff_initial_s: 0.1
  restart_backoff_max_s: 1
  stop_timeout_s: 5
"""


def recent(d: Daemon, *args: str) -> list[Signal]:
    done = d.ctl("signals", "--json", "--limit", "5000", *args)
    assert done.returncode == 0, done.stderr
    return [Signal.model_validate(s) for s in json.loads(done.stdout)["signals"]]


def scrape(d: Daemon) -> str:
    with urllib.request.urlopen(d.status()["metrics_url"], timeout=5) as response:
        body: str = response.read().decode()
    return body


def every_strategy_spoke(d: Daemon) -> list[Signal] | None:
    found = recent(d)
    counts = Counter((s.strategy, s.coin) for s in found)
    return found if all(counts[(n, c)] for n in strategy_classes() for c in COINS) else None


def test_signals_for_every_strategy_and_coin_are_published_stored_and_shown(
    make_daemon: MakeDaemon, replay_sim: SimExchange
) -> None:
    d = make_daemon(config=signals_config(replay_sim.url)).start()
    assert d.ctl("collect").returncode == 0
    found: list[Signal] = wait_for(lambda: every_strategy_spoke(d), 90, "every strategy", 1.0)
    for s in found:
        assert unbacked_numbers(s) == [], (s.strategy, s.narrative, s.features)

    only_btc = recent(d, "--coin", "BTC", "--strategy", "cross_signal")
    assert only_btc and {(s.coin, s.strategy) for s in only_btc} == {("BTC", "cross_signal")}

    shown = d.ctl("signals", "--coin", "ETH", "--limit", "5")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("RECENT SIGNALS")
    assert shown.stdout.count(" ETH ") == 5 and " BTC " not in shown.stdout

    metrics = scrape(d)
    for name in strategy_classes():
        assert f'bistoury_signal_compute_seconds_count{{strategy="{name}"}}' in metrics
        assert f'bistoury_signals_total{{strategy="{name}"}}' in metrics
    assert "bistoury_signal_errors_total" not in metrics

    # --follow: new signals as they come, each once, until Ctrl-C.
    follow = subprocess.Popen(
        [BISTOURYCTL, "--socket", str(d.socket), "signals", "--follow", "--json", "--limit", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=d.environ(),
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(follow.stdout or []), daemon=True)
    reader.start()
    time.sleep(7)
    follow.send_signal(signal.SIGINT)
    assert follow.wait(timeout=10) == 0, follow.stderr.read() if follow.stderr else ""
    reader.join(timeout=5)
    ids = [json.loads(line)["id"] for line in lines]
    assert len(ids) > 3 and len(set(ids)) == len(ids)  # new ones came, none twice

    # Every signal published was stored: read the file itself once the daemon is stopped.
    assert d.ctl("stop").returncode == 0
    assert d.wait_exit() == 0
    db = str(d.state / "bistoury.duckdb")
    done = d.ctl("signals", "--db", db, "--json", "--limit", "10000")
    assert done.returncode == 0, done.stderr
    stored = {s["id"] for s in json.loads(done.stdout)["signals"]}
    assert {s.id for s in found} <= stored and set(ids) <= stored


def test_reload_reparameterises_and_disables_without_restarting_the_agent(
    make_daemon: MakeDaemon, replay_sim: SimExchange
) -> None:
    d = make_daemon(config=signals_config(replay_sim.url)).start()
    assert d.ctl("collect").returncode == 0
    wait_for(lambda: every_strategy_spoke(d), 90, "every strategy", 1.0)
    before = d.agent("signals")

    d.config.write_text(signals_config(replay_sim.url, volume_profile=False, wall_multiple=8.0))
    done = d.ctl("reload", "--json")
    assert done.returncode == 0, done.stderr
    changed = json.loads(done.stdout)["changed"]
    assert "strategies.volume_profile.enabled" in changed
    assert "strategies.order_flow.wall_size_multiple" in changed
    reloaded_at = max(s.ts_ms for s in recent(d))

    def mtf_after_reload() -> bool:
        # Multi-timeframe needs hours of 15m bars: it only goes on if its state survived.
        return any(s.ts_ms > reloaded_at for s in recent(d, "--strategy", "multi_timeframe"))

    wait_for(mtf_after_reload, 30, "a multi_timeframe signal after the reload", 0.5)
    wait_for(
        lambda: any(s.ts_ms > reloaded_at + 30_000 for s in recent(d, "--strategy", "order_flow")),
        30,
        "order_flow signals 30 s of replay after the reload",
        0.5,
    )
    late = [s for s in recent(d, "--strategy", "volume_profile") if s.ts_ms > reloaded_at + 15_000]
    assert late == []
    after = d.agent("signals")
    assert (after["pid"], after["restarts"]) == (before["pid"], 0)
    assert_walls_use(d, 8.0)


def assert_walls_use(d: Daemon, multiple: float) -> None:
    """The order-flow signals after the reload report the new wall threshold."""
    latest: dict[str, Any] = recent(d, "--strategy", "order_flow")[-1].features
    assert latest.get("wall_size_multiple") == multiple
