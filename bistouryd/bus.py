"""The message bus: ZeroMQ endpoints, topics and the message envelope.

Agents publish to the orchestrator's XSUB socket and subscribe at its XPUB socket; the
orchestrator runs the proxy between them (``BusProxy``). A message is two frames: the
topic (``md.l2.BTC``, ``sys.mode``, ...) and the JSON of an ``Envelope`` whose ``body`` is
a pydantic model registered with ``@payload``. Market data is lossy under overload
(PUB/SUB high-water marks); every envelope carries a per-(publisher, topic) sequence
number so subscribers count what was lost instead of losing it silently.

What must be stored does not ride the bus: agents send it to the recorder on a
store-and-forward PUSH/PULL channel (``StorePusher`` → ``StorePuller``) that keeps
queueing while the recorder restarts.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
import zmq
import zmq.asyncio
from pydantic import BaseModel, ConfigDict

from bistouryd.paths import RuntimePaths, ipc

SCHEMA_VERSION = 1

# High-water marks: how many messages a socket queues before PUB/SUB starts dropping.
BUS_HWM = 100_000
# The store channel buffers at the sender, where a recorder crash cannot lose it: the
# recorder takes only a little at a time (STORE_RECEIVE_HWM) and stops reading while its
# own queue is full.
STORE_HWM = 100_000
STORE_RECEIVE_HWM = 1_000
CONTROL_HWM = 1_000
LINGER_MS = 0


def configure(sock: zmq.Socket[Any], *, hwm: int = BUS_HWM, linger_ms: int = LINGER_MS) -> None:
    """Set high-water marks and linger; must run before ``bind``/``connect`` to take effect."""
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.LINGER, linger_ms)


def topic_class(topic: str) -> str:
    """The first segment of a topic (``md``, ``sig``, ``dec``, ``fill``, ``pos``, ``sys``)."""
    return topic.split(".", 1)[0]


_P = TypeVar("_P", bound=BaseModel)
_PAYLOADS: dict[str, type[BaseModel]] = {}


def payload(cls: type[_P]) -> type[_P]:
    """Register a model as a bus payload under its class name."""
    _PAYLOADS[cls.__name__] = cls
    return cls


class Envelope(BaseModel):
    """Header of every bus message; ``body`` is the payload model named by ``kind``."""

    model_config = ConfigDict(frozen=True)

    v: int
    src: str
    epoch: int
    seq: int
    ts_ms: int
    kind: str
    body: BaseModel


class BusError(ValueError):
    """A frame that is not a valid bus message."""


def encode(src: str, epoch: int, seq: int, model: BaseModel) -> bytes:
    """The envelope JSON. The body is serialised once by pydantic and spliced in; the
    header is formatted directly (a JSON encoder per message would cost more than the
    body)."""
    return b'{"v":%d,"src":%s,"epoch":%d,"seq":%d,"ts_ms":%d,"kind":"%s","body":%s}' % (
        SCHEMA_VERSION,
        orjson.dumps(src),
        epoch,
        seq,
        time.time_ns() // 1_000_000,
        type(model).__name__.encode(),
        model.model_dump_json().encode(),
    )


_BODY = b',"body":'


def decode(data: bytes) -> Envelope:
    """Parse a frame. The header is small JSON; the body (the bulk of a market-data
    message) goes straight to its model's Rust JSON parser, as ``encode`` placed it last."""
    split = data.find(_BODY)
    fast = split > 0 and data.endswith(b"}")
    try:
        raw = orjson.loads(data[:split] + b"}") if fast else orjson.loads(data)
        if not isinstance(raw, dict):
            raise BusError("not a bus envelope")
        if raw.get("v") != SCHEMA_VERSION:
            raise BusError(f"schema version {raw.get('v')!r}, expected {SCHEMA_VERSION}")
        kind = raw["kind"]
        model = _PAYLOADS[kind]
        if fast:
            body = model.model_validate_json(data[split + len(_BODY) : -1])
        else:  # any other valid JSON layout of the same envelope
            body = model.model_validate(raw["body"])
        header = (raw["src"], raw["epoch"], raw["seq"], raw["ts_ms"])
    except BusError:
        raise
    except KeyError as exc:
        raise BusError(f"missing or unknown {exc}") from None
    except (ValueError, TypeError, AttributeError, RecursionError) as exc:
        raise BusError(str(exc)) from None
    src, epoch, seq, ts_ms = header
    if not (isinstance(src, str) and all(type(n) is int for n in (epoch, seq, ts_ms))):
        raise BusError("malformed envelope header")
    return Envelope.model_construct(
        v=SCHEMA_VERSION, src=src, epoch=epoch, seq=seq, ts_ms=ts_ms, kind=kind, body=body
    )


