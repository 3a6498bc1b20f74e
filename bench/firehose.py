"""The pieces of the ingest benchmark that touch processes: the simulated exchange as a
firehose, the daemon's Prometheus counters, CPU per process, and the DuckDB file at the end.

Everything here observes; nothing changes the daemon. The simulator is started as a user
would start it (``bistoury-simexchange --synthetic N --rate R``); its offered load is then
stepped with its replay speed (``POST /admin/clock {"speed": "2x"}`` doubles the updates per
second of wall time), so one simulator and one daemon serve every step.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import psutil

from bench.memory import process_name
from bench.procs import BIN, BenchError, clean_env, kill_group, tail

READY_TIMEOUT_S = 20.0
HTTP_TIMEOUT_S = 5.0
Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def http_json(url: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"} if data else {}
    )
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
        return json.loads(response.read())


class Sim:
    """``bistoury-simexchange --synthetic N --rate R`` in its own session."""

    def __init__(self, coins: int, rate: float, workdir: Path, seed: int = 0):
        self.coins, self.rate, self.seed = coins, rate, seed
        self.ready_file = workdir / "sim.url"
        self.log = workdir / "simexchange.log"
        self.cmd = [
            str(BIN / "bistoury-simexchange"),
            "--synthetic",
            str(coins),
            "--rate",
            f"{rate:g}",
            "--seed",
            str(seed),
            "--port",
            "0",
            "--ready-file",
            str(self.ready_file),
            "--log-level",
            "WARNING",
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> str:
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                self.cmd,
                env=clean_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self.ready_file.exists():
            if self.proc.poll() is not None:
                raise BenchError(f"simexchange exited {self.proc.returncode}:\n{tail(self.log)}")
            if time.monotonic() > deadline:
                raise BenchError(f"simexchange not ready in {READY_TIMEOUT_S:.0f} s")
            time.sleep(0.02)
        self.url = self.ready_file.read_text().strip()
        return self.url

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = http_json(f"{self.url}/admin/status")
        return result

    def set_speed(self, speed: str) -> dict[str, Any]:
        result: dict[str, Any] = http_json(f"{self.url}/admin/clock", {"speed": speed})
        return result

    def kill(self) -> None:
        if self.proc is not None:
            kill_group(self.proc)


@dataclass(frozen=True)
class SimState:
    """What the simulator says about itself at one moment."""

    frames_sent: int
    queued: int  # frames waiting in its per-connection send queues
    connections: int
    lag_ms: int  # replay time the engine is behind its clock (it cannot keep up when growing)
    closed: list[dict[str, Any]]

    @classmethod
    def of(cls, status: dict[str, Any]) -> SimState:
        ws, clock = status["websocket"], status["clock"]
        return cls(
            frames_sent=int(ws["frames_sent"]),
            queued=sum(int(c.get("queued", 0)) for c in ws["open"]),
            connections=len(ws["open"]),
            lag_ms=max(0, int(clock["target_ms"]) - int(clock["exchange_ms"])),
            closed=list(ws["recently_closed"]),
        )


def scrape(metrics_url: str) -> Samples:
    """Every sample of the daemon's /metrics, keyed by (name, sorted labels)."""
    with urllib.request.urlopen(metrics_url, timeout=HTTP_TIMEOUT_S) as response:
        text = response.read().decode()
    out: Samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if not match:
            continue
        name, _, labels, value = match.groups()
        key = tuple(sorted(_LABEL.findall(labels or "")))
        with contextlib.suppress(ValueError):
            out[(name, key)] = float(value)
    return out


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of ``name`` over every series whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for (n, lab), v in samples.items():
        if n == name:
            key = dict(lab).get(label, "")
            out[key] = out.get(key, 0.0) + v
    return out


def counters(samples: Samples) -> dict[str, float]:
    """Every ``bistoury_*_total`` counter, summed over labels but the table/channel ones."""
    out: dict[str, float] = {}
    for (name, labels), value in samples.items():
        if not (name.startswith("bistoury_") and name.endswith("_total")):
            continue
        keep = [f"{k}={v}" for k, v in labels if k in ("table", "topic_class", "kind")]
        key = name + (f"{{{','.join(keep)}}}" if keep else "")
        out[key] = out.get(key, 0.0) + value
    return out


