"""Resident memory of the daemon and its agents, idle.

RSS counts shared pages (the interpreter, shared libraries) once per process, so the sum
overstates what the daemon really takes; PSS splits shared pages between their users and
is reported next to it. The aim is on RSS, the stricter of the two.
"""

from __future__ import annotations

import contextlib
from typing import Any

import psutil

MB = 1_000_000


def process_name(proc: psutil.Process) -> str:
    """``bistouryd`` for the orchestrator, the agent's name for ``-m bistouryd.agents.X``."""
    with contextlib.suppress(psutil.Error):
        cmd = proc.cmdline()
        if "-m" in cmd:
            module = cmd[cmd.index("-m") + 1]
            return module.rsplit(".", 1)[-1]
        if any(part.endswith("bistouryd") for part in cmd[:2]):
            return "bistouryd"
    return proc.name()


def snapshot(pid: int) -> list[dict[str, Any]]:
    """RSS and PSS, in MB, of the process and all its descendants."""
    root = psutil.Process(pid)
    rows = []
    for proc in [root, *root.children(recursive=True)]:
        try:
            with proc.oneshot():
                rss = proc.memory_info().rss
                try:
                    pss: float | None = proc.memory_full_info().pss / MB
                except (psutil.AccessDenied, AttributeError):
                    pss = None
                rows.append(
                    {
                        "pid": proc.pid,
                        "name": process_name(proc),
                        "rss_mb": round(rss / MB, 1),
                        "pss_mb": None if pss is None else round(pss, 1),
                    }
                )
        except psutil.NoSuchProcess:
            continue
    return rows


def totals(rows: list[dict[str, Any]]) -> tuple[float, float | None]:
    rss = round(sum(r["rss_mb"] for r in rows), 1)
    pss_values = [r["pss_mb"] for r in rows]
    pss = None if None in pss_values else round(sum(pss_values), 1)
    return rss, pss
