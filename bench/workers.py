"""Worker processes the benchmarks start: ``python -m bench.workers ROLE ...``.

Latency between processes has to be measured between processes: the GIL and a shared
event loop would hide exactly the wake-ups and copies that cost time. Workers talk to the
parent through files (ready markers, JSON results) rather than pipes, so no pipe
buffering can stall or reorder them, and every loop has a deadline.

Roles:
  rep  REPLY_FILE ENDPOINT READY_FILE          bare REP server answering a fixed reply
  ctl  REPLY_FILE SOCKET_PATH READY_FILE       the daemon's ControlServer, its status
                                               handler returning a fixed StatusResult
  sub  MODE TARGET MARKER OUT_FILE TIMEOUT_S    receive until END; write latencies (ns)
  pub  MODE TARGET MARKER OUT_FILE COUNT WARMUP PERIOD_US [--bind]

MODE is ``raw`` (sync pyzmq, bytes), ``raw-async`` (zmq.asyncio, bytes), ``bus``
(``bistouryd.bus`` Publisher/Subscriber and the envelope) or ``bus-traced`` (the same
``bus.encode``/``bus.decode`` on zmq.asyncio sockets, with a third frame carrying the
time encoding finished, so each message's latency splits into encode, transport and
decode). TARGET is an ipc:// endpoint, or for the bus modes the runtime directory whose
bus sockets the proxy binds.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio
from pydantic import BaseModel

from bistouryd.bus import BusStats, Publisher, Subscriber, configure, decode, encode, payload
from bistouryd.paths import RuntimePaths, ipc

TOPIC = "md.bench"
WARM = -1  # a message that is sent but not measured
END = -2  # the last message; the subscriber stops on it
RAW = struct.Struct("<qq")  # send time (CLOCK_MONOTONIC ns), index
HANDSHAKE_TIMEOUT_S = 15.0
REP_IDLE_TIMEOUT_MS = 60_000


@payload
class BenchPing(BaseModel):
    """The bus payload: a market-data-sized message carrying its send time."""

    t_ns: int
    n: int


def write_json(path: str, data: dict[str, Any]) -> None:
    """Write then rename, so the parent never reads half a file."""
    tmp = f"{path}.tmp"
    Path(tmp).write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


# ---- REQ/REP baseline -------------------------------------------------------------------


def rep(reply_file: str, endpoint: str, ready_file: str) -> None:
    """Answer every request with the same bytes until ``quit`` (or a minute of silence)."""
    reply = Path(reply_file).read_bytes()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REP)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, REP_IDLE_TIMEOUT_MS)
    sock.bind(endpoint)
    Path(ready_file).touch()
    try:
        while True:
            if sock.recv() == b"quit":
                sock.send(b"bye")
                return
            sock.send(reply)
    except zmq.Again:
        return
    finally:
        sock.close(linger=0)
        ctx.term()


async def _control_stub(reply_file: str, socket_path: str, ready_file: str) -> None:
    from bistouryd.control import ControlError, ControlServer, Handler, StatusResult
    from bistouryd.protocol import COMMANDS

    result = StatusResult.model_validate(json.loads(Path(reply_file).read_bytes())["result"])

    async def status(_request: object) -> StatusResult:
        return result

    async def refuse(_request: object) -> StatusResult:
        raise ControlError("the benchmark stub answers status only")

    handlers: dict[str, Handler] = {cmd: refuse for cmd in COMMANDS} | {"status": status}
    ctx = zmq.asyncio.Context()
    server = ControlServer(ctx, Path(socket_path), handlers, lambda cmd, res: None)
    Path(ready_file).touch()
    try:
        await asyncio.wait_for(server.serve(), REP_IDLE_TIMEOUT_MS / 1000)
    except asyncio.TimeoutError:
        pass
    finally:
        server.close()
        ctx.term()


def control_stub(reply_file: str, socket_path: str, ready_file: str) -> None:
    """The daemon's request path without the daemon: ROUTER, asyncio, pydantic, one task."""
    asyncio.run(_control_stub(reply_file, socket_path, ready_file))


# ---- subscribers ------------------------------------------------------------------------