class CpuMeter:
    """CPU seconds of the simulator and of each daemon process. Agents are looked up at
    every reading: one the orchestrator restarted is a new process (a new pid)."""

    def __init__(self, sim_pid: int, daemon_pid: int):
        self.sim = psutil.Process(sim_pid)
        self.root = psutil.Process(daemon_pid)
        self._known: dict[int, psutil.Process] = {}

    def _procs(self) -> dict[str, psutil.Process]:
        out = {"simexchange": self.sim}
        with contextlib.suppress(psutil.Error):
            for proc in [self.root, *self.root.children(recursive=True)]:
                proc = self._known.setdefault(proc.pid, proc)  # keep psutil's cached identity
                out.setdefault(process_name(proc), proc)
        return out

    def read(self) -> dict[str, tuple[int, float]]:
        """name → (pid, user + system CPU seconds)."""
        out: dict[str, tuple[int, float]] = {}
        for name, proc in self._procs().items():
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                out[name] = (proc.pid, t.user + t.system)
        return out


@dataclass
class Reading:
    """One reading of everything, at ``mono`` (time.monotonic)."""

    mono: float
    sim: SimState
    samples: Samples
    cpu: dict[str, tuple[int, float]]
    host_cpu: float = 0.0  # busy CPU seconds of the whole machine (all cores)

    def agent_mono(self, agent: str) -> float:
        """When ``agent``'s counters were taken: at its last heartbeat, not at the scrape."""
        age = total(self.samples, "bistoury_agent_heartbeat_age_seconds", agent=agent)
        return self.mono - age

    def get(self, name: str, **labels: str) -> float:
        return total(self.samples, name, **labels)

    @property
    def stored_raw(self) -> float:
        return self.get("bistoury_recorder_rows_total", table="raw_messages")

    @property
    def restarts(self) -> float:
        return self.get("bistoury_agent_restarts_total") + self.get("bistoury_agent_restarts")

    def drops(self) -> dict[str, float]:
        """Every counter that says something was lost or refused."""
        return {n: self.get(n) for n in DROP_COUNTERS}


DROP_COUNTERS = (
    "bistoury_md_dropped_total",
    "bistoury_bus_dropped_total",
    "bistoury_store_dropped_total",
    "bistoury_recorder_dropped_total",
    "bistoury_recorder_rejected_total",
    "bistoury_md_parse_errors_total",
    "bistoury_bus_invalid_total",
)


def _foreign(host_pct: float, ours: dict[str, float | None]) -> float | None:
    """The host's busy CPU that none of ours used; unknown when one of ours was replaced
    during the window (its CPU would count as someone else's)."""
    known = [v for v in ours.values() if v is not None]
    return round(host_pct - sum(known), 1) if len(known) == len(ours) else None


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (0 for fewer than two points)."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var if var else 0.0


def host_busy_s() -> float:
    t = psutil.cpu_times()
    return t.user + t.system + t.nice + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


def read_all(sim: Sim, metrics_url: str, cpu: CpuMeter) -> Reading:
    mono = time.monotonic()
    state = SimState.of(sim.status())
    return Reading(mono, state, scrape(metrics_url), cpu.read(), host_busy_s())


