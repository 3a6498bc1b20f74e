"""``bistouryctl status`` as people run it: a new process each time.

Its wall time is interpreter start + imports + one round-trip + printing. Interpreter
start (``python -c pass``) is the floor no client code can go below, so it is the
baseline; the import of ``bistouryctl.main`` is measured on its own, by wall time and by
``-X importtime``, because imports are what a client change can make slower.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.procs import BIN, REPO, BenchError, clean_env
from bench.stats import Dist

RUNS = 20
WARMUP = 2
TIMEOUT_S = 15.0
Log = Callable[[str], None]
_IMPORTTIME = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)")


def wall_ms(cmd: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        cmd, cwd=REPO, env=clean_env(), capture_output=True, timeout=TIMEOUT_S, check=False
    )
    elapsed = (time.perf_counter() - start) * 1000
    if done.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr.decode()[-500:]}")
    return elapsed


def measure(socket_path: Path, log: Log) -> dict[str, Dist]:
    """``RUNS`` of each command, interleaved so that drift hits all of them alike."""
    commands = {
        "ctl_status": (
            "bistouryctl status (process)",
            [str(BIN / "bistouryctl"), "--socket", str(socket_path), "status"],
        ),
        "python_pass": ("python -c pass (interpreter start)", [sys.executable, "-c", "pass"]),
        "import_ctl": (
            "python -c 'import bistouryctl.main'",
            [sys.executable, "-c", "import bistouryctl.main"],
        ),
    }
    samples: dict[str, list[float]] = {key: [] for key in commands}
    log(f"cli: {RUNS} runs each of: " + "; ".join(label for label, _ in commands.values()))
    for i in range(WARMUP + RUNS):
        for key, (_, cmd) in commands.items():
            elapsed = wall_ms(cmd)
            if i >= WARMUP:
                samples[key].append(elapsed)
    return {key: Dist.of(label, "ms", samples[key]) for key, (label, _) in commands.items()}


def import_profile(top: int = 8) -> dict[str, Any]:
    """``-X importtime`` of ``bistouryctl.main``: its cumulative time, and the heaviest imports.

    Best of three runs of the total, since a single run is noisy at this scale.
    """
    best: dict[str, Any] | None = None
    for _ in range(3):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import bistouryctl.main"],
            cwd=REPO,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=True,
        )
        profile = _parse_importtime(done.stderr, top)
        if best is None or profile["total_ms"] < best["total_ms"]:
            best = profile
    assert best is not None
    return best


def _parse_importtime(stderr: str, top: int) -> dict[str, Any]:
    rows = []  # (name, self µs, cumulative µs, depth)
    for line in stderr.splitlines():
        match = _IMPORTTIME.match(line)
        if match:
            self_us, cumulative_us, indent, name = match.groups()
            rows.append((name, int(self_us), int(cumulative_us), (len(indent) - 1) // 2))
    # importtime prints children before their parent: bistouryctl.main's subtree is the
    # run of deeper rows right before it.
    end = next(i for i, row in enumerate(rows) if row[0] == "bistouryctl.main")
    start = max((i for i in range(end) if rows[i][3] == 0), default=-1) + 1
    subtree = rows[start:end]
    direct = sorted((r for r in subtree if r[3] == 1), key=lambda r: -r[2])[:top]
    by_self = sorted(subtree, key=lambda r: -r[1])[:top]
    return {
        "total_ms": round(rows[end][2] / 1000, 2),
        "modules": len(subtree) + 1,
        "direct_imports_cumulative_ms": {r[0]: round(r[2] / 1000, 2) for r in direct},
        "heaviest_modules_self_ms": {r[0]: round(r[1] / 1000, 2) for r in by_self},
    }
