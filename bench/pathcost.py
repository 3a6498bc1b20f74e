"""CPU per frame of each step of the ingest path, in process, on frames from the run.

The collector and the recorder are measured as processes (psutil) while the firehose
runs; this splits that cost into the steps the code takes for every websocket frame, so
a suggestion can say what it saves. Each step runs over the same sample of the run's
frames (its last ``SAMPLE`` JSON frames, so the mix is the firehose's) and the best of
``REPEAT`` runs is kept. What the steps do not add up to is the machinery between them:
threads and the GIL, the event loops, ZeroMQ sends and receives, socket reads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

from bistouryd import bus
from bistouryd.market import MarketEvent, RawMessage, parse_ws_message, ws_channel_coin
from bistouryd.storage.marketdata import BatchQueue

SAMPLE = 5000
REPEAT = 3


def _texts(run_db: Path) -> list[tuple[int, str]]:
    con = duckdb.connect(str(run_db), read_only=True)
    try:
        rows = con.execute(
            "SELECT received_ts_ms, text FROM raw_messages WHERE source = 'ws' "
            "AND starts_with(text, '{') ORDER BY seq DESC LIMIT ?",
            [SAMPLE],
        ).fetchall()
    finally:
        con.close()
    return [(int(ts), str(text)) for ts, text in reversed(rows)]


def _best_us(fn: Callable[[], Any], n: int) -> float:
    best = float("inf")
    for _ in range(REPEAT):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return round(best / n * 1e6, 2)


def measure(run_db: Path) -> dict[str, Any]:
    """µs per frame of each step, collector side then recorder side."""
    frames = _texts(run_db)
    n = len(frames)
    if not n:
        return {}
    texts = [t for _, t in frames]
    data = [t.encode() for t in texts]
    msgs = [json.loads(t) for t in texts]
    raws = [
        RawMessage(received_ts_ms=ts, source="ws", channel=cc[0], coin=cc[1], text=t)
        for (ts, t), cc in zip(frames, (ws_channel_coin(m) for m in msgs), strict=True)
    ]
    events: list[MarketEvent] = [
        e for m, (ts, _) in zip(msgs, frames, strict=True) for e in _parse(m, ts)
    ]
    raw_frames = [bus.encode("collector", 1, i, r) for i, r in enumerate(raws)]
    event_frames = [bus.encode("collector", 1, i, e) for i, e in enumerate(events)]
    steps: dict[str, float] = {}
    try:
        from websocket._utils import validate_utf8  # the SDK's websocket-client
    except ImportError:  # pragma: no cover - the SDK depends on it
        pass
    else:
        steps["collector: UTF-8 check of websocket-client (pure Python)"] = _best_us(
            lambda: [validate_utf8(b) for b in data], n
        )
    steps["collector: bytes.decode (C, what skip_utf8_validation leaves)"] = _best_us(
        lambda: [b.decode() for b in data], n
    )
    name, loads = _frame_parser()
    steps[f"collector: {name}"] = _best_us(lambda: [loads(t) for t in texts], n)
    steps["collector: ws_channel_coin + RawMessage(...)"] = _best_us(
        lambda: [
            RawMessage(received_ts_ms=1, source="ws", channel=c, coin=k, text=t)
            for t, (c, k) in zip(texts, (ws_channel_coin(m) for m in msgs), strict=True)
        ],
        n,
    )
    steps["collector: bus.encode of the raw copy"] = _best_us(
        lambda: [bus.encode("collector", 1, 1, r) for r in raws], n
    )
    steps["collector: parse_ws_message"] = _best_us(
        lambda: [parse_ws_message(m, 1) for m in msgs], n
    )
    steps["collector: bus.encode of the events, twice (store + bus)"] = _best_us(
        lambda: [(bus.encode("c", 1, 1, e), bus.encode("c", 1, 1, e)) for e in events], n
    )
    steps["recorder: bus.decode of the raw copy"] = _best_us(
        lambda: [bus.decode(f) for f in raw_frames], n
    )
    steps["recorder: bus.decode of the events"] = _best_us(
        lambda: [bus.decode(f) for f in event_frames], n
    )
    queue = BatchQueue(5000, 250, 10 * (n + len(events)) * 10)
    steps["recorder: BatchQueue.offer, both"] = _best_us(
        lambda: [queue.offer(x, 1) for x in [*raws, *events]], n
    )
    return {
        "frames": n,
        "mean_frame_bytes": round(sum(len(b) for b in data) / n, 1),
        "events_per_frame": round(len(events) / n, 3),
        "us_per_frame": steps,
    }


def _frame_parser() -> tuple[str, Callable[[str], Any]]:
    """The JSON parser the collector uses for frames (it moved to orjson at some point)."""
    from bistouryd.agents import collector

    fast = getattr(collector, "orjson", None)
    return ("orjson.loads", fast.loads) if fast is not None else ("json.loads", json.loads)


def _parse(msg: Any, ts: int) -> list[MarketEvent]:
    return parse_ws_message(msg, ts) if isinstance(msg, dict) else []