@dataclass
class Window:
    """What happened between two readings, as rates per second of wall time.

    Each stage's rate is measured where it happens: frames the simulator wrote, frames
    the collector turned into market events, messages the recorder took off the store
    channel (a raw copy and a typed event per frame), raw rows it committed.
    """

    label: str
    speed: float
    seconds: float
    offered_per_s: float
    collector_per_s: float
    store_sent_per_s: float
    recorder_received_per_s: float
    stored_per_s: float
    typed_per_s: dict[str, float]
    sim_lag_growth_s: float
    sim_queued_end: int
    backlog_end: float  # frames sent by the simulator and not (yet) committed as raw rows
    backlog_growth: float
    backlog_slope_per_s: float  # least-squares slope of the backlog over every reading
    queue_rows_end: float
    batches_per_s: float  # recorder write_batch calls (bistoury_recorder_batch_seconds)
    batch_rows: float  # mean rows per batch, all tables
    batch_ms: float  # mean seconds per batch, in ms
    writer_busy: float  # share of the window the recorder spent in write_batch
    drops: dict[str, float]
    restarts: float
    reconnects: float
    cpu_pct: dict[str, float | None]
    host_cpu_pct: float
    foreign_cpu_pct: float | None  # host's busy CPU not used by the simulator or the daemon
    verdict: str = ""
    kept_up: bool = False
    bottleneck: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            k: round(v, 1) if isinstance(v, float) else v
            for k, v in self.__dict__.items()
            if k not in ("typed_per_s", "drops", "cpu_pct")
        } | {
            "typed_per_s": {k: round(v, 1) for k, v in self.typed_per_s.items()},
            "drops": {k: v for k, v in self.drops.items() if v},
            "cpu_pct": self.cpu_pct,
        }

    @property
    def lost(self) -> float:
        return sum(self.drops.values())


def window(
    label: str,
    speed: float,
    a: Reading,
    b: Reading,
    base_backlog: float,
    between: list[Reading] | None = None,
) -> Window:
    """``base_backlog``: frames sent minus raw rows committed before the firehose (the REST
    bodies stored during warm-up make it negative); backlogs are counted from it.
    ``between``: the readings taken from ``a`` to ``b`` (both included), for the slope:
    the recorder commits in batches, so two readings alone see a sawtooth."""
    seconds = b.mono - a.mono
    rec_s = max(b.agent_mono("recorder") - a.agent_mono("recorder"), 1e-3)
    col_s = max(b.agent_mono("collector") - a.agent_mono("collector"), 1e-3)

    def rate(name: str, dt: float, **labels: str) -> float:
        return (b.get(name, **labels) - a.get(name, **labels)) / dt

    offered = (b.sim.frames_sent - a.sim.frames_sent) / seconds

    def backlog(r: Reading) -> float:
        # The recorder's count is as old as its last heartbeat; the simulator's is fresh.
        stale = offered * (r.mono - r.agent_mono("recorder"))
        return r.sim.frames_sent - r.stored_raw - base_backlog - stale

    series = [(r.mono, backlog(r)) for r in (between or [a, b])]
    drops_a, drops_b = a.drops(), b.drops()
    batches = b.get("bistoury_recorder_batch_seconds_count") - a.get(
        "bistoury_recorder_batch_seconds_count"
    )
    batch_s = b.get("bistoury_recorder_batch_seconds_sum") - a.get(
        "bistoury_recorder_batch_seconds_sum"
    )
    rows = b.get("bistoury_recorder_rows_total") - a.get("bistoury_recorder_rows_total")
    cpu: dict[str, float | None] = {}
    for name, (pid, used) in b.cpu.items():
        before = a.cpu.get(name)
        same = before is not None and before[0] == pid
        cpu[name] = round(100 * (used - before[1]) / seconds, 1) if same and before else None
    return Window(
        label=label,
        speed=speed,
        seconds=round(seconds, 2),
        offered_per_s=offered,
        collector_per_s=rate("bistoury_md_messages_total", col_s),
        store_sent_per_s=rate("bistoury_store_sent_total", col_s),
        recorder_received_per_s=rate("bistoury_bus_received_total", rec_s),
        stored_per_s=rate("bistoury_recorder_rows_total", rec_s, table="raw_messages"),
        typed_per_s={
            t: rate("bistoury_recorder_rows_total", rec_s, table=t)
            for t in ("l2_snapshots", "trades", "candles", "asset_ctx")
        },
        sim_lag_growth_s=(b.sim.lag_ms - a.sim.lag_ms) / 1000 / max(speed, 1e-9),
        sim_queued_end=b.sim.queued,
        backlog_end=backlog(b),
        backlog_growth=backlog(b) - backlog(a),
        backlog_slope_per_s=slope(series),
        queue_rows_end=b.get("bistoury_recorder_queue_rows"),
        batches_per_s=batches / rec_s,
        batch_rows=rows / batches if batches else 0.0,
        batch_ms=1000 * batch_s / batches if batches else 0.0,
        writer_busy=batch_s / rec_s,
        drops={k: drops_b[k] - drops_a[k] for k in drops_b},
        restarts=b.restarts - a.restarts,
        reconnects=b.get("bistoury_ws_reconnects_total") - a.get("bistoury_ws_reconnects_total"),
        cpu_pct=cpu,
        host_cpu_pct=round(100 * (b.host_cpu - a.host_cpu) / seconds, 1),
        foreign_cpu_pct=_foreign(100 * (b.host_cpu - a.host_cpu) / seconds, cpu),
    )


