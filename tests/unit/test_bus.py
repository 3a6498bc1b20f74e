"""bistouryd.bus: envelope encoding, drop accounting and a real proxy over ipc sockets."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
import zmq.asyncio

from bistouryd import bus
from bistouryd.bus import (
    BusError,
    BusProxy,
    BusStats,
    Envelope,
    Publisher,
    Subscriber,
    decode,
    encode,
    topic_class,
)
from bistouryd.events import SysEvent
from bistouryd.paths import RuntimePaths


def event(message: str = "hello", **details: str | int) -> SysEvent:
    return SysEvent(
        id="e1", kind="mode", message=message, details=dict(details), ts_ms=1_700_000_000_000
    )


def header(**override: object) -> dict[str, object]:
    raw: dict[str, object] = {
        "v": bus.SCHEMA_VERSION,
        "src": "test",
        "epoch": 1,
        "seq": 1,
        "ts_ms": 1,
        "kind": "SysEvent",
        "body": json.loads(event().model_dump_json()),
    }
    raw.update(override)
    return raw


# ---- envelope ---------------------------------------------------------------------------


def test_encode_decode_round_trip() -> None:
    body = event("ünïcode ✓", coin="BTC", n=3)
    before = int(time.time() * 1000)
    data = encode("recorder", 77, 5, body)
    env = decode(data)
    assert (env.v, env.src, env.epoch, env.seq, env.kind) == (1, "recorder", 77, 5, "SysEvent")
    assert before <= env.ts_ms <= int(time.time() * 1000)
    assert isinstance(env.body, SysEvent)
    assert env.body == body
    raw = json.loads(data)
    assert raw["body"]["details"] == {"coin": "BTC", "n": 3}
    assert raw["kind"] == "SysEvent"


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'"just a string"',
        b"{}",
        json.dumps(header(kind="NoSuchPayload")).encode(),
        json.dumps(header(v=2)).encode(),
        json.dumps(header(v=None)).encode(),
        json.dumps({k: v for k, v in header().items() if k != "src"}).encode(),
        json.dumps({k: v for k, v in header().items() if k != "body"}).encode(),
        json.dumps({k: v for k, v in header().items() if k != "seq"}).encode(),
        json.dumps(header(body={"kind": "mode"})).encode(),  # body misses "message"
        json.dumps(header(body={"kind": "nope", "message": "x"})).encode(),
        json.dumps(header(seq="many")).encode(),
        json.dumps(header(kind=["SysEvent"])).encode(),
    ],
)
def test_decode_rejects(data: bytes) -> None:
    with pytest.raises(BusError):
        decode(data)


def test_decode_messages_name_the_problem() -> None:
    with pytest.raises(BusError, match="schema version 2, expected 1"):
        decode(json.dumps(header(v=2)).encode())
    with pytest.raises(BusError, match="NoSuchPayload"):
        decode(json.dumps(header(kind="NoSuchPayload")).encode())
    assert decode(json.dumps(header()).encode()).body == event()


def test_topic_class() -> None:
    assert topic_class("md.l2.BTC") == "md"
    assert topic_class("sys.mode") == "sys"
    assert topic_class("fill") == "fill"
    assert topic_class("") == ""


def test_configure_sets_hwm_and_linger() -> None:
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.PUB)
        bus.configure(sock, hwm=123, linger_ms=7)
        assert sock.getsockopt(zmq.SNDHWM) == 123
        assert sock.getsockopt(zmq.RCVHWM) == 123
        assert sock.getsockopt(zmq.LINGER) == 7
        bus.configure(sock)
        assert sock.getsockopt(zmq.SNDHWM) == bus.BUS_HWM
        assert sock.getsockopt(zmq.LINGER) == bus.LINGER_MS
        sock.close()
    finally:
        ctx.term()


# ---- drop accounting --------------------------------------------------------------------


def envelope(seq: int, epoch: int = 1, src: str = "a") -> Envelope:
    return Envelope(v=1, src=src, epoch=epoch, seq=seq, ts_ms=1, kind="SysEvent", body=event())


class _Accounting(Subscriber):
    """A Subscriber without a socket: only its sequence accounting."""

    def __init__(self) -> None:
        self.stats = BusStats()
        self._last = {}


def test_gap_counts_drops() -> None:
    sub = _Accounting()
    for seq in (1, 2, 5):
        sub._account("md.l2.BTC", envelope(seq))
    assert (sub.stats.received, sub.stats.dropped) == (3, 2)
    sub._account("md.l2.BTC", envelope(6))
    assert sub.stats.dropped == 2


def test_new_epoch_resets_without_counting() -> None:
    sub = _Accounting()
    sub._account("t", envelope(10, epoch=1))
    sub._account("t", envelope(1, epoch=2))  # publisher restarted
    sub._account("t", envelope(2, epoch=2))
    assert (sub.stats.received, sub.stats.dropped) == (3, 0)
    sub._account("t", envelope(4, epoch=2))
    assert sub.stats.dropped == 1


def test_sequences_are_per_source_and_topic() -> None:
    sub = _Accounting()
    sub._account("t1", envelope(1, src="a"))
    sub._account("t2", envelope(7, src="a"))  # first on t2: no gap known
    sub._account("t1", envelope(1, src="b"))
    sub._account("t1", envelope(2, src="a"))
    sub._account("t2", envelope(8, src="a"))
    assert (sub.stats.received, sub.stats.dropped) == (5, 0)
    sub._account("t1", envelope(3, src="b"))  # b skipped 2
    assert sub.stats.dropped == 1


def test_repeated_sequence_is_not_a_drop() -> None:
    sub = _Accounting()
    for seq in (1, 2, 2, 3):
        sub._account("t", envelope(seq))
    assert (sub.stats.received, sub.stats.dropped) == (4, 0)


# ---- real proxy -------------------------------------------------------------------------


@pytest.fixture
def runtime() -> Iterator[RuntimePaths]:
    root = Path(tempfile.mkdtemp(prefix="bu", dir="/tmp"))
    paths = RuntimePaths(root)
    assert paths.too_long() == []
    yield paths
    shutil.rmtree(root, ignore_errors=True)


async def _pubsub(paths: RuntimePaths, count: int) -> tuple[BusStats, BusStats, list[int], int]:
    ctx = zmq.asyncio.Context()
    pub_stats, sub_stats = BusStats(), BusStats()
    pub = Publisher(ctx, paths, "tester", pub_stats)
    sub = Subscriber(ctx, paths, ["sys."], sub_stats)
    ignored = ctx.socket(zmq.SUB)  # a subscriber to another prefix gets nothing
    ignored.setsockopt(zmq.SUBSCRIBE, b"md.")
    ignored.connect(bus.ipc(paths.bus_out))
    try:
        # PUB/SUB slow joiner: publish warm-up messages until one comes through.
        deadline = time.monotonic() + 5
        while True:
            await pub.publish("sys.warmup", event("warm"))
            if await sub.sock.poll(20):
                break
            assert time.monotonic() < deadline, "no message through the proxy within 5 s"
        seqs: list[int] = []
        for i in range(count):
            await pub.publish("sys.test", event(f"m{i}", i=i))
        warm = 0
        while len(seqs) < count:
            topic, env = await asyncio.wait_for(sub.recv(), timeout=5)
            if topic == "sys.warmup":
                warm += 1
                continue
            assert topic == "sys.test"
            assert isinstance(env.body, SysEvent)
            assert env.body.details == {"i": len(seqs)}
            assert env.src == "tester" and env.epoch == pub.epoch
            seqs.append(env.seq)
        assert await ignored.poll(50) == 0
        return pub_stats, sub_stats, seqs, warm
    finally:
        ignored.close(linger=0)
        pub.close()
        sub.close()
        ctx.term()


def test_publisher_subscriber_through_proxy(runtime: RuntimePaths) -> None:
    sync_ctx = zmq.Context()
    proxy = BusProxy(sync_ctx, runtime)
    proxy.start()
    try:
        pub_stats, sub_stats, seqs, warm = asyncio.run(_pubsub(runtime, 200))
    finally:
        proxy.stop()
        sync_ctx.term()
    assert seqs == list(range(1, 201))
    assert sub_stats.received == 200 + warm
    assert sub_stats.dropped == 0
    assert sub_stats.invalid == 0
    assert pub_stats.published["sys"] >= 200 + warm
    assert set(pub_stats.published) == {"sys"}
    assert not proxy._thread.is_alive()


def test_invalid_frames_are_counted_and_skipped(runtime: RuntimePaths) -> None:
    async def run() -> tuple[BusStats, str]:
        ctx = zmq.asyncio.Context()
        stats = BusStats()
        # No proxy: the raw PUB binds where the subscriber connects.
        raw = ctx.socket(zmq.PUB)
        raw.bind(bus.ipc(runtime.bus_out))
        sub = Subscriber(ctx, runtime, ["sys."], stats)
        try:
            deadline = time.monotonic() + 5
            while not await sub.sock.poll(20):
                await raw.send_multipart([b"sys.warm", encode("w", 1, 1, event())])
                assert time.monotonic() < deadline
            await sub.recv()
            stats.received = 0
            await raw.send_multipart([b"sys.bad", b"not json"])
            await raw.send_multipart([b"sys.bad", b"a", b"b"])
            await raw.send_multipart([b"sys.good", encode("w", 1, 1, event("ok"))])
            topic, env = await asyncio.wait_for(sub.recv(), timeout=5)
            assert isinstance(env.body, SysEvent)
            return stats, f"{topic}:{env.body.message}"
        finally:
            raw.close(linger=0)
            sub.close()
            ctx.term()

    stats, got = asyncio.run(run())
    assert got == "sys.good:ok"
    assert stats.invalid == 2
    assert stats.received == 1


def test_recv_batch_takes_what_is_waiting_in_order_and_skips_garbage(
    runtime: RuntimePaths,
) -> None:
    async def run() -> tuple[BusStats, list[list[str]]]:
        ctx = zmq.asyncio.Context()
        stats = BusStats()
        raw = ctx.socket(zmq.PUB)
        raw.bind(bus.ipc(runtime.bus_out))
        sub = Subscriber(ctx, runtime, ["sys."], stats)
        try:
            deadline = time.monotonic() + 5
            while not await sub.sock.poll(20):
                await raw.send_multipart([b"sys.warm", encode("w", 1, 1, event())])
                assert time.monotonic() < deadline
            while await sub.sock.poll(50):  # empty the warm-up messages
                await sub.recv()
            for i in range(7):
                await raw.send_multipart([b"sys.t", encode("w", 2, i + 1, event(f"m{i}"))])
                if i == 3:
                    await raw.send_multipart([b"sys.bad", b"not json"])
            await asyncio.sleep(0.2)  # all of them queued at the subscriber
            batches = []
            for _ in range(2):
                batch = await asyncio.wait_for(sub.recv_batch(4), timeout=5)
                batches.append([e.body.message for _, e in batch if isinstance(e.body, SysEvent)])
            assert await sub.sock.poll(50) == 0
            return stats, batches
        finally:
            raw.close(linger=0)
            sub.close()
            ctx.term()

    stats, batches = asyncio.run(run())
    assert batches == [["m0", "m1", "m2", "m3"], ["m4", "m5", "m6"]]
    assert stats.invalid == 1


def test_remove_stale(tmp_path: Path) -> None:
    a, b = tmp_path / "a.sock", tmp_path / "b.sock"
    a.write_text("")
    bus.remove_stale([a, b])
    assert not a.exists() and not b.exists()


def test_decode_deeply_nested_json_is_a_bus_error() -> None:
    with pytest.raises(BusError):
        decode(b"[" * 50_000)
