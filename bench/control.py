"""Control round-trip: ``Client.call("status")`` against bistouryd, and bare REQ/REP.

``Client`` opens a fresh REQ socket per call (a REQ that missed a reply is stuck, so the
retry needs a new one), so the fair bare baseline also connects per call; the
persistent-socket figure shows what that choice costs. ``Client`` against the bare
server separates the client's share (uuid, JSON) from the daemon's, and ``Client``
against the daemon's own ``ControlServer`` with a stub status handler separates the
request machinery (ROUTER on zmq.asyncio, a task per request, pydantic) from the work
of building the status. The variants are interleaved in rounds so that drift on a
shared machine hits all of them alike.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from bench.procs import short_tmpdir, workers
from bench.stats import Dist
from bistouryctl.client import Client
from bistouryd.protocol import PROTOCOL_VERSION

CALLS = 2000  # per variant, split over the rounds
ROUNDS = 4
WARMUP = 100
POLL_MS = 2500
Log = Callable[[str], None]


def timed(fn: Callable[[], object], n: int) -> list[int]:
    out = []
    for _ in range(n):
        start = time.perf_counter_ns()
        fn()
        out.append(time.perf_counter_ns() - start)
    return out


def request_bytes() -> bytes:
    """A status request exactly as ``Client.call`` builds it."""
    return json.dumps({"v": PROTOCOL_VERSION, "id": uuid.uuid4().hex, "cmd": "status"}).encode()


def _req(ctx: zmq.Context[Any], endpoint: str) -> zmq.Socket[Any]:
    sock = ctx.socket(zmq.REQ)
    for opt, value in ((zmq.LINGER, 0), (zmq.SNDHWM, 10), (zmq.RCVHWM, 10)):
        sock.setsockopt(opt, value)
    sock.connect(endpoint)
    return sock


def _exchange(sock: zmq.Socket[Any], payload: bytes) -> bytes:
    sock.send(payload)
    if not sock.poll(POLL_MS, zmq.POLLIN):
        raise TimeoutError("no reply from the bare REP server")
    return sock.recv()


def fresh_socket_call(ctx: zmq.Context[Any], endpoint: str, payload: bytes) -> Callable[[], bytes]:
    """What ``Client.raw`` does with zmq, minus JSON: socket, connect, send, poll, recv, close."""

    def call() -> bytes:
        sock = _req(ctx, endpoint)
        try:
            return _exchange(sock, payload)
        finally:
            sock.close(linger=0)

    return call


def measure(socket_path: Path, log: Log) -> tuple[dict[str, Dist], dict[str, Any]]:
    """All variants, ``CALLS`` each, in µs; details hold the reply size."""
    client = Client(socket_path)
    status_reply = client.raw(request_bytes())
    root = short_tmpdir()
    ctx: zmq.Context[Any] = zmq.Context()
    persistent: zmq.Socket[Any] | None = None
    try:
        reply_file = root / "reply.json"
        reply_file.write_bytes(json.dumps(status_reply).encode())
        rep_path, stub_path = root / "rep.sock", root / "stub.sock"
        endpoint = f"ipc://{rep_path}"
        with workers(root) as start:
            for name, path in (("rep", endpoint), ("ctl", str(stub_path))):
                ready = root / f"{name}.ready"
                start(name, [name, str(reply_file), path, str(ready)]).wait_for(ready, 15)
            payload = request_bytes()
            sock = persistent = _req(ctx, endpoint)
            bare_client, stub_client = Client(rep_path), Client(stub_path)
            variants: dict[str, tuple[str, Callable[[], object]]] = {
                "bistoury": ("Client.call('status') → bistouryd", lambda: client.call("status")),
                "client_stub": (
                    "Client.call('status') → ControlServer, stub handler",
                    lambda: stub_client.call("status"),
                ),
                "client_bare": (
                    "Client.call('status') → bare REP server",
                    lambda: bare_client.call("status"),
                ),
                "bare_fresh": (
                    "bare REQ/REP, fresh REQ socket per call",
                    fresh_socket_call(ctx, endpoint, payload),
                ),
                "bare_persistent": (
                    "bare REQ/REP, one persistent REQ socket",
                    lambda: _exchange(sock, payload),
                ),
            }
            samples = run_rounds(variants, log)
    finally:
        if persistent is not None:
            persistent.close(linger=0)
        ctx.term()
        shutil.rmtree(root, ignore_errors=True)
    dists = {
        key: Dist.best_of(label, "µs", samples[key], scale=1e-3)
        for key, (label, _) in variants.items()
    }
    return dists, {"status_reply_bytes": len(json.dumps(status_reply))}


def run_rounds(
    variants: dict[str, tuple[str, Callable[[], object]]], log: Log
) -> dict[str, list[list[int]]]:
    """Samples per variant, per round."""
    samples: dict[str, list[list[int]]] = {key: [] for key in variants}
    for _, fn in variants.values():
        timed(fn, WARMUP)
    for r in range(ROUNDS):
        log(f"control: round {r + 1}/{ROUNDS}, {CALLS // ROUNDS} calls per variant")
        for key, (_, fn) in variants.items():
            samples[key].append(timed(fn, CALLS // ROUNDS))
    return samples
