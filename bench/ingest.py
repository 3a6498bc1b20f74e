"""The ingest suite: a synthetic firehose from the simulated exchange through a real
bistouryd (collector → store channel → recorder → DuckDB), stepped up until something
drops or falls behind, then held at the best rate; every frame accounted for at the end.

One simulator and one daemon serve the whole run. The offered load is the simulator's
``--rate`` times its replay speed, which each step raises (``POST /admin/clock``). A step
passes when nothing was dropped, no agent restarted, the websocket stayed up and the
committed raw rows kept pace with the frames sent (backlog not growing). The first step
that does not pass names the stage that saturated: the simulator (it fell behind its own
clock), the collector (its event rate fell below the frames offered), the store channel
or the recorder's receiving loop, or the DuckDB writes (the recorder's queue grew).

Then, from the same run's DuckDB file: the raw ``write_batch`` rate of the same rows and
the bytes per stored l2Book message (``bench.storagecost``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pyarrow
import yaml

from bench import firehose, pathcost, storagecost
from bench.daemon import Daemon
from bench.firehose import CpuMeter, Reading, Sim, Window
from bench.foundation import SuiteResult
from bench.procs import REPO, BenchError, kill_group, short_tmpdir
from bench.stats import Aim, Figure
from bistouryctl.client import Client
from bistouryd.config import StorageConfig

COINS = 50
BASE_RATE = 100.0  # market updates per second over all coins at 1x: ~520 frames/s
SPEEDS = (1, 2, 3, 4, 5, 6, 8, 10, 14, 20, 28, 40)  # ~520 frames/s per 1x: up to ~20k
INTERVALS = ["1m", "5m", "15m"]  # the shipped collector.intervals
BACKFILL_MINUTES = 30  # the shipped day of candles would only lengthen the warm-up
HEARTBEAT_S = 0.5
SETTLE_S = 2.0
STEP_S = 8.0
SUSTAIN_S = 20.0
PROFILE_S = 6.0
POLL_S = 1.0
WARMUP_MAX_S = 30.0
DRAIN_MAX_S = 20.0
LADDER_BUDGET_S = 75.0
# A step stops early when the backlog passes this many seconds of the offered load (a
# DuckDB checkpoint stalls the recorder for 1-2 s, which the daemon absorbs), or when the
# simulator queues this many frames for the collector (it drops a client at 10 000).
ABORT_BACKLOG_S = 4.0
ABORT_SIM_QUEUED = 4000
# A step falls behind when its backlog (frames sent, not yet committed) grows by more than
# this share of the offered rate: the least-squares slope over the window's readings, as
# the recorder commits in batches (every ~0.25 s) and two readings alone would see a
# sawtooth. What is left of it is a few % of the rate on an 8 s slope; a real shortfall
# shows at the next step anyway.
BEHIND = 0.05
BEHIND_FLOOR = 50.0  # frames/s
FOREIGN_CPU_PCT = 25.0  # % of a core used by processes not in this benchmark
KEEP_UP = 0.95  # a stage whose rate is below this share of the one before it is behind

RATE_AIM = Aim(20_000.0, at_least=True)
ZERO_LOSS_AIM = Aim(1.0, text="0")
Log = Callable[[str], None]


def daemon_overrides(url: str, coins: list[str]) -> dict[str, Any]:
    return {
        "exchange": {"network": "custom", "base_url": url},
        "trading": {"pairs": coins},
        "agents": {"enabled": ["recorder", "collector"], "heartbeat_interval_s": HEARTBEAT_S},
        "collector": {"intervals": INTERVALS, "backfill_minutes": BACKFILL_MINUTES},
        "logging": {"level": "INFO"},
    }


class Run:
    """One simulator and one daemon, with the readings taken along the way."""

    def __init__(self, sim: Sim, daemon: Daemon, log: Log):
        self.sim, self.daemon, self.log = sim, daemon, log
        status = Client(daemon.socket).call("status")
        self.metrics_url = str(status["metrics_url"])
        self.cpu = CpuMeter(sim.pid, daemon.pid)
        self.base_backlog = 0.0
        self.windows: list[Window] = []
        self.speed = 1.0

    def read(self) -> Reading:
        return firehose.read_all(self.sim, self.metrics_url, self.cpu)

    def set_speed(self, speed: float) -> None:
        self.sim.set_speed("paused" if speed == 0 else f"{speed:g}x")
        if speed:
            self.speed = speed

    def warm_up(self) -> Reading:
        """Collect until connected, backfilled and caught up; the firehose starts after."""
        started = time.monotonic()
        Client(self.daemon.socket).call("collect")
        last_backfill, stable_since = -1.0, time.monotonic()
        while True:
            r = self.read()
            done = r.get("bistoury_md_backfilled_candles_total")
            if done != last_backfill:
                last_backfill, stable_since = done, time.monotonic()
            flowing = r.get("bistoury_recorder_rows_total", table="l2_snapshots") > 0
            caught_up = r.get("bistoury_recorder_queue_rows") < 1000 and r.sim.queued < 100
            waited = time.monotonic() - started
            if flowing and caught_up and time.monotonic() - stable_since > 2.0 and waited > 4:
                return r
            if waited > WARMUP_MAX_S:
                raise BenchError(f"collection did not settle in {WARMUP_MAX_S:.0f} s")
            time.sleep(0.25)

    def measure(self, label: str, seconds: float, abort: bool = True) -> Window:
        """A window of ``seconds`` at the current speed, read every ``POLL_S``, stopped early
        if the backlog grows past ``ABORT_BACKLOG_S`` of the offered load."""
        a = self.read()
        readings = [a]
        end = a.mono + seconds
        while time.monotonic() < end:
            time.sleep(min(POLL_S, max(0.0, end - time.monotonic())))
            readings.append(self.read())
            w = firehose.window(label, self.speed, a, readings[-1], self.base_backlog)
            limit = max(8000.0, ABORT_BACKLOG_S * w.offered_per_s)
            elapsed = readings[-1].mono - a.mono
            stuck = w.sim_queued_end > ABORT_SIM_QUEUED or w.restarts
            if abort and (stuck or (elapsed > 2.5 and w.backlog_growth > limit)):
                self.log(f"  {label}: stopped early, {w.backlog_growth:.0f} frames behind")
                break
        w = firehose.window(label, self.speed, a, readings[-1], self.base_backlog, readings)
        judge(w)
        self.windows.append(w)
        return w

    def drain(self) -> Reading:
        """Pause the simulator and wait until every frame it sent is committed."""
        self.set_speed(0)
        started = time.monotonic()
        while True:
            r = self.read()
            behind = r.sim.frames_sent - r.stored_raw - self.base_backlog
            idle = r.sim.queued == 0 and r.sim.lag_ms == 0
            if idle and r.get("bistoury_recorder_queue_rows") == 0 and behind <= 0:
                return r
            if time.monotonic() - started > DRAIN_MAX_S:
                self.log(f"  drain: still {behind:.0f} frames not committed after {DRAIN_MAX_S}s")
                return r
            time.sleep(0.25)


def judge(w: Window) -> None:
    """Did every stage keep up with the frames offered? If not, which one did not?"""
    problems = []
    if (w.foreign_cpu_pct or 0.0) > FOREIGN_CPU_PCT:
        # Not a failure of ours, but the figure is then a floor: say so where it is shown.
        w.verdict = f"other processes used {w.foreign_cpu_pct:.0f}% CPU; "
    if w.lost:
        problems.append("dropped " + ", ".join(f"{k}={v:.0f}" for k, v in w.drops.items() if v))
    if w.restarts:
        problems.append(f"{w.restarts:.0f} agent restart(s)")
    if w.reconnects:
        problems.append(f"{w.reconnects:.0f} websocket reconnect(s)")
    if w.backlog_slope_per_s > max(BEHIND_FLOOR, BEHIND * w.offered_per_s):
        problems.append(
            f"stored {w.stored_per_s:.0f}/s of {w.offered_per_s:.0f}/s, backlog "
            f"+{w.backlog_slope_per_s:.0f}/s"
        )
    sim_behind = w.sim_lag_growth_s > 0.05 * w.seconds
    w.kept_up = not problems
    if sim_behind and w.kept_up:
        w.bottleneck = "simexchange"
        w.verdict += f"simulator fell {w.sim_lag_growth_s:.1f} s behind its clock"
        w.kept_up = True  # the daemon took everything; the offered load was not reached
        return
    if w.kept_up:
        w.verdict += "kept up"
        return
    w.bottleneck = bottleneck(w, sim_behind)
    if w.host_cpu_pct > 90 * (os.cpu_count() or 1):
        w.bottleneck += f", every core busy (host {w.host_cpu_pct:.0f}%"
        others = w.foreign_cpu_pct or 0.0
        w.bottleneck += f", others {others:.0f}%)" if others > 10 else ")"
    w.verdict += "; ".join(problems)


def bottleneck(w: Window, sim_behind: bool) -> str:
    """The first stage whose rate fell short of the one before it."""
    if w.restarts:
        gone = [n for n in ("recorder", "collector") if w.cpu_pct.get(n) is None] or ["agent"]
        return f"{gone[0]} restarted (watchdog or crash)"
    if w.sim_queued_end > 1000 or w.collector_per_s < KEEP_UP * w.offered_per_s:
        return "collector"
    if w.recorder_received_per_s < KEEP_UP * w.store_sent_per_s:
        return "recorder (receiving)"
    if w.writer_busy > 0.85 or w.queue_rows_end > 10_000:
        return f"recorder (DuckDB writes {100 * w.writer_busy:.0f}% of the time)"
    return "simexchange" if sim_behind else "recorder"


def run(log: Log) -> SuiteResult:
    result = SuiteResult()
    work = short_tmpdir()
    started = time.monotonic()
    try:
        figures_from_run(result, work, log)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result.details["ingest_seconds"] = round(time.monotonic() - started, 1)
    return result


def figures_from_run(result: SuiteResult, work: Path, log: Log) -> None:
    sim = Sim(COINS, BASE_RATE, work)
    try:
        url = sim.start()
        coins = list(sim.status()["coins"])
        log(f"ingest: simexchange --synthetic {COINS} --rate {BASE_RATE:g} at {url}")
        overrides = daemon_overrides(url, coins)
        with Daemon(overrides) as daemon:
            log(f"ingest: starting bistouryd (recorder, collector; {len(coins)} pairs)")
            daemon.wait_ready()
            run_ = Run(sim, daemon, log)
            warm = run_.warm_up()
            run_.base_backlog = warm.sim.frames_sent - warm.stored_raw
            log(f"ingest: collecting; {warm.sim.frames_sent} frames so far, firehose starts")
            ladder(run_)
            passing = [w for w in run_.windows if w.kept_up]
            failed = next((w for w in run_.windows if w.bottleneck), None)
            holds = hold(run_, passing or run_.windows[:1])
            sustained = next((h for h in holds if h.kept_up), holds[0])
            profiles = profile(run_, failed or run_.windows[-1], work)
            final = run_.drain()
            log("ingest: stop (control command stop), then count what DuckDB holds")
            stop_s = daemon.stop()
            stored = firehose.stored_counts(daemon.state / "bistoury.duckdb")
            db_bytes = _db_bytes(daemon.state / "bistoury.duckdb")
            db_copy = work / "run.duckdb"
            shutil.copy(daemon.state / "bistoury.duckdb", db_copy)
            leftovers = daemon.leftovers()
        if leftovers:
            raise BenchError(f"processes left after stop: {leftovers}")
    finally:
        sim.kill()
    rows = batch_max_rows()
    log(f"ingest: write_batch of the same rows into a fresh file, {rows}-row batches")
    bulk = storagecost.bulk_insert(db_copy, work, rows)
    log(
        f"  {bulk['rows_per_s']:,} rows/s, {bulk['messages_per_s']:,} messages/s "
        f"({bulk['frames']} frames, {bulk['batches']} batches)"
    )
    used = max(1, round(sustained.batch_rows))
    log(f"ingest: write_batch cost at the recorder's batch size ({used} rows) and at {rows}")
    sizes = storagecost.batch_sizes(db_copy, work, sorted({used, rows}))
    log("ingest: bytes per l2Book message (fresh file, then retention to Parquet)")
    l2 = storagecost.l2_bytes(db_copy, work, rows)
    log(
        f"  DuckDB l2_snapshots {l2['duckdb_l2_snapshots_bytes_per_message']} B + raw "
        f"{l2['duckdb_raw_messages_bytes_per_message']} B; Parquet "
        f"{l2['parquet_l2_snapshots_bytes_per_message']} B + "
        f"{l2['parquet_raw_messages_bytes_per_message']} B"
    )
    log("ingest: CPU per frame of each step of the path, in process")
    steps = pathcost.measure(db_copy)
    account = accounting(final, stored, run_.base_backlog)
    result.details["ingest"] = {
        "setup": {
            "command": "bistoury-simexchange " + " ".join(sim.cmd[1:7]) + " --port 0",
            "logical_cores": os.cpu_count(),
            "coins": COINS,
            "base_rate_updates_per_s": BASE_RATE,
            "collector_intervals": INTERVALS,
            "collector_backfill_minutes": BACKFILL_MINUTES,
            "heartbeat_interval_s": HEARTBEAT_S,
            "frames_per_update": "trades + l2Book + one candle per interval, "
            "activeAssetCtx every 3 s per coin",
            "duckdb": duckdb.__version__,
            "pyarrow": pyarrow.__version__,
            **tree(),
        },
        "ladder": [w.as_json() for w in run_.windows if w.label[0].isdigit()],
        "holds": [w.as_json() for w in holds],
        "sustained": sustained.as_json(),
        "accounting": account,
        "stored": stored,
        "duckdb_file_bytes": db_bytes,
        "stop_s": round(stop_s, 2),
        "bulk_insert": bulk,
        "batch_sizes": sizes,
        "path_costs": steps,
        "l2_bytes": l2,
        "profiles": profiles,
    }
    best = max(passing, key=lambda w: w.speed) if passing else None
    add_figures(result, best, failed, sustained, account, bulk, l2, db_bytes)


def tree() -> dict[str, Any]:
    """The commit measured and the daemon files that differed from it (read-only git)."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.rstrip() if done.returncode == 0 else ""

    changed = git("status", "--porcelain", "--", "bistouryd", "etc")
    return {
        "git_commit": git("rev-parse", "--short", "HEAD") or None,
        "uncommitted_daemon_files": [line[3:] for line in changed.splitlines() if line],
    }


