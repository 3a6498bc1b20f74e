"""The foundation suite: control round-trip, bus latency, ``bistouryctl status``, memory.

The bus runs first, without a daemon, so that nothing else competes for the CPU. Then one
real bistouryd serves the other three: memory is read first, while it is idle, before
the round-trips wake it up. The daemon is stopped with ``stop`` as a user would, and
killed as a group if anything fails on the way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from bench import bus, cli, control, memory
from bench.daemon import Daemon
from bench.procs import BenchError
from bench.stats import Aim, Dist, Figure, compare
from bench.workers import RAW

IDLE_S = 3.0
BUS_AIM = Aim(2.0, on="ratio")
CTL_AIM_MS = Aim(150.0)
RSS_AIM_MB = Aim(400.0)
Log = Callable[[str], None]


@dataclass
class SuiteResult:
    """What a suite hands to the report: rows, the distributions behind them, details."""

    figures: list[Figure] = field(default_factory=list)
    distributions: dict[str, Dist] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def add(self, group: str, dists: dict[str, Dist]) -> None:
        self.distributions.update({f"{group}.{k}": v for k, v in dists.items()})

    def as_json(self) -> dict[str, Any]:
        return {
            "figures": [f.as_json() for f in self.figures],
            "distributions": {k: asdict(v) for k, v in self.distributions.items()},
            "details": self.details,
        }


def run(log: Log) -> SuiteResult:
    result = SuiteResult()
    bus_figures(result, log)
    with Daemon() as daemon:
        log(f"daemon: starting bistouryd (runtime dir {daemon.runtime})")
        ready_s = daemon.wait_ready()
        log(f"daemon: ready after {ready_s:.2f} s; idle for {IDLE_S:.0f} s before reading memory")
        time.sleep(IDLE_S)
        memory_figure(result, daemon.pid, log)
        control_figures(result, *control.measure(daemon.socket, log))
        cli_figures(result, cli.measure(daemon.socket, log), log)
        log("daemon: stop (Client.call('stop'), what bistouryctl stop sends)")
        stop_s = daemon.stop()
        time.sleep(0.2)
        leftovers = daemon.leftovers()
        result.details["daemon"] = {
            "ready_s": round(ready_s, 2),
            "stop_s": round(stop_s, 2),
            "processes_left_after_stop": leftovers,
        }
        if leftovers:
            raise BenchError(f"processes left after stop: {leftovers}")
    return result


def bus_figures(result: SuiteResult, log: Log) -> None:
    d, stages, delivery = bus.latencies(log)
    result.add("bus", d)
    result.add("bus_stage", stages)
    log("bus: envelope encode/decode cost, in process")
    result.details["bus"] = {
        "rounds": bus.ROUNDS,
        "messages_per_round": bus.COUNT // bus.ROUNDS,
        "warmup_messages_per_run": bus.WARMUP,
        "period_us": bus.PERIOD_US,
        "bare_payload_bytes": RAW.size,
        "envelope_bytes": bus.envelope_size(),
        "delivery": delivery,
        "envelope_cpu_us_per_message": bus.envelope_costs(),
    }
    direct = d["bare_direct"]
    result.figures += [
        compare("bus_p50", "Bus one-way latency p50", d["bus"], "p50", direct, BUS_AIM),
        compare("bus_p99", "Bus one-way latency p99", d["bus"], "p99", direct, BUS_AIM),
        compare(
            "bus_same_topology_p50",
            "Bus p50 vs bare pyzmq through the same proxy",
            d["bus"],
            "p50",
            d["bare_proxy"],
        ),
        compare(
            "bus_proxy_hop_p50",
            "breakdown: + proxy hop (raw bytes) p50",
            d["bare_proxy"],
            "p50",
            direct,
        ),
        compare(
            "bus_asyncio_p50",
            "breakdown: + zmq.asyncio both ends p50",
            d["bare_proxy_async"],
            "p50",
            d["bare_proxy"],
        ),
        compare(
            "bus_envelope_p50",
            "breakdown: + envelope/pydantic (= bus) p50",
            d["bus"],
            "p50",
            d["bare_proxy_async"],
        ),
    ]
    result.figures += [
        compare(f"bus_stage_{name}_p50", f"traced bus stage p50: {name}", dist, "p50")
        for name, dist in stages.items()
    ]


def control_figures(result: SuiteResult, d: dict[str, Dist], details: dict[str, Any]) -> None:
    result.add("control", d)
    result.details["control"] = {
        "rounds": control.ROUNDS,
        "calls_per_round": control.CALLS // control.ROUNDS,
        **details,
    }
    ours, fresh = d["bistoury"], d["bare_fresh"]
    result.figures += [
        compare("control_rtt_p50", "Control round-trip p50", ours, "p50", fresh),
        compare("control_rtt_p99", "Control round-trip p99", ours, "p99", fresh),
        compare(
            "control_rtt_vs_persistent_p50",
            "Control round-trip p50 vs persistent socket",
            ours,
            "p50",
            d["bare_persistent"],
        ),
        compare(
            "control_client_share_p50",
            "breakdown: Client.call → bare REP server p50",
            d["client_bare"],
            "p50",
            fresh,
        ),
        compare(
            "control_server_share_p50",
            "breakdown: Client.call → ControlServer, stub handler p50",
            d["client_stub"],
            "p50",
            d["client_bare"],
        ),
    ]


def cli_figures(result: SuiteResult, d: dict[str, Dist], log: Log) -> None:
    result.add("cli", d)
    log("cli: python -X importtime -c 'import bistouryctl.main'")
    profile = cli.import_profile()
    result.details["bistouryctl_import"] = profile
    ctl, floor = d["ctl_status"], d["python_pass"]
    import_ms = round(d["import_ctl"].p50 - floor.p50, 1)
    result.figures += [
        compare(
            "ctl_status_p50", "bistouryctl status wall time p50", ctl, "p50", floor, CTL_AIM_MS
        ),
        compare(
            "ctl_status_p90", "bistouryctl status wall time p90", ctl, "p90", floor, CTL_AIM_MS
        ),
        Figure(
            id="ctl_import",
            title="import bistouryctl.main (wall, over python -c pass)",
            unit="ms",
            stat="value",
            measured=import_ms,
            note=f"-X importtime says {profile['total_ms']} ms",
        ),
    ]


def memory_figure(result: SuiteResult, pid: int, log: Log) -> None:
    rows = memory.snapshot(pid)
    rss, pss = memory.totals(rows)
    per_process = ", ".join(f"{r['name']} {r['rss_mb']:.0f}" for r in rows)
    log(f"memory: total RSS {rss:.0f} MB ({per_process})")
    result.details["memory"] = {"processes": rows, "total_rss_mb": rss, "total_pss_mb": pss}
    result.figures.append(
        Figure(
            id="daemon_rss",
            title=f"Daemon total RSS, idle ({len(rows)} processes)",
            unit="MB",
            stat="value",
            measured=rss,
            aim=RSS_AIM_MB,
            note=f"{per_process}; PSS total {pss} MB",
        )
    )
