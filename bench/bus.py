"""Bus one-way latency, publisher process → subscriber process, and where it goes.

Four variants run with the same pacing and count, each adding one layer to the last:
bare PUB→SUB (sync pyzmq, raw bytes); the same through ``BusProxy``; the same with
zmq.asyncio on both ends; the real bus (``Publisher``/``Subscriber``, envelope, pydantic).
The differences between neighbours are the proxy hop, asyncio and the envelope. A fifth,
traced variant does the bus's encode and decode with a time stamp between every step, so
one message's latency splits into encode, transport and decode where it really happens
(cold caches between messages make that slower than a tight loop suggests). The proxy
runs in this process, in a thread, exactly as the orchestrator runs it.

Send and receive times are CLOCK_MONOTONIC, which is one clock for all processes on Linux.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from bench.procs import BenchError, short_tmpdir, workers
from bench.stats import Dist
from bench.workers import RAW, BenchPing
from bistouryd import bus
from bistouryd.paths import RuntimePaths, ipc

COUNT = 10_000  # measured messages per variant, split over the rounds
ROUNDS = 5
WARMUP = 300  # per run, after the handshake
PERIOD_US = 200
SUB_TIMEOUT_S = 30.0
STAGES = {
    "encode": "traced bus: build payload + bus.encode (publisher)",
    "transport": "traced bus: send → proxy → receive (zmq.asyncio)",
    "decode": "traced bus: bus.decode (subscriber)",
}
Log = Callable[[str], None]


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    mode: str  # workers.py MODE
    proxy: bool


VARIANTS = (
    Variant("bare_direct", "bare pyzmq PUB→SUB (sync, raw bytes)", "raw", proxy=False),
    Variant("bare_proxy", "bare pyzmq PUB→proxy→SUB (sync, raw bytes)", "raw", proxy=True),
    Variant("bare_proxy_async", "bare PUB→proxy→SUB (zmq.asyncio, raw bytes)", "raw-async", True),
    Variant("bus", "bistoury bus: Publisher→BusProxy→Subscriber", "bus", proxy=True),
    Variant("bus_traced", "traced bus: bus.encode/decode, zmq.asyncio", "bus-traced", True),
)


@dataclass
class Rounds:
    """One variant's results, round by round."""

    latencies_ns: list[list[int]] = field(default_factory=list)
    stages_ns: list[dict[str, list[int]]] = field(default_factory=list)
    sent: int = 0
    received: int = 0
    intervals_us: list[float] = field(default_factory=list)

    def add(self, got: dict[str, Any], sent: dict[str, Any]) -> None:
        self.latencies_ns.append(got["latencies_ns"])
        self.stages_ns.append(got.get("stages_ns", {}))
        self.sent += sent["sent"]
        self.received += len(got["latencies_ns"])
        self.intervals_us.append(sent["mean_interval_us"])

    def best(self) -> int:
        """Index of the round with the lowest p50."""
        p50s = [Dist.of("", "", r).p50 for r in self.latencies_ns]
        return p50s.index(min(p50s))

    def info(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "received": self.received,
            "lost": self.sent - self.received,
            "mean_send_interval_us": round(sum(self.intervals_us) / len(self.intervals_us), 1),
        }


def endpoints(variant: Variant, root: Path) -> tuple[str, str]:
    """(publisher target, subscriber target) for a variant, as workers.py expects them."""
    paths = RuntimePaths(root)
    if variant.mode.startswith("bus"):
        return str(root), str(root)
    if variant.proxy:
        return ipc(paths.bus_in), ipc(paths.bus_out)
    direct = ipc(root / "direct.sock")
    return direct, direct