def batch_max_rows() -> int:
    """``storage.batch_max_rows`` as the daemon ran it (the shipped config's)."""
    config = yaml.safe_load((REPO / "etc" / "config.yaml").read_text()) or {}
    value = (config.get("storage") or {}).get("batch_max_rows")
    return int(value) if value else int(StorageConfig().batch_max_rows)


def hold(run_: Run, passing: list[Window]) -> list[Window]:
    """Hold the best passing step for ``SUSTAIN_S``; if it does not hold, the next lower
    one (a step can pass 8 s and still fall behind slowly)."""
    out: list[Window] = []
    for step in sorted(passing, key=lambda w: -w.speed)[:2]:
        run_.drain()
        run_.log(f"ingest: holding step {step.label} for {SUSTAIN_S:.0f} s")
        run_.set_speed(step.speed)
        time.sleep(SETTLE_S)
        w = run_.measure(f"sustained {step.label}", SUSTAIN_S)
        run_.log(f"  {describe(w)}")
        out.append(w)
        if w.kept_up:
            break
    run_.drain()
    return out


def ladder(run_: Run) -> None:
    started = time.monotonic()
    for speed in SPEEDS:
        if time.monotonic() - started > LADDER_BUDGET_S:
            run_.log("ingest: ladder stopped by its time budget")
            break
        run_.set_speed(speed)
        time.sleep(SETTLE_S)
        w = run_.measure(f"{speed:g}x", STEP_S)
        run_.log(f"  step {w.label}: {describe(w)}")
        if not w.kept_up or w.bottleneck == "simexchange":
            break


