"""The websocket endpoint (``GET /ws``): subscriptions, fan-out, and a log of every frame sent.

Protocol as the real server speaks it (HYPERLIQUID.md §a; hyperliquid-dex/order_book_server):
the text ``Websocket connection established.`` on connect, ``subscriptionResponse`` acks,
``{"channel":"pong"}`` for ``{"method":"ping"}``, ``{"channel":"error","data":...}`` with the
order book server's wording for bad requests. Each connection has a bounded send queue; a
client that does not keep up is disconnected (the real server drops slow clients too). Every
frame actually written is recorded, byte for byte, in ``SentLog`` so tests can compare what a
client stored with what was served.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from aiohttp import WSMsgType, web

from bistouryd.market import INTERVAL_MS
from bistouryd.simexchange.faults import Faults

log = logging.getLogger(__name__)

SubKey = tuple[str, ...]
GREETING = "Websocket connection established."
USER_CHANNELS = ("userFills", "orderUpdates", "userEvents")
# How long a full queue may stay full at max replay speed before its client is dropped.
DRAIN_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class SentFrame:
    """One websocket frame as written to a client."""

    seq: int
    conn_id: int
    wall_ts_ms: int
    replay_ts_ms: int
    text: str


class SentLog:
    """The last ``size`` frames sent, and optionally every frame as NDJSON in a file."""

    def __init__(self, size: int, path: Path | None = None) -> None:
        self._frames: deque[SentFrame] = deque(maxlen=size)
        self.next_seq = 1
        self._file: IO[str] | None = None
        if path is not None:
            self._file = path.open("a", encoding="utf-8", buffering=1)

    def add(self, conn_id: int, replay_ts_ms: int, text: str) -> None:
        frame = SentFrame(self.next_seq, conn_id, int(time.time() * 1000), replay_ts_ms, text)
        self.next_seq += 1
        self._frames.append(frame)
        if self._file is not None:
            line = {
                "seq": frame.seq,
                "conn": conn_id,
                "wall_ms": frame.wall_ts_ms,
                "replay_ms": replay_ts_ms,
                "text": text,
            }
            self._file.write(json.dumps(line, separators=(",", ":")) + "\n")

    @property
    def oldest_seq(self) -> int:
        return self._frames[0].seq if self._frames else self.next_seq

    def since(
        self, seq: int = 0, conn_id: int | None = None, limit: int | None = None
    ) -> list[SentFrame]:
        """Frames with a sequence number of at least ``seq`` (optionally of one connection)."""
        start = max(0, seq - self.oldest_seq)
        found = [
            f
            for i, f in enumerate(self._frames)
            if i >= start and (conn_id is None or f.conn_id == conn_id)
        ]
        return found if limit is None else found[:limit]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclass
class Connection:
    id: int
    peer: str
    ws: web.WebSocketResponse
    transport: asyncio.Transport | None
    queue: asyncio.Queue[str]
    opened_wall_ms: int
    subs: set[SubKey] = field(default_factory=set)
    closed_wall_ms: int | None = None
    close_reason: str = ""


class WsHub:
    def __init__(
        self,
        faults: Faults,
        sent: SentLog,
        replay_now_ms: Callable[[], int],
        coins: Callable[[], Collection[str]],
        snapshot: Callable[[SubKey], str | None],
        queue_max: int,
    ) -> None:
        self.faults = faults
        self.sent = sent
        self._replay_now = replay_now_ms
        self._coins = coins
        self._snapshot = snapshot
        self._queue_max = queue_max
        self._conns: dict[int, Connection] = {}
        self._index: dict[SubKey, set[int]] = {}
        self._candles: dict[str, set[str]] = {}
        self._closed: deque[Connection] = deque(maxlen=100)
        self._next_id = 0
        self.accepted = 0

    # -- Publisher --------------------------------------------------------------------------

    def wants(self, key: SubKey) -> bool:
        return bool(self._index.get(key))

    def publish(self, key: SubKey, text: str) -> None:
        for conn_id in list(self._index.get(key, ())):
            self._enqueue(self._conns[conn_id], text)

    def candle_intervals(self, coin: str) -> list[str]:
        return sorted(self._candles.get(coin, ()))

    async def drained(self) -> None:
        """Wait until every client has caught up (a client stuck for ``DRAIN_TIMEOUT_S`` is
        dropped), so a replay at max speed goes as fast as its subscribers, not faster."""
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        low = self._queue_max // 4
        while True:
            behind = [c for c in self._conns.values() if c.queue.qsize() > low]
            if not behind:
                return
            if time.monotonic() > deadline:
                for conn in behind:
                    self._abort(conn, "slow consumer")
                return
            await asyncio.sleep(0.005)

    # -- connections ------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._next_id += 1
        self.accepted += 1
        peer = request.transport.get_extra_info("peername") if request.transport else None
        conn = Connection(
            id=self._next_id,
            peer=f"{peer[0]}:{peer[1]}" if peer else "?",
            ws=ws,
            transport=request.transport,
            queue=asyncio.Queue(),
            opened_wall_ms=int(time.time() * 1000),
        )
        self._conns[conn.id] = conn
        log.debug("ws %d open from %s", conn.id, conn.peer)
        self._enqueue(conn, GREETING)
        writer = asyncio.create_task(self._write(conn))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._on_text(conn, msg.data)
                elif msg.type != WSMsgType.ERROR:
                    break
        finally:
            writer.cancel()
            self._forget(conn, conn.close_reason or "closed by client")
        return ws

    async def drop_all(self, graceful: bool = False) -> int:
        """Close every connection: abruptly (TCP reset, no close frame) or with ``1001``."""
        conns = list(self._conns.values())
        for conn in conns:
            if graceful:
                conn.close_reason = "dropped (admin, close frame)"
                await conn.ws.close(code=1001, message=b"going away")
            else:
                self._abort(conn, "dropped (admin)")
        return len(conns)

    def status(self) -> dict[str, Any]:
        def describe(c: Connection) -> dict[str, Any]:
            return {
                "id": c.id,
                "peer": c.peer,
                "opened_ms": c.opened_wall_ms,
                "closed_ms": c.closed_wall_ms,
                "close_reason": c.close_reason or None,
                "subscriptions": [list(k) for k in sorted(c.subs)],
                "queued": c.queue.qsize(),
            }

        return {
            "accepted": self.accepted,
            "open": [describe(c) for c in self._conns.values()],
            "recently_closed": [describe(c) for c in self._closed],
            "frames_sent": self.sent.next_seq - 1,
        }

    # -- internals --------------------------------------------------------------------------

    def _enqueue(self, conn: Connection, text: str) -> None:
        if conn.queue.qsize() >= self._queue_max:
            self._abort(conn, f"slow consumer ({self._queue_max} frames queued)")
            return
        conn.queue.put_nowait(text)

    async def _write(self, conn: Connection) -> None:
        try:
            while True:
                text = await conn.queue.get()
                if self.faults.ws_stalled():
                    self.faults.stalled_frames += 1
                    continue
                await conn.ws.send_str(text)
                self.sent.add(conn.id, self._replay_now(), text)
        except (ConnectionError, RuntimeError) as exc:
            log.debug("ws %d: send failed: %s", conn.id, exc)

    def _abort(self, conn: Connection, reason: str) -> None:
        conn.close_reason = conn.close_reason or reason
        if conn.transport is not None:
            conn.transport.abort()
        self._forget(conn, reason)

    def _forget(self, conn: Connection, reason: str) -> None:
        if self._conns.pop(conn.id, None) is None:
            return
        for key in conn.subs:
            self._unindex(conn, key)
        conn.closed_wall_ms = int(time.time() * 1000)
        conn.close_reason = conn.close_reason or reason
        self._closed.append(conn)
        log.debug("ws %d closed: %s", conn.id, conn.close_reason)

    def _error(self, conn: Connection, text: str) -> None:
        self._enqueue(conn, json.dumps({"channel": "error", "data": text}, separators=(",", ":")))

    def _on_text(self, conn: Connection, text: str) -> None:
        try:
            msg = json.loads(text)
        except json.JSONDecodeError:
            msg = None
        method = msg.get("method") if isinstance(msg, dict) else None
        if method == "ping":
            self._enqueue(conn, '{"channel":"pong"}')
            return
        if method not in ("subscribe", "unsubscribe") or "subscription" not in msg:
            self._error(conn, f"Error parsing JSON into valid websocket request: {text}")
            return
        sub = msg["subscription"]
        shown = json.dumps(sub, separators=(",", ":"))
        parsed = self._parse(sub)
        if parsed is None:
            self._error(conn, f"Invalid subscription: {shown}")
            return
        key, echo = parsed
        if method == "subscribe":
            if key in conn.subs:
                self._error(conn, f"Already subscribed: {shown}")
                return
            conn.subs.add(key)
            self._index.setdefault(key, set()).add(conn.id)
            if key[0] == "candle":
                self._candles.setdefault(key[1], set()).add(key[2])
        else:
            if key not in conn.subs:
                self._error(conn, f"Already unsubscribed: {shown}")
                return
            conn.subs.discard(key)
            self._unindex(conn, key)
        ack = {"method": method, "subscription": echo}
        self._enqueue(
            conn,
            json.dumps({"channel": "subscriptionResponse", "data": ack}, separators=(",", ":")),
        )
        if method == "subscribe":
            snapshot = self._snapshot(key)
            if snapshot is not None:
                self._enqueue(conn, snapshot)

    def _unindex(self, conn: Connection, key: SubKey) -> None:
        members = self._index.get(key)
        if members is None:
            return
        members.discard(conn.id)
        if not members:
            del self._index[key]
            if key[0] == "candle":
                self._candles.get(key[1], set()).discard(key[2])

    def _parse(self, sub: Any) -> tuple[SubKey, dict[str, Any]] | None:
        """The subscription's key and its echo in the ack; ``None`` if it is invalid."""
        if not isinstance(sub, dict):
            return None
        kind = sub.get("type")
        coin = sub.get("coin")
        if kind == "allMids":
            return ("allMids",), sub
        if kind in USER_CHANNELS:
            user = sub.get("user")
            if not (isinstance(user, str) and user.startswith("0x") and len(user) == 42):
                return None
            return (str(kind), user.lower()), sub
        if not isinstance(kind, str) or not isinstance(coin, str) or coin not in self._coins():
            return None
        if kind in ("trades", "activeAssetCtx"):
            return (kind, coin), sub
        if kind == "l2Book":
            if any(sub.get(k) is not None for k in ("nSigFigs", "mantissa", "nLevels")):
                return None  # price aggregation is not simulated
            echo = {"type": "l2Book", "coin": coin, "nSigFigs": None, "mantissa": None}
            return ("l2Book", coin), echo
        interval = sub.get("interval")
        if kind == "candle" and isinstance(interval, str) and interval in INTERVAL_MS:
            return ("candle", coin, interval), sub
        return None