def run_variant(variant: Variant, count: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """One publisher and one subscriber process; returns what each wrote."""
    root = short_tmpdir()
    ctx: zmq.Context[Any] = zmq.Context()
    proxy = bus.BusProxy(ctx, RuntimePaths(root)) if variant.proxy else None
    try:
        if proxy is not None:
            proxy.start()
        pub_target, sub_target = endpoints(variant, root)
        marker, sub_out, pub_out = (str(root / n) for n in ("first", "sub.json", "pub.json"))
        with workers(root) as start:
            subscriber = start(
                "sub", ["sub", variant.mode, sub_target, marker, sub_out, str(SUB_TIMEOUT_S)]
            )
            publisher = start(
                "pub",
                ["pub", variant.mode, pub_target, marker, pub_out]
                + [str(count), str(WARMUP), str(PERIOD_US)]
                + ([] if variant.proxy else ["--bind"]),
            )
            publisher.finish(SUB_TIMEOUT_S)
            subscriber.finish(SUB_TIMEOUT_S)
        got = json.loads(Path(sub_out).read_text())
        sent = json.loads(Path(pub_out).read_text())
    finally:
        if proxy is not None:
            proxy.stop()
        ctx.term()
        shutil.rmtree(root, ignore_errors=True)
    if got.get("timeout") or not got["latencies_ns"]:
        received = len(got["latencies_ns"])
        raise BenchError(f"{variant.key}: subscriber timed out after {received} messages")
    return got, sent


def latencies(log: Log) -> tuple[dict[str, Dist], dict[str, Dist], dict[str, Any]]:
    """Every variant, interleaved in rounds so that drift on a busy machine hits all alike.

    Returns the latency per variant (its quietest round), the traced bus's latency per
    stage (in its quietest round), and delivery counts per variant.
    """
    results = {v.key: Rounds() for v in VARIANTS}
    per_round = COUNT // ROUNDS
    for r in range(ROUNDS):
        for variant in VARIANTS:
            log(f"bus: round {r + 1}/{ROUNDS}: {variant.label}: {per_round} msgs / {PERIOD_US} µs")
            results[variant.key].add(*run_variant(variant, per_round))
    dists = {
        v.key: Dist.best_of(v.label, "µs", results[v.key].latencies_ns, 1e-3) for v in VARIANTS
    }
    traced = results["bus_traced"]
    quiet = traced.stages_ns[traced.best()]
    stages = {name: Dist.of(label, "µs", quiet[name], 1e-3) for name, label in STAGES.items()}
    for v in VARIANTS:
        d = dists[v.key]
        log(f"bus: {v.label}: p50 {d.p50:.1f} µs, p99 {d.p99:.1f} µs (rounds: {d.rounds_p50})")
    return dists, stages, {key: r.info() for key, r in results.items()}


# ---- envelope CPU cost, in this process -------------------------------------------------


def per_call_us(fn: Callable[[], object], n: int = 5000, repeat: int = 5) -> float:
    """Best-of-``repeat`` mean time of one call: the cost without scheduler noise."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter_ns()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter_ns() - start) / n)
    return round(best / 1000, 3)


def envelope_costs() -> dict[str, float]:
    """Microseconds per message for each step of ``bus.encode`` and ``bus.decode``."""
    model = BenchPing(t_ns=time.monotonic_ns(), n=1)
    data = bus.encode("bench", 1, 1, model)
    raw = json.loads(data)
    body = BenchPing.model_validate(raw["body"])
    head = {k: raw[k] for k in ("v", "src", "epoch", "seq", "ts_ms", "kind")}
    return {
        "encode total (bus.encode)": per_call_us(lambda: bus.encode("bench", 1, 1, model)),
        "  payload model_dump_json": per_call_us(model.model_dump_json),
        "  header json.dumps": per_call_us(lambda: json.dumps(head, separators=(",", ":"))),
        "decode total (bus.decode)": per_call_us(lambda: bus.decode(data)),
        "  json.loads": per_call_us(lambda: json.loads(data)),
        "  payload model_validate": per_call_us(lambda: BenchPing.model_validate(raw["body"])),
        "  Envelope(...) validation": per_call_us(lambda: bus.Envelope(**head, body=body)),
        "build payload model": per_call_us(lambda: BenchPing(t_ns=1, n=1)),
        "raw bytes pack+unpack (baseline)": per_call_us(
            lambda: RAW.unpack(RAW.pack(time.monotonic_ns(), 1))
        ),
    }


def envelope_size() -> int:
    """Bytes of one bus message body (the bare variants send 16)."""
    return len(bus.encode("bench", 1, 1, BenchPing(t_ns=time.monotonic_ns(), n=1)))