def describe(w: Window) -> str:
    cpu = ", ".join(f"{k} {v:.0f}%" for k, v in w.cpu_pct.items() if v is not None)
    return (
        f"offered {w.offered_per_s:,.0f} frames/s, stored {w.stored_per_s:,.0f}/s — "
        f"{w.verdict}{f' [{w.bottleneck}]' if w.bottleneck else ''}; CPU {cpu}"
    )


def profile(run_: Run, at: Window, work: Path) -> dict[str, Any]:
    """py-spy on every process while the firehose runs at the first failing step."""
    run_.log(f"ingest: py-spy record for {PROFILE_S:.0f} s at {at.label} (the saturated step)")
    run_.set_speed(at.speed)
    time.sleep(SETTLE_S)
    pids = {name: pid for name, (pid, _) in run_.read().cpu.items()}
    spies = {
        name: (firehose.py_spy(pid, PROFILE_S, work / f"{name}.prof"), work / f"{name}.prof")
        for name, pid in pids.items()
        if name in ("simexchange", "collector", "recorder")
    }
    try:
        w = run_.measure(f"profile {at.label}", PROFILE_S, abort=True)
    finally:
        for proc, _ in spies.values():
            if proc is None:
                continue
            try:
                proc.wait(timeout=PROFILE_S + 10)
            except subprocess.TimeoutExpired:
                kill_group(proc)
    out: dict[str, Any] = {"step": at.label, "window": w.as_json()}
    for name, (_, path) in spies.items():
        top = firehose.top_frames(path)
        if top:
            out[name] = top
    run_.set_speed(0)
    return out