STORED_TABLES = (
    "raw_messages",
    "l2_snapshots",
    "trades",
    "candles",
    "asset_ctx",
    "funding_history",
)


def stored_counts(db_path: Path) -> dict[str, Any]:
    """Rows in the daemon's DuckDB file after it stopped, opened read-only."""
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        raw = con.execute(
            "SELECT source, channel, count(*) FROM raw_messages GROUP BY ALL ORDER BY ALL"
        ).fetchall()
        tables = {
            t: int(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0])  # type: ignore[index]
            for t in STORED_TABLES
        }
        trades_in_frames = con.execute(
            "SELECT coalesce(sum(json_array_length(text, '$.data')), 0) FROM raw_messages "
            "WHERE source = 'ws' AND channel = 'trades'"
        ).fetchone()
        distinct_raw = con.execute(
            "SELECT count(*) FROM (SELECT DISTINCT text FROM raw_messages WHERE source = 'ws')"
        ).fetchone()
        events = con.execute(
            "SELECT kind, level, source, message FROM sys_events "
            "WHERE level IN ('warning', 'error', 'critical') ORDER BY ts_ms"
        ).fetchall()
    finally:
        con.close()
    per_channel: dict[str, dict[str, int]] = {}
    for source, channel, n in raw:
        per_channel.setdefault(source, {})[channel] = int(n)
    return {
        "tables": tables,
        "raw_by_source_channel": per_channel,
        "trades_in_ws_frames": int(trades_in_frames[0]) if trades_in_frames else 0,
        "distinct_ws_texts": int(distinct_raw[0]) if distinct_raw else 0,
        "problem_events": [
            {"kind": k, "level": lv, "source": src, "message": m} for k, lv, src, m in events
        ],
    }


def py_spy(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """Start ``py-spy record`` (raw collapsed stacks) on ``pid``, if py-spy is there."""
    exe = BIN / "py-spy"
    if not exe.exists():
        return None
    try:
        return subprocess.Popen(
            [
                str(exe),
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(max(1, round(seconds))),
                "--rate",
                "100",
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(out),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError:
        return None


def top_frames(raw_file: Path, top: int = 12) -> dict[str, Any]:
    """Self and inclusive shares of a ``py-spy --format raw`` profile (idle frames kept)."""
    self_n: dict[str, int] = {}
    incl: dict[str, int] = {}
    samples = 0
    try:
        lines = raw_file.read_text(errors="replace").splitlines()
    except OSError:
        return {}
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = [_short(f) for f in stack.split(";")]
        self_n[frames[-1]] = self_n.get(frames[-1], 0) + n
        for f in set(frames):
            incl[f] = incl.get(f, 0) + n
    if not samples:
        return {}

    def ranked(d: dict[str, int]) -> dict[str, float]:
        best = sorted(d.items(), key=lambda kv: -kv[1])[:top]
        return {k: round(100 * v / samples, 1) for k, v in best}

    return {"samples": samples, "self_pct": ranked(self_n), "inclusive_pct": ranked(incl)}


def _short(frame: str) -> str:
    """``func (path/to/module.py:123)`` → ``func (module.py)``: lines split one function."""
    match = re.match(r"^(.*) \((?:.*/)?([^/]+?):\d+\)$", frame)
    return f"{match.group(1)} ({match.group(2)})" if match else frame