@dataclass
class BusStats:
    """What one process did on the bus; reported to the orchestrator with each heartbeat."""

    published: dict[str, int] = field(default_factory=dict)
    received: int = 0
    dropped: int = 0
    invalid: int = 0
    store_sent: int = 0
    store_dropped: dict[str, int] = field(default_factory=dict)


class _Sender:
    """Numbers messages per topic and sends them as [topic, envelope] frames."""

    def __init__(self, sock: zmq.Socket[Any], src: str, stats: BusStats):
        self.sock = sock
        self.src = src
        self.epoch = int(time.time() * 1_000_000) ^ os.getpid()
        self.stats = stats
        self._seq: dict[str, int] = {}

    def _frames(self, topic: str, model: BaseModel) -> list[bytes]:
        seq = self._seq.get(topic, 0) + 1
        self._seq[topic] = seq
        return [topic.encode(), encode(self.src, self.epoch, seq, model)]

    def close(self) -> None:
        self.sock.close(linger=LINGER_MS)


class Publisher(_Sender):
    """PUB socket connected to the proxy. Lossy under overload (HWM), by design.

    A PUB socket never blocks (at its high-water mark it drops), so sending is a plain
    non-blocking call on a plain socket: going through asyncio futures for each message
    would only add latency and CPU on the hottest path.
    """

    def __init__(self, ctx: zmq.asyncio.Context, paths: RuntimePaths, src: str, stats: BusStats):
        sock: zmq.Socket[bytes] = zmq.Context.shadow(ctx.underlying).socket(zmq.PUB)
        configure(sock)
        sock.connect(ipc(paths.bus_in))
        super().__init__(sock, src, stats)

    def send(self, topic: str, model: BaseModel) -> None:
        self.sock.send_multipart(self._frames(topic, model), flags=zmq.NOBLOCK)
        cls = topic_class(topic)
        self.stats.published[cls] = self.stats.published.get(cls, 0) + 1

    async def publish(self, topic: str, model: BaseModel) -> None:
        """``send`` for coroutines that prefer to await."""
        self.send(topic, model)


class StorePusher(_Sender):
    """What must reach the database goes to the recorder on this PUSH socket, not the bus.

    A connecting PUSH socket keeps queueing (up to ``STORE_HWM`` messages) while the
    recorder is away, e.g. restarting after a crash, and delivers when it is back; only
    what the recorder had received but not committed is lost. A full queue drops the
    message and counts it; sending never blocks the caller.
    """

    def __init__(self, ctx: zmq.asyncio.Context, paths: RuntimePaths, src: str, stats: BusStats):
        # A plain (not asyncio) socket on the same context: a non-blocking send that finds
        # the queue full must raise at once, not park the exception in a future.
        sock: zmq.Socket[bytes] = zmq.Context.shadow(ctx.underlying).socket(zmq.PUSH)
        configure(sock, hwm=STORE_HWM)
        sock.connect(ipc(paths.store))
        super().__init__(sock, src, stats)

    def push(self, topic: str, model: BaseModel) -> None:
        try:
            self.sock.send_multipart(self._frames(topic, model), flags=zmq.NOBLOCK)
            self.stats.store_sent += 1
        except zmq.Again:
            cls = topic_class(topic)
            self.stats.store_dropped[cls] = self.stats.store_dropped.get(cls, 0) + 1