def accounting(final: Reading, stored: dict[str, Any], base_backlog: float) -> dict[str, Any]:
    """Every frame the simulator wrote, and where it ended up."""
    ws = stored["raw_by_source_channel"].get("ws", {})
    ws_rows = sum(ws.values())
    sent = final.sim.frames_sent
    drops = {k: v for k, v in final.drops().items() if v}
    raw_drops = {
        "bistoury_md_dropped_total": final.get("bistoury_md_dropped_total"),
        "bistoury_recorder_dropped_total{raw_messages}": final.get(
            "bistoury_recorder_dropped_total", table="raw_messages"
        ),
        "bistoury_recorder_rejected_total{raw_messages}": final.get(
            "bistoury_recorder_rejected_total", table="raw_messages"
        ),
        # the store channel drops raw copies and typed events alike: an upper bound
        "bistoury_store_dropped_total (raw or typed)": final.get("bistoury_store_dropped_total"),
    }
    counted = sum(raw_drops.values())
    lost = sent - ws_rows
    # The store channel's counter does not say whether it dropped a raw copy or a typed
    # event, so the counters explain at most ``counted`` lost frames.
    unexplained = max(0.0, lost - counted)
    typed = stored["tables"]
    return {
        "sim_frames_sent": sent,
        "raw_ws_rows_stored": ws_rows,
        "frames_not_stored": lost,
        "raw_rest_rows_stored": sum(stored["raw_by_source_channel"].get("rest", {}).values()),
        "counted_drops_of_frames": raw_drops,
        "unexplained_loss": unexplained,
        "all_nonzero_drop_counters": drops,
        "agent_restarts": final.restarts,
        "ws_reconnects": final.get("bistoury_ws_reconnects_total"),
        "sim_closed_connections": [
            {k: c.get(k) for k in ("id", "close_reason", "queued")} for c in final.sim.closed
        ],
        "duplicate_ws_texts": ws_rows - stored["distinct_ws_texts"],
        "typed": {
            "l2Book frames → l2_snapshots rows": [ws.get("l2Book", 0), typed["l2_snapshots"]],
            "trades in frames → trades rows": [stored["trades_in_ws_frames"], typed["trades"]],
            "candle frames → candles rows (upserts: one row per bar)": [
                ws.get("candle", 0),
                typed["candles"],
            ],
            "activeAssetCtx frames → asset_ctx rows": [
                ws.get("activeAssetCtx", 0),
                typed["asset_ctx"],
            ],
        },
        "problem_events": stored["problem_events"],
        "backlog_at_firehose_start": base_backlog,
    }


