"""Collect mode end to end: the simulated exchange, a real daemon, the official SDK in the
collector, the bus and the recorder's DuckDB file."""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from bistouryd.market import parse_candle, parse_ws_message
from bistouryd.simexchange import SimConfig, SimExchange
from tests.conftest import Daemon, wait_for

pytestmark = pytest.mark.integration

MakeDaemon = Callable[..., Daemon]


def collect_config(url: str, **collector: Any) -> str:
    settings = {
        "backfill_minutes": 60,
        "stale_after_s": 2,
        "reconnect_max_backoff_s": 2,
        "funding_poll_s": 5,
        **collector,
    }
    lines = "\n".join(f"  {k}: {v}" for k, v in settings.items())
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
{lines}
agents:
  enabled: [recorder, collector]
  heartbeat_interval_s: 0.2
  heartbeat_timeout_s: 1.0
  restart_backoff_initial_s: 0.1
  restart_backoff_max_s: 1
  stop_timeout_s: 5
"""


@pytest.fixture
def sim() -> Iterator[SimExchange]:
    with SimExchange(SimConfig(port=0, speed=10.0, seed=0, ws_log_size=500_000)) as exchange:
        yield exchange


def stream(d: Daemon, coin: str, channel: str) -> dict[str, Any]:
    collection = d.status().get("collection") or {}
    for row in collection.get("streams", []):
        if row["coin"] == coin and row["channel"] == channel:
            return dict(row)
    return {"messages": 0}


def collecting(d: Daemon, coin: str = "BTC", at_least: int = 20) -> None:
    wait_for(
        lambda: stream(d, coin, "l2Book")["messages"] >= at_least, 30, f"{at_least} {coin} books"
    )


def stop_and_open(d: Daemon, sim: SimExchange) -> duckdb.DuckDBPyConnection:
    """Freeze the market, let the last frames land, stop the daemon, open its database."""
    sim.set_speed(0.0)
    time.sleep(1.0)
    assert d.ctl("stop").returncode == 0
    assert d.wait_exit() == 0
    return duckdb.connect(str(d.state / "bistoury.duckdb"), read_only=True)


def missing_minutes(con: duckdb.DuckDBPyConnection, coin: str) -> int:
    opens = [
        r[0]
        for r in con.execute(
            "SELECT open_ts_ms FROM candles WHERE coin = ? AND interval = '1m' ORDER BY 1", [coin]
        ).fetchall()
    ]
    missing = [a + 60_000 for a, b in itertools.pairwise(opens) if b - a > 60_000]
    if missing:  # say which, to make a failure readable
        print(f"{coin}: missing 1m bars after {missing}")
    return int((opens[-1] - opens[0]) // 60_000 + 1 - len(opens))


def test_stored_raw_messages_are_what_was_served_and_typed_rows_match(
    make_daemon: MakeDaemon, sim: SimExchange
) -> None:
    d = make_daemon(config=collect_config(sim.url)).start()
    assert d.ctl("collect", "--pairs", "BTC").returncode == 0
    collecting(d, at_least=40)
    con = stop_and_open(d, sim)

    served = [f.text for f in sim.sent_frames()]
    stored = [
        r[0]
        for r in con.execute(
            "SELECT text FROM raw_messages WHERE source = 'ws' ORDER BY seq"
        ).fetchall()
    ]
    assert len(stored) > 100
    assert stored == served  # byte for byte, in order, nothing missing or added

    frames = [json.loads(t) for t in served if t.startswith("{")]
    books = [m["data"] for m in frames if m.get("channel") == "l2Book"]
    rows = {
        (r[0], r[1]): r[2:]
        for r in con.execute(
            "SELECT coin, ts_ms, bid_px, bid_sz, bid_n, ask_px, ask_sz, ask_n FROM l2_snapshots"
        ).fetchall()
    }
    assert len(rows) == len({(b["coin"], b["time"]) for b in books})
    for book in books:
        typed = parse_ws_message({"channel": "l2Book", "data": book}, 0)[0]
        assert rows[(book["coin"], book["time"])] == (
            typed.bid_px,
            typed.bid_sz,
            typed.bid_n,
            typed.ask_px,
            typed.ask_sz,
            typed.ask_n,
        )

    tids = {t["tid"] for m in frames if m.get("channel") == "trades" for t in m["data"]}
    assert tids and tids == {r[0] for r in con.execute("SELECT tid FROM trades").fetchall()}

    # Candles: the last value of each bar, websocket or REST, in arrival order, wins.
    last: dict[tuple[str, str, int], tuple[float, ...]] = {}
    for source, text in con.execute(
        "SELECT source, text FROM raw_messages WHERE channel IN ('candle', 'candleSnapshot') "
        "ORDER BY seq"
    ).fetchall():
        msg = json.loads(text)
        bars = [msg["data"]] if source == "ws" else msg
        for bar in bars:
            c = parse_candle(bar)
            last[(c.coin, c.interval, c.open_ts_ms)] = (
                c.open_px,
                c.high_px,
                c.low_px,
                c.close_px,
                c.volume_sz,
            )
    table = {
        (r[0], r[1], r[2]): tuple(r[3:])
        for r in con.execute(
            "SELECT coin, interval, open_ts_ms, open_px, high_px, low_px, close_px, volume_sz "
            "FROM candles"
        ).fetchall()
    }
    assert len(table) > 60  # the backfilled hour and the live bars
    ws_keys = {k for k in last if k in table}
    assert ws_keys == set(table)
    for key, values in table.items():
        assert values == pytest.approx(last[key])
    assert missing_minutes(con, "BTC") == 0

    ctx_frames = [m for m in frames if m.get("channel") == "activeAssetCtx"]
    ctx_rows = con.execute("SELECT funding_rate, mark_px FROM asset_ctx ORDER BY ts_ms").fetchall()
    assert len(ctx_rows) == len(ctx_frames) > 0
    assert [r[1] for r in ctx_rows] == [float(m["data"]["ctx"]["markPx"]) for m in ctx_frames]
    assert con.execute("SELECT count(*) FROM funding_history").fetchone()[0] > 0


def test_a_dropped_websocket_is_replaced_and_the_gap_backfilled(
    make_daemon: MakeDaemon, sim: SimExchange
) -> None:
    sim.set_speed(60.0)  # a minute of market per second: a reconnect misses whole bars
    d = make_daemon(config=collect_config(sim.url)).start()
    assert d.ctl("collect", "--pairs", "BTC").returncode == 0
    collecting(d)
    before = d.status()["collection"]
    sim.go_away(3.0)  # drops the connection and refuses new ones for a while
    wait_for(lambda: d.status()["collection"]["ws_reconnects"] >= 1, 10, "a reconnect")
    wait_for(lambda: d.status()["collection"]["connected"], 20, "the new connection")
    after = d.status()["collection"]
    assert after["backfilled_candles"] > before["backfilled_candles"]
    alerts = [e for e in d.events() if e["kind"] == "alert"]
    assert any("Connection to HyperLiquid lost" in e["message"] for e in alerts)
    con = stop_and_open(d, sim)
    assert missing_minutes(con, "BTC") == 0
    served = {f.text for f in sim.sent_frames()}
    stored = {
        r[0] for r in con.execute("SELECT text FROM raw_messages WHERE source = 'ws'").fetchall()
    }
    assert stored == served


def test_a_30_second_stall_is_noticed_and_backfilled(
    make_daemon: MakeDaemon, sim: SimExchange
) -> None:
    d = make_daemon(config=collect_config(sim.url)).start()
    assert d.ctl("collect", "--pairs", "BTC").returncode == 0
    collecting(d)
    sim.stall_websockets(30.0)  # connections stay open and silent; 5 minutes of market pass
    wait_for(
        lambda: d.status()["collection"]["ws_reconnects"] >= 1,
        10,
        "the silence to be noticed (stale_after_s: 2)",
    )
    wait_for(
        lambda: (
            stream(d, "BTC", "l2Book").get("last_age_s", 99) < 1.0
            and d.status()["collection"]["connected"]
        ),
        45,
        "data again after the stall",
    )
    alerts = [e["message"] for e in d.events() if e["kind"] == "alert"]
    assert any("stale" in m for m in alerts), alerts
    con = stop_and_open(d, sim)
    assert missing_minutes(con, "BTC") == 0


def test_killing_the_recorder_mid_stream_loses_at_most_its_unwritten_batch(
    make_daemon: MakeDaemon, sim: SimExchange
) -> None:
    sim.set_speed(30.0)
    d = make_daemon(config=collect_config(sim.url)).start()
    assert d.ctl("collect", "--pairs", "BTC,ETH").returncode == 0
    collecting(d, at_least=30)
    recorder = next(a for a in d.status()["agents"] if a["name"] == "recorder")
    os.kill(recorder["pid"], signal.SIGKILL)
    killed_ms = time.time_ns() // 1_000_000

    def back() -> bool:
        now = next(a for a in d.status()["agents"] if a["name"] == "recorder")
        return bool(now["alive"] and now["pid"] != recorder["pid"])

    wait_for(back, 10, "a new recorder process")
    back_ms = time.time_ns() // 1_000_000
    collecting(d, at_least=60)
    con = stop_and_open(d, sim)
    frames = sim.sent_frames()
    stored = {
        r[0] for r in con.execute("SELECT text FROM raw_messages WHERE source = 'ws'").fetchall()
    }
    # Everything sent once the recorder was dead, including while it was restarting,
    # waited in the store channel and is there. (Allow half a second: until ZeroMQ sees
    # the dead peer it may still hand it a few messages, which are in flight too.)
    noticed_ms = killed_ms + 500
    during = [f for f in frames if noticed_ms < f.wall_ts_ms < back_ms]
    after_kill = [f for f in frames if f.wall_ts_ms > noticed_ms]
    assert during, "the test needs frames sent while the recorder was down"
    assert [f.seq for f in after_kill if f.text not in stored] == []
    # ... and what is lost is what the killed recorder had taken and not yet committed.
    lost = [f for f in frames if f.text not in stored]
    assert all(f.wall_ts_ms <= noticed_ms for f in lost)
    assert con.execute("SELECT max(version) FROM schema_version").fetchone()[0] >= 2
    assert missing_minutes(con, "BTC") == 0


def test_pause_and_resume_collection(make_daemon: MakeDaemon, sim: SimExchange) -> None:
    d = make_daemon(config=collect_config(sim.url)).start()
    assert d.ctl("collect", "--pairs", "BTC").returncode == 0
    collecting(d)
    assert d.ctl("pause", "collect").returncode == 0
    wait_for(lambda: not d.status()["collection"]["connected"], 10, "the collector to disconnect")
    paused_at = stream(d, "BTC", "l2Book")["messages"]
    time.sleep(1.5)
    assert stream(d, "BTC", "l2Book")["messages"] == paused_at
    assert d.ctl("resume", "collect").returncode == 0
    collecting(d, at_least=paused_at + 10)
    assert d.status()["collection"]["ws_reconnects"] == 0  # a pause is not a failure


def test_reload_adds_and_removes_pairs_without_restarting_the_collector(
    make_daemon: MakeDaemon, sim: SimExchange
) -> None:
    d = make_daemon(config=collect_config(sim.url) + "trading:\n  pairs: [BTC]\n").start()
    assert d.ctl("collect").returncode == 0  # no --pairs: trading.pairs from the config
    collecting(d, "BTC")
    collector = next(a for a in d.status()["agents"] if a["name"] == "collector")
    d.config.write_text(collect_config(sim.url) + "trading:\n  pairs: [ETH]\n")
    assert d.ctl("reload").returncode == 0
    collecting(d, "ETH")
    btc = stream(d, "BTC", "l2Book")["messages"]
    time.sleep(1.5)
    assert stream(d, "BTC", "l2Book")["messages"] == btc  # unsubscribed
    after = next(a for a in d.status()["agents"] if a["name"] == "collector")
    assert (after["pid"], after["restarts"]) == (collector["pid"], 0)
    assert d.status()["collection"]["ws_reconnects"] == 0


def test_retention_moves_old_rows_to_parquet_and_queries_still_see_them(
    make_daemon: MakeDaemon, sim: SimExchange
) -> None:
    # The replayed market is from 2025: with one day of retention every book and trade is
    # old enough to move at the first retention run (the shortest interval is 10 s).
    retention = (
        "storage:\n  batch_max_ms: 50\n  retention_interval_s: 10\n"
        "  retention:\n    l2_snapshots: 1\n    trades: 1\n"
    )
    config = collect_config(sim.url).replace("storage:\n  batch_max_ms: 50\n", retention)
    d = make_daemon(config=config).start()
    assert d.ctl("collect", "--pairs", "BTC").returncode == 0
    collecting(d)
    wait_for(
        lambda: d.status()["collection"]["storage_bytes"].get("parquet", 0) > 0,
        30,
        "rows to move to Parquet",
    )
    con = stop_and_open(d, sim)
    served = [json.loads(f.text) for f in sim.sent_frames() if f.text.startswith("{")]
    books = {(m["data"]["coin"], m["data"]["time"]) for m in served if m.get("channel") == "l2Book"}
    in_parquet = (
        con.execute("SELECT count(*) FROM l2_snapshots_all").fetchone()[0]
        - con.execute("SELECT count(*) FROM l2_snapshots").fetchone()[0]
    )
    assert in_parquet > 0
    assert con.execute("SELECT count(*) FROM l2_snapshots_all").fetchone()[0] == len(books)
    assert list((d.state / "parquet").rglob("*.parquet"))


def _try_open(path: Path) -> duckdb.DuckDBPyConnection | None:
    from bistouryd.storage.db import StorageError, open_db

    try:
        return open_db(path)
    except StorageError as exc:
        if "in use" in exc.message:
            return None
        raise


def test_killing_the_whole_daemon_while_writing_leaves_a_usable_database(
    make_daemon: MakeDaemon, sim: SimExchange
) -> None:
    from bistouryd.storage.db import schema_version

    sim.set_speed(60.0)
    d = make_daemon(config=collect_config(sim.url)).start()
    assert d.ctl("collect", "--pairs", "BTC,ETH").returncode == 0
    collecting(d, at_least=50)
    d.kill_all()  # SIGKILL to the orchestrator and every agent at once, mid-stream
    assert d.processes() == []
    # Opens read-write and replays its WAL (the kernel may take a moment to drop the
    # killed recorder's file lock).
    con = wait_for(lambda: _try_open(d.state / "bistoury.duckdb"), 5, "the file lock to go")
    try:
        assert schema_version(con) >= 2
        for table in ("raw_messages", "l2_snapshots", "candles", "sys_events"):
            assert con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] > 0, table
    finally:
        con.close()
    d.start()  # and the daemon starts again on it
    assert d.ctl("collect", "--pairs", "BTC").returncode == 0
    collecting(d, at_least=5)


def test_an_unreachable_exchange_is_reported_and_retried(make_daemon: MakeDaemon) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    d = make_daemon(config=collect_config(url)).start()
    assert d.ctl("collect", "--pairs", "BTC").returncode == 0
    wait_for(lambda: d.status()["collection"]["ws_reconnects"] >= 2, 20, "retries")
    alerts = [e["message"] for e in d.events() if e["kind"] == "alert"]
    assert any(m.startswith("Connection to HyperLiquid failed") and url in m for m in alerts)
    assert "Traceback" not in d.log_file.read_text()
    status = d.status()
    assert status["ready"] and not status["collection"]["connected"]


def test_a_failed_backfill_is_retried_until_the_gap_is_filled(
    make_daemon: MakeDaemon, sim: SimExchange
) -> None:
    sim.set_speed(60.0)
    d = make_daemon(config=collect_config(sim.url)).start()
    assert d.ctl("collect", "--pairs", "BTC").returncode == 0
    collecting(d)
    # The next candle backfills (one per interval) answer 500, then the exchange recovers.
    sim.fail_http(500, count=3, info_types=frozenset({"candleSnapshot"}))
    sim.go_away(3.0)  # three minutes of market pass while the collector is cut off
    wait_for(
        lambda: any(
            "Candle backfill of BTC" in e["message"] for e in d.events() if e["kind"] == "alert"
        ),
        15,
        "the failed backfill",
    )
    wait_for(
        lambda: (f := sim.status()["faults"]["http_error"]) is None or f["remaining"] == 0,
        15,
        "the faults to be used up",
    )
    time.sleep(7)  # the retry comes within BACKFILL_RETRY_S (5 s)
    con = stop_and_open(d, sim)
    assert missing_minutes(con, "BTC") == 0