class _Receiver:
    """Receives [topic, envelope] frames; counts gaps in each sender's numbering as drops."""

    def __init__(self, sock: zmq.asyncio.Socket, stats: BusStats):
        self.sock = sock
        # The same socket without asyncio, to take what is already queued without a trip
        # through the event loop per message.
        self._now: zmq.Socket[bytes] = zmq.Socket.shadow(sock.underlying)
        self.stats = stats
        self._last: dict[tuple[str, str], tuple[int, int]] = {}

    async def recv(self) -> tuple[str, Envelope]:
        """Next valid message; malformed frames are counted and skipped."""
        while True:
            message = self._parse(await self.sock.recv_multipart())
            if message is not None:
                return message

    async def recv_batch(self, limit: int) -> list[tuple[str, Envelope]]:
        """The next message and those already waiting behind it, ``limit`` at most: under
        load one wake-up of the event loop serves many messages."""
        batch = [await self.recv()]
        while len(batch) < limit:
            try:
                frames = self._now.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            message = self._parse(frames)
            if message is not None:
                batch.append(message)
        return batch

    def _parse(self, frames: list[bytes]) -> tuple[str, Envelope] | None:
        if len(frames) != 2:
            self.stats.invalid += 1
            return None
        topic = frames[0].decode(errors="replace")
        try:
            env = decode(frames[1])
        except BusError:
            self.stats.invalid += 1
            return None
        self._account(topic, env)
        return topic, env

    def _account(self, topic: str, env: Envelope) -> None:
        self.stats.received += 1
        key = (env.src, topic)
        last = self._last.get(key)
        if last is not None and last[0] == env.epoch and env.seq > last[1] + 1:
            self.stats.dropped += env.seq - last[1] - 1
        self._last[key] = (env.epoch, env.seq)

    def close(self) -> None:
        self.sock.close(linger=LINGER_MS)


class Subscriber(_Receiver):
    """SUB socket at the proxy, subscribed to topic prefixes."""

    def __init__(
        self, ctx: zmq.asyncio.Context, paths: RuntimePaths, prefixes: list[str], stats: BusStats
    ):
        sock = ctx.socket(zmq.SUB)
        configure(sock)
        for prefix in prefixes:
            sock.setsockopt(zmq.SUBSCRIBE, prefix.encode())
        sock.connect(ipc(paths.bus_out))
        super().__init__(sock, stats)


class StorePuller(_Receiver):
    """The recorder's end of the store channel (it binds; senders connect)."""

    def __init__(self, ctx: zmq.asyncio.Context, paths: RuntimePaths, stats: BusStats):
        sock = ctx.socket(zmq.PULL)
        configure(sock, hwm=STORE_RECEIVE_HWM)
        paths.store.unlink(missing_ok=True)  # left by a recorder killed with -9
        sock.bind(ipc(paths.store))
        super().__init__(sock, stats)


class BusProxy:
    """The XSUB⇄XPUB proxy, run by libzmq in a thread (no Python per message)."""

    def __init__(self, ctx: zmq.Context[Any], paths: RuntimePaths):
        self._ctx = ctx
        self._frontend = ctx.socket(zmq.XSUB)
        self._backend = ctx.socket(zmq.XPUB)
        self._control = ctx.socket(zmq.PAIR)
        self._steer = ctx.socket(zmq.PAIR)
        for sock in (self._frontend, self._backend):
            configure(sock)
        self._frontend.bind(ipc(paths.bus_in))
        self._backend.bind(ipc(paths.bus_out))
        endpoint = f"inproc://bus-steer-{id(self)}"
        self._control.bind(endpoint)
        self._steer.connect(endpoint)
        self._thread = threading.Thread(target=self._run, name="bus-proxy", daemon=True)

    def _run(self) -> None:
        try:
            zmq.proxy_steerable(self._frontend, self._backend, None, self._control)
        except zmq.ContextTerminated:
            pass
        finally:
            for sock in (self._frontend, self._backend, self._control):
                sock.close(linger=LINGER_MS)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._steer.send(b"TERMINATE")
            self._thread.join(timeout=5)
        self._steer.close(linger=LINGER_MS)


def remove_stale(paths: list[Path]) -> None:
    """Remove socket files a killed daemon left behind (the lock proves none is running)."""
    for path in paths:
        path.unlink(missing_ok=True)
