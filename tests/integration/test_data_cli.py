"""``bistoury data status | export | import`` as a user runs them: the real client
process on a hand-built DuckDB file, and against a running daemon."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest

from bistouryd.market import Candle, FundingRate, L2Book, Trade, Trades
from bistouryd.storage.db import open_db
from bistouryd.storage.marketdata import write_batch
from bistouryd.storage.retention import RetentionSettings, run_retention
from tests.conftest import BISTOURYCTL, Daemon

pytestmark = pytest.mark.integration

DAY = 86_400_000
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
MIN = 60_000
HOUR = 3_600_000


def ctl(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BISTOURY_SOCKET"}
    env["XDG_CONFIG_HOME"] = str(tmp / "xdg-config")  # no user config file is read
    return subprocess.run([BISTOURYCTL, *args], capture_output=True, text=True, timeout=60, env=env)


def offline(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """With a control socket that nothing listens on: the daemon is "not running"."""
    return ctl(tmp, *args, "--socket", str(tmp / "nobody.sock"))


def candle(coin: str, minute: int, close: float = 1.0) -> Candle:
    start = T0 + minute * MIN
    return Candle(
        coin=coin,
        interval="1m",
        open_ts_ms=start,
        close_ts_ms=start + MIN - 1,
        open_px=1.0,
        high_px=2.0,
        low_px=0.5,
        close_px=close,
        volume_sz=1.5,
        trades_n=3,
    )


def build(tmp: Path) -> Path:
    """BTC 1m candles for minutes 0..9 of 2024-01-01 without 3, 4, 7 (2 gaps, 3 missing),
    ETH 1m candles on 2024-01-01 and 2024-01-05, hourly funding without one hour, books with
    one 2-minute silence, and trades on 3 days of which the first two moved to Parquet."""
    db = tmp / "state" / "bistoury.duckdb"
    con = open_db(db)
    items: list[object] = [candle("BTC", m, close=1.0 + m) for m in range(10) if m not in (3, 4, 7)]
    items += [candle("ETH", 0), candle("ETH", 1), candle("ETH", 4 * 24 * 60)]
    items += [
        FundingRate(coin="BTC", ts_ms=T0 + h * HOUR + 65, funding_rate=1.25e-5)
        for h in range(6)
        if h != 2
    ]
    items += [
        L2Book(
            coin="BTC",
            ts_ms=T0 + s * 1000,
            bid_px=[1.0],
            bid_sz=[1.0],
            bid_n=[1],
            ask_px=[1.1],
            ask_sz=[2.0],
            ask_n=[1],
        )
        for s in [*range(0, 30), *range(150, 160)]
    ]
    for day in range(3):
        items.append(
            Trades(
                coin="SOL",
                trades=[
                    Trade(
                        coin="SOL",
                        ts_ms=T0 + day * DAY + i * 1000,
                        px=20.0 + i,
                        sz=1.0,
                        side="sell",
                        tid=day * 100 + i,
                        hash="0xfeed",
                    )
                    for i in range(10)
                ],
            )
        )
    write_batch(con, items)  # type: ignore[arg-type]
    settings = RetentionSettings(keep_days={"trades": 1}, parquet_dir=db.parent / "parquet")
    report = run_retention(con, T0 + 3 * DAY + HOUR, settings)  # keeps 2024-01-03
    assert report.moved_rows == 20
    con.close()
    return db


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return build(tmp_path)


def series(status: dict[str, Any], table: str, coin: str) -> dict[str, Any]:
    found = [s for s in status["series"] if s["table"] == table and s["coin"] == coin]
    assert len(found) == 1, found
    result: dict[str, Any] = found[0]
    return result


def test_status_counts_and_gaps(tmp_path: Path, db: Path) -> None:
    done = offline(tmp_path, "data", "status", "--db", str(db), "--json")
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["schema_version"] >= 2
    assert status["db_bytes"] > 0 and status["parquet_bytes"] > 0
    btc = series(status, "candles", "BTC")
    assert btc["interval"] == "1m" and btc["rows"] == 7
    assert (btc["first_ts_ms"], btc["last_ts_ms"]) == (T0, T0 + 9 * MIN)
    assert (btc["gaps_n"], btc["missing_n"]) == (2, 3)
    assert btc["gaps"] == [
        {"after_ts_ms": T0 + 6 * MIN, "before_ts_ms": T0 + 8 * MIN, "missing_n": 1},
        {"after_ts_ms": T0 + 2 * MIN, "before_ts_ms": T0 + 5 * MIN, "missing_n": 2},
    ]
    eth = series(status, "candles", "ETH")
    assert (eth["gaps_n"], eth["missing_n"]) == (1, 4 * 24 * 60 - 2)
    funding = series(status, "funding_history", "BTC")
    assert (funding["rows"], funding["gaps_n"], funding["missing_n"]) == (5, 1, 1)
    books = series(status, "l2_snapshots", "BTC")
    assert (books["gaps_n"], books["missing_n"]) == (1, None)
    assert books["gaps"][0]["before_ts_ms"] - books["gaps"][0]["after_ts_ms"] == 121_000
    sol = series(status, "trades", "SOL")
    assert (sol["rows"], sol["rows_db"], sol["rows_parquet"]) == (30, 10, 20)
    assert sol["gaps_checked"] is False and sol["parquet_bytes"] > 0
    assert status["tables"]["trades"] == 30

    # Only recent gaps when asked; the counts still cover everything.
    since = "2024-01-03"
    recent = json.loads(
        offline(tmp_path, "data", "status", "--db", str(db), "--json", "--since", since).stdout
    )
    assert series(recent, "candles", "BTC")["gaps_n"] == 0
    assert series(recent, "candles", "BTC")["rows"] == 7

    human = offline(tmp_path, "data", "status", "--db", str(db))
    assert human.returncode == 0, human.stderr
    out = human.stdout
    assert "candles 1m" in out and "2 (3 missing)" in out
    assert "2024-01-01 00:06:00 → 2024-01-01 00:08:00 (2m 00s, 1 missing)" in out
    assert "funding_history" in out and "trades" in out


def test_status_from_the_state_dir(tmp_path: Path, db: Path) -> None:
    done = offline(tmp_path, "data", "status", "--state-dir", str(db.parent), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["tables"]["trades"] == 30
    config = tmp_path / "config.yaml"
    config.write_text("storage:\n  path: other.duckdb\n")
    missing = offline(
        tmp_path, "data", "status", "--state-dir", str(db.parent), "--config", str(config)
    )
    assert missing.returncode == 1
    assert missing.stderr.startswith(f"ERROR: no database at {db.parent / 'other.duckdb'}")
    assert "  → start the daemon once" in missing.stderr
    assert "Traceback" not in missing.stderr


@pytest.mark.parametrize("fmt", ["parquet", "csv", "json"])
def test_export_reads_back(tmp_path: Path, db: Path, fmt: str) -> None:
    out = tmp_path / f"out.{fmt}"
    args = [
        "data",
        "export",
        "--db",
        str(db),
        "--table",
        "trades",
        "--coin",
        "SOL",
        "--from",
        "2024-01-01",
        "--to",
        "2024-01-02",
        "--format",
        fmt,
        "--out",
        str(out),
    ]
    done = offline(tmp_path, *args, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["rows"] == 20  # both days, from Parquet (retention moved them)
    if fmt == "parquet":
        got = duckdb.connect().execute(f"SELECT tid, px, side FROM '{out}'").fetchall()
    elif fmt == "csv":
        with open(out, newline="") as f:
            got = [(int(r["tid"]), float(r["px"]), r["side"]) for r in csv.DictReader(f)]
    else:
        got = [
            (r["tid"], r["px"], r["side"]) for r in map(json.loads, out.read_text().splitlines())
        ]
    assert got == [(d * 100 + i, 20.0 + i, "sell") for d in range(2) for i in range(10)]
    again = offline(tmp_path, *args)
    assert again.returncode == 1 and f"ERROR: {out} exists" in again.stderr
    assert offline(tmp_path, *args, "--force").returncode == 0


def test_export_l2_lists_and_candles(tmp_path: Path, db: Path) -> None:
    out = tmp_path / "books.json"
    done = offline(
        tmp_path,
        "data",
        "export",
        "--db",
        str(db),
        "--table",
        "l2_snapshots",
        "--format",
        "json",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    first = json.loads(out.read_text().splitlines()[0])
    assert first == {
        "coin": "BTC",
        "ts_ms": T0,
        "bid_px": [1.0],
        "bid_sz": [1.0],
        "bid_n": [1],
        "ask_px": [1.1],
        "ask_sz": [2.0],
        "ask_n": [1],
    }
    out = tmp_path / "c.csv"
    done = offline(
        tmp_path,
        "data",
        "export",
        "--db",
        str(db),
        "--table",
        "candles",
        "--from",
        "2024-01-01T00:05",
        "--to",
        "2024-01-01T00:09",
        "--format",
        "csv",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    assert "exported 3 rows of candles" in done.stdout  # BTC 5, 6, 8 (the end is exclusive)
    bad = offline(
        tmp_path,
        "data",
        "export",
        "--db",
        str(db),
        "--table",
        "candles",
        "--from",
        "yesterday",
        "--out",
        str(out),
    )
    assert bad.returncode == 2 and "not a date" in bad.stderr


def test_import_through_the_cli(tmp_path: Path, db: Path) -> None:
    lines = [
        json.dumps(
            {
                "time": f"2024-01-01T00:00:0{i}.1",
                "ver_num": 1,
                "raw": {
                    "channel": "l2Book",
                    "data": {
                        "coin": "ETH",
                        "time": T0 + i * 1000,
                        "levels": [
                            [{"px": "2300.5", "sz": "1", "n": 2}],
                            [{"px": "2301", "sz": "3.5", "n": 1}],
                        ],
                    },
                },
            }
        )
        for i in range(3)
    ]
    path = tmp_path / "archive" / "20240101" / "0" / "l2Book" / "ETH"
    path.parent.mkdir(parents=True)
    path.write_text("\n".join([lines[0], "garbage", *lines[1:]]) + "\n")
    done = offline(tmp_path, "data", "import", "--db", str(db), str(tmp_path / "archive"))
    assert done.returncode == 0, done.stderr
    assert "imported" in done.stdout and "l2_snapshots +3" in done.stdout
    assert f"WARNING: {path}:2: not JSON" in done.stderr
    again = offline(tmp_path, "data", "import", "--db", str(db), str(path), "--json")
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout)
    assert result["files"][0]["status"] == "skipped" and result["written"] == {}
    none = offline(tmp_path, "data", "import", "--db", str(db), str(tmp_path / "nope.lz4"))
    assert none.returncode == 1
    assert "ERROR: " in none.stderr and "no such file" in none.stderr
    assert "Traceback" not in none.stderr


def test_refused_while_the_daemon_runs(
    tmp_path: Path, db: Path, make_daemon: Callable[..., Daemon]
) -> None:
    daemon = make_daemon().start()
    sock = str(daemon.socket)
    data_file = tmp_path / "f.json"
    data_file.write_text("[]")
    for args in (
        ["data", "import", str(data_file)],
        ["data", "export", "--table", "trades", "--out", str(tmp_path / "x.parquet")],
    ):
        done = ctl(tmp_path, *args, "--db", str(db), "--socket", sock)
        assert done.returncode == 1, done.stdout
        lines = done.stderr.splitlines()
        assert lines[0].startswith(f"ERROR: bistouryd is running (it answered at {sock})")
        assert lines[1] == "  → stop the daemon first: bistouryctl stop, then run this again"
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "x.parquet").exists()
    # status goes through the daemon, which asks its recorder.
    status = ctl(tmp_path, "data", "status", "--socket", sock, "--json")
    assert status.returncode == 0, status.stderr
    answer = json.loads(status.stdout)
    assert answer["db_path"] == str(daemon.state / "bistoury.duckdb")
    assert answer["schema_version"] >= 2 and "series" in answer
