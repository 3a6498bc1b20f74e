"""A real writer process, killed with SIGKILL in the middle of writing, several times:
the file opens read-write afterwards, its schema is intact, and every batch is either
all there (in every table it touched) or not at all."""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bistouryd.storage.db import bundled_migrations, open_db, schema_version

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000
TRADES_PER_BATCH = 1000
RAW_PER_BATCH = 20
BOOKS_PER_BATCH = 5

WRITER = textwrap.dedent(
    f"""
    import sys
    from pathlib import Path
    from bistouryd.market import Candle, FundingRate, L2Book, RawMessage, Trade, Trades
    from bistouryd.storage.db import open_db
    from bistouryd.storage.marketdata import write_batch

    T0 = {T0}
    con = open_db(Path(sys.argv[1]))
    b = int(sys.argv[2])
    while True:
        items = [
            Trades(coin="BTC", trades=[
                Trade(coin="BTC", ts_ms=T0 + b * 1000 + i, px=100.0, sz=1.0, side="buy",
                      tid=b * {TRADES_PER_BATCH} + i, hash="0x")
                for i in range({TRADES_PER_BATCH})
            ]),
            Candle(coin="BTC", interval="1m", open_ts_ms=T0 + b * 60_000,
                   close_ts_ms=T0 + b * 60_000 + 59_999, open_px=1, high_px=1, low_px=1,
                   close_px=1, volume_sz=0, trades_n=b),
            FundingRate(coin="BTC", ts_ms=T0 + b, funding_rate=0.0),
        ]
        items += [RawMessage(received_ts_ms=T0 + b, source="ws", channel="trades",
                             coin="BTC", text=f"batch {{b}}") for _ in range({RAW_PER_BATCH})]
        items += [L2Book(coin="BTC", ts_ms=T0 + b * 10 + k, bid_px=[1.0] * 20,
                         bid_sz=[float(b)] * 20, bid_n=[1] * 20, ask_px=[2.0] * 20,
                         ask_sz=[float(b)] * 20, ask_n=[1] * 20)
                  for k in range({BOOKS_PER_BATCH})]
        write_batch(con, items)
        print(b, flush=True)
        b += 1
    """
)


def run_until_killed(db: Path, start: int, rng: random.Random) -> int:
    """Start a writer at batch ``start``, SIGKILL it after a random number of committed
    batches (and a random extra delay, so mid-batch); return the last batch it reported."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db), str(start)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    wanted = rng.randint(3, 12)
    last = start - 1
    deadline = time.monotonic() + 30
    try:
        while last - start + 1 < wanted:
            if time.monotonic() > deadline or proc.poll() is not None:
                err = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
                pytest.fail(f"writer stalled or died (rc {proc.poll()}): {err[-2000:]}")
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if ready:
                line = proc.stdout.readline()
                if line:
                    last = int(line)
        time.sleep(rng.uniform(0, 0.03))  # somewhere inside the next batch
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        # A batch reported just before the kill is still in the pipe.
        for line in proc.stdout.read().split():
            last = int(line)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return last


def batches(db: Path) -> tuple[int, set[int]]:
    """(schema version, batch ids present); asserts each batch is whole everywhere."""
    con = open_db(db)  # read-write: replays the WAL
    try:
        version = schema_version(con)

        def per_batch(sql: str) -> dict[int, int]:
            return {int(b): int(n) for b, n in con.execute(sql).fetchall()}

        trades = per_batch(f"SELECT tid // {TRADES_PER_BATCH}, count(*) FROM trades GROUP BY 1")
        raw = per_batch(
            "SELECT CAST(split_part(text, ' ', 2) AS BIGINT), count(*) FROM raw_messages GROUP BY 1"
        )
        books = per_batch(
            f"SELECT (ts_ms - {T0}) // 10, count(*) FROM l2_snapshots "
            "WHERE bid_sz[1] = (ts_ms - {T0}) // 10 GROUP BY 1".replace("{T0}", str(T0))
        )
        candles = per_batch("SELECT trades_n, count(*) FROM candles GROUP BY 1")
        funding = per_batch(f"SELECT ts_ms - {T0}, count(*) FROM funding_history GROUP BY 1")
    finally:
        con.close()
    assert set(trades.values()) <= {TRADES_PER_BATCH}, "a batch's trades are partly there"
    assert set(raw.values()) <= {RAW_PER_BATCH}, "a batch's raw messages are partly there"
    assert set(books.values()) <= {BOOKS_PER_BATCH}, "a batch's books are partly there"
    assert set(candles.values()) <= {1} and set(funding.values()) <= {1}
    ids = set(trades)
    assert set(raw) == set(books) == set(candles) == set(funding) == ids, (
        "a batch is in some tables and not in others"
    )
    return version, ids


def test_kill_9_never_leaves_half_a_batch(tmp_path: Path) -> None:
    db = tmp_path / "crash.duckdb"
    rng = random.Random(20240131)
    start = 0
    for _ in range(5):
        last = run_until_killed(db, start, rng)
        version, ids = batches(db)
        assert version == len(bundled_migrations())
        assert ids == set(range(len(ids))), "batches are missing in the middle"
        assert last in ids, "a batch reported committed was lost"
        assert max(ids) <= last + 1
        start = max(ids) + 1
    assert start >= 15