class Tally:
    """What a subscriber saw: latencies of measured messages, and the first arrival."""

    def __init__(self, marker: str):
        self.marker = marker
        self.latencies: list[int] = []
        self.stages: dict[str, list[int]] = {"encode": [], "transport": [], "decode": []}
        self.seen = 0

    def add(self, now_ns: int, sent_ns: int, n: int) -> bool:
        """Record one message; False on END."""
        if self.seen == 0:
            Path(self.marker).touch()  # tells the publisher the subscription is live
        self.seen += 1
        if n == END:
            return False
        if n >= 0:
            self.latencies.append(now_ns - sent_ns)
        return True

    def add_stages(self, n: int, *stamps: int) -> None:
        """Stamps: built, encoded (sender); received, decoded (receiver)."""
        if n >= 0:
            for name, (a, b) in zip(self.stages, itertools.pairwise(stamps), strict=True):
                self.stages[name].append(b - a)


def sub_raw(target: str, tally: Tally, timeout_s: float) -> dict[str, Any]:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    configure(sock)
    sock.setsockopt(zmq.SUBSCRIBE, TOPIC.encode())
    sock.setsockopt(zmq.RCVTIMEO, int(timeout_s * 1000))
    sock.connect(target)
    try:
        while True:
            _, data = sock.recv_multipart()
            now = time.monotonic_ns()
            sent, n = RAW.unpack(data)
            if not tally.add(now, sent, n):
                return {}
    except zmq.Again:
        return {"timeout": True}
    finally:
        sock.close(linger=0)
        ctx.term()


async def sub_raw_async(target: str, tally: Tally) -> dict[str, Any]:
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.SUB)
    configure(sock)
    sock.setsockopt(zmq.SUBSCRIBE, TOPIC.encode())
    sock.connect(target)
    try:
        while True:
            _, data = await sock.recv_multipart()
            now = time.monotonic_ns()
            sent, n = RAW.unpack(data)
            if not tally.add(now, sent, n):
                return {}
    finally:
        sock.close(linger=0)
        ctx.term()


async def sub_bus(target: str, tally: Tally) -> dict[str, Any]:
    ctx = zmq.asyncio.Context()
    stats = BusStats()
    sub = Subscriber(ctx, RuntimePaths(Path(target)), [TOPIC], stats)
    try:
        while True:
            _, env = await sub.recv()
            now = time.monotonic_ns()
            body = env.body
            assert isinstance(body, BenchPing)
            if not tally.add(now, body.t_ns, body.n):
                return {"dropped": stats.dropped, "invalid": stats.invalid}
    finally:
        sub.close()
        ctx.term()


async def sub_bus_traced(target: str, tally: Tally) -> dict[str, Any]:
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.SUB)
    configure(sock)
    sock.setsockopt(zmq.SUBSCRIBE, TOPIC.encode())
    sock.connect(ipc(RuntimePaths(Path(target)).bus_out))
    try:
        while True:
            _, data, stamp = await sock.recv_multipart()
            received = time.monotonic_ns()
            body = decode(data).body
            decoded = time.monotonic_ns()
            assert isinstance(body, BenchPing)
            tally.add_stages(body.n, body.t_ns, RAW.unpack(stamp)[0], received, decoded)
            if not tally.add(decoded, body.t_ns, body.n):
                return {"stages_ns": tally.stages}
    finally:
        sock.close(linger=0)
        ctx.term()


async def _bounded(coro: Awaitable[dict[str, Any]], timeout_s: float) -> dict[str, Any]:
    try:
        return await asyncio.wait_for(coro, timeout_s)
    except asyncio.TimeoutError:
        return {"timeout": True}


def sub(mode: str, target: str, marker: str, out_file: str, timeout_s: float) -> None:
    tally = Tally(marker)
    if mode == "raw":
        extra = sub_raw(target, tally, timeout_s)
    elif mode == "raw-async":
        extra = asyncio.run(_bounded(sub_raw_async(target, tally), timeout_s))
    elif mode == "bus-traced":
        extra = asyncio.run(_bounded(sub_bus_traced(target, tally), timeout_s))
    else:
        extra = asyncio.run(_bounded(sub_bus(target, tally), timeout_s))
    write_json(out_file, {"latencies_ns": tally.latencies, "seen": tally.seen, **extra})


# ---- publishers -------------------------------------------------------------------------

Send = Callable[[int], Awaitable[None]]


async def handshake(send: Send, marker: str) -> None:
    """Send warm-up messages every millisecond until the subscriber has received one.

    PUB/SUB drops everything sent before the subscription reaches the publisher (the
    slow-joiner problem), and through the proxy that takes two hops.
    """
    deadline = time.monotonic() + HANDSHAKE_TIMEOUT_S
    while not os.path.exists(marker):
        if time.monotonic() > deadline:
            raise SystemExit(f"no subscriber received anything within {HANDSHAKE_TIMEOUT_S} s")
        await send(WARM)
        time.sleep(0.001)