def _db_bytes(path: Path) -> dict[str, int]:
    """The file's size (with its WAL) and the bytes of the blocks in use."""
    wal = Path(f"{path}.wal")
    size = path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    con = duckdb.connect(str(path), read_only=True)
    try:
        used = storagecost.used_bytes(con)
    finally:
        con.close()
    return {"file": size, "used_blocks": used}


def add_figures(
    result: SuiteResult,
    best: Window | None,
    failed: Window | None,
    sustained: Window,
    account: dict[str, Any],
    bulk: dict[str, Any],
    l2: dict[str, Any],
    db_bytes: dict[str, int],
) -> None:
    bulk_label = f"DuckDB write_batch of the same rows ({bulk['batch_max_rows']}-row batches)"
    saturated = (
        f"saturated at {failed.label} ({failed.offered_per_s:,.0f} frames/s offered): "
        f"{failed.bottleneck}"
        if failed
        else "no step saturated"
    )
    frames = account["raw_ws_rows_stored"] or 1
    result.figures += [
        Figure(
            id="ingest_sustained_rate",
            title=f"End-to-end ingest, sustained {sustained.seconds:.0f} s, zero loss",
            unit="msg/s",
            stat="value",
            measured=round(sustained.stored_per_s) if sustained.kept_up else 0,
            baseline=bulk["messages_per_s"],
            baseline_label=bulk_label,
            aim=RATE_AIM,
            note=(
                f"{sustained.label}: {sustained.offered_per_s:,.0f} frames/s offered; {saturated}"
                if sustained.kept_up
                else f"no step held: {sustained.label} {sustained.verdict}"
            )
            + (
                f"; other processes used {sustained.foreign_cpu_pct:.0f}% CPU meanwhile"
                if (sustained.foreign_cpu_pct or 0.0) > FOREIGN_CPU_PCT
                else ""
            ),
        ),
        Figure(
            id="ingest_best_step",
            title="Highest ladder step kept up (8 s): frames offered",
            unit="msg/s",
            stat="value",
            measured=round(best.offered_per_s) if best else 0,
            baseline=round(best.stored_per_s) if best else None,
            baseline_label="raw rows committed per second" if best else None,
            aim=RATE_AIM,
            note=f"step {best.label}" if best else "no step kept up",
        ),
        Figure(
            id="ingest_unexplained_loss",
            title="Frames lost without a counter, whole run",
            unit="msg",
            stat="value",
            measured=account["unexplained_loss"],
            aim=ZERO_LOSS_AIM,
            note=f"{account['sim_frames_sent']} sent, {account['raw_ws_rows_stored']} stored",
        ),
        Figure(
            id="bulk_insert_rows",
            title=bulk_label,
            unit="rows/s",
            stat="value",
            measured=bulk["rows_per_s"],
            note=f"{bulk['messages_per_s']:,} msg/s; {bulk['frames']} frames",
        ),
        Figure(
            id="l2_duckdb_bytes",
            title="DuckDB bytes per stored l2Book message: l2_snapshots",
            unit="B",
            stat="value",
            measured=l2["duckdb_l2_snapshots_bytes_per_message"],
            note=f"{l2['levels_per_book']} levels; JSON frame "
            f"{l2['json_text_bytes_per_message']:.0f} B",
        ),
        Figure(
            id="l2_duckdb_raw_bytes",
            title="DuckDB bytes per stored l2Book message: raw_messages copy",
            unit="B",
            stat="value",
            measured=l2["duckdb_raw_messages_bytes_per_message"],
        ),
        Figure(
            id="l2_parquet_bytes",
            title="Parquet bytes per l2Book message: l2_snapshots",
            unit="B",
            stat="value",
            measured=l2["parquet_l2_snapshots_bytes_per_message"],
        ),
        Figure(
            id="l2_parquet_raw_bytes",
            title="Parquet bytes per l2Book message: raw_messages copy",
            unit="B",
            stat="value",
            measured=l2["parquet_raw_messages_bytes_per_message"],
        ),
        Figure(
            id="duckdb_bytes_per_message",
            title="DuckDB file bytes per stored message, whole run (all tables)",
            unit="B",
            stat="value",
            measured=round(db_bytes["used_blocks"] / frames),
            note=f"blocks in use {db_bytes['used_blocks'] / 1e6:.1f} MB, file "
            f"{db_bytes['file'] / 1e6:.1f} MB, for {frames} frames",
        ),
    ]
    per_frame: dict[str, float] = {}
    for name in ("collector", "recorder", "bistouryd", "simexchange"):
        pct = sustained.cpu_pct.get(name)
        if pct is not None and sustained.offered_per_s:
            per_frame[name] = pct / 100 / sustained.offered_per_s * 1e6
    for name in ("collector", "recorder", "simexchange"):
        if name in per_frame:
            result.figures.append(
                Figure(
                    id=f"cpu_per_message_{name}",
                    title=f"CPU per message: {name} ({sustained.label})",
                    unit="µs",
                    stat="value",
                    measured=round(per_frame[name], 1),
                    note=f"{sustained.cpu_pct[name]:.0f}% of a core",
                )
            )
    daemon = [per_frame.get(n) for n in ("collector", "recorder", "bistouryd")]
    if all(v is not None and v > 0 for v in daemon):
        collector, recorder, orchestrator = (float(v or 0) for v in daemon)
        cores = os.cpu_count() or 1
        # Each agent is one Python process (one core at most, the GIL); together they
        # cannot use more than the machine.
        ceiling = min(1e6 / collector, 1e6 / recorder, cores * 1e6 / sum((collector, recorder)))
        result.figures.append(
            Figure(
                id="daemon_ceiling",
                title="Projected daemon ceiling with the machine to itself",
                unit="msg/s",
                stat="value",
                measured=round(ceiling),
                aim=RATE_AIM,
                note=f"from CPU per frame: collector {collector:.0f} µs (one core at most), "
                f"recorder {recorder:.0f} µs, bistouryd {orchestrator:.0f} µs; no simulator",
            )
        )
