"""``python -m bench``: run every suite, print a summary, write results and the docs table."""

from __future__ import annotations

import signal
import sys
import time

from bench import foundation, report
from bench.procs import BenchError, short_tmpdir
from bench.stats import Figure

SUITE = "foundation"


def progress(started: float) -> foundation.Log:
    def log(message: str) -> None:
        print(f"[bench {time.monotonic() - started:5.1f}s] {message}", flush=True)

    return log


def summary_line(f: Figure) -> str:
    ratio = "" if f.ratio is None else f"  {f.ratio:.2f}x {f.baseline_label}"
    aim = "" if f.aim is None else f"  aim {f.aim_text}: {'met' if f.met else 'MISSED'}"
    return f"  {f.title:<56} {report.num(f.measured, f.unit):>10}{ratio}{aim}"


def _terminate(signum: int, _frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so the daemon and workers are stopped on the way out."""
    raise SystemExit(128 + signum)


def main() -> int:
    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    load = report.load_average()
    log = progress(started)
    probe = short_tmpdir()  # fail early, before any process starts, if /tmp is unusable
    probe.rmdir()
    try:
        result = foundation.run(log)
    except BenchError as exc:
        print(f"bench: FAILED: {exc}", file=sys.stderr)
        return 1
    data = report.document(SUITE, time.monotonic() - started, load, result.as_json())
    path = report.write_results(SUITE, data)
    docs = report.write_docs()
    print(f"\nfoundation, {data['duration_s']} s:")
    for figure in result.figures:
        print(summary_line(figure))
    if report.busy(data):
        print(
            "\nwarning: the machine was busy (load average above its core count); "
            "latencies are pessimistic"
        )
    print(f"\nwrote {path.relative_to(report.REPO)} and {docs.relative_to(report.REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