async def paced(send: Send, indices: range | list[int], period_ns: int) -> None:
    """Send one message per period; if late, send now but never in a catch-up burst.

    ``time.sleep`` rather than ``asyncio.sleep``: the event loop's timers have millisecond
    resolution, and nothing else runs in this loop.
    """
    next_ns = time.monotonic_ns()
    for n in indices:
        wait = next_ns - time.monotonic_ns()
        if wait > 0:
            time.sleep(wait / 1e9)
        await send(n)
        next_ns = max(next_ns + period_ns, time.monotonic_ns())


async def publish_all(send: Send, args: argparse.Namespace) -> dict[str, Any]:
    await handshake(send, args.marker)
    period_ns = args.period_us * 1000
    await paced(send, [WARM] * args.warmup, period_ns)
    start = time.monotonic_ns()
    await paced(send, range(args.count), period_ns)
    elapsed = time.monotonic_ns() - start
    for _ in range(3):  # END may not be lost: PUB/SUB only drops at the high-water mark
        await send(END)
        time.sleep(0.002)
    return {"sent": args.count, "mean_interval_us": elapsed / max(1, args.count) / 1000}


async def pub_traced(args: argparse.Namespace) -> dict[str, Any]:
    """``Publisher.publish``'s work, plus the encoded-at stamp as a third frame."""
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.PUB)
    configure(sock)
    sock.connect(ipc(RuntimePaths(Path(args.target)).bus_in))
    topic, seq = TOPIC.encode(), 0

    async def send(n: int) -> None:
        nonlocal seq
        seq += 1
        data = encode("bench", 1, seq, BenchPing(t_ns=time.monotonic_ns(), n=n))
        await sock.send_multipart([topic, data, RAW.pack(time.monotonic_ns(), 0)])

    try:
        return await publish_all(send, args)
    finally:
        sock.close(linger=0)
        ctx.term()


async def pub_main(args: argparse.Namespace) -> dict[str, Any]:
    if args.mode == "bus-traced":
        return await pub_traced(args)
    if args.mode == "bus":
        actx = zmq.asyncio.Context()
        publisher = Publisher(actx, RuntimePaths(Path(args.target)), "bench", BusStats())

        async def send_bus(n: int) -> None:
            await publisher.publish(TOPIC, BenchPing(t_ns=time.monotonic_ns(), n=n))

        try:
            return await publish_all(send_bus, args)
        finally:
            publisher.close()
            actx.term()
    ctx: zmq.Context[Any] = zmq.asyncio.Context() if args.mode == "raw-async" else zmq.Context()
    sock = ctx.socket(zmq.PUB)
    configure(sock)
    if args.bind:
        sock.bind(args.target)
    else:
        sock.connect(args.target)
    topic = TOPIC.encode()

    async def send_raw(n: int) -> None:
        sock.send_multipart([topic, RAW.pack(time.monotonic_ns(), n)])

    async def send_raw_async(n: int) -> None:
        await sock.send_multipart([topic, RAW.pack(time.monotonic_ns(), n)])

    try:
        return await publish_all(send_raw_async if args.mode == "raw-async" else send_raw, args)
    finally:
        sock.close(linger=0)
        ctx.term()


# ---- command line -----------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench.workers")
    roles = p.add_subparsers(dest="role", required=True)
    for name in ("rep", "ctl"):
        r = roles.add_parser(name)
        r.add_argument("reply_file")
        r.add_argument("endpoint")
        r.add_argument("ready_file")
    for name in ("sub", "pub"):
        w = roles.add_parser(name)
        w.add_argument("mode", choices=["raw", "raw-async", "bus", "bus-traced"])
        w.add_argument("target")
        w.add_argument("marker")
        w.add_argument("out_file")
    s = roles.choices["sub"]
    s.add_argument("timeout_s", type=float)
    pb = roles.choices["pub"]
    pb.add_argument("count", type=int)
    pb.add_argument("warmup", type=int)
    pb.add_argument("period_us", type=int)
    pb.add_argument("--bind", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.role == "rep":
        rep(args.reply_file, args.endpoint, args.ready_file)
    elif args.role == "ctl":
        control_stub(args.reply_file, args.endpoint, args.ready_file)
    elif args.role == "sub":
        sub(args.mode, args.target, args.marker, args.out_file, args.timeout_s)
    else:
        write_json(args.out_file, asyncio.run(pub_main(args)))


if __name__ == "__main__":
    main()
