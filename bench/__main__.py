"""``python -m bench [SUITE...]``: run the suites (default: all), print a summary, write
their results and regenerate docs/benchmarks.md."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable

from bench import foundation, ingest, llm, report, signals, trading
from bench.foundation import SuiteResult
from bench.procs import REPO, BenchError, short_tmpdir
from bench.stats import Figure

Log = Callable[[str], None]
SUITES: dict[str, Callable[[Log], SuiteResult]] = {
    "foundation": foundation.run,
    "ingest": ingest.run,
    "signals": signals.run,
    "llm": llm.run,
    "trading": trading.run,
}


def progress(started: float) -> Log:
    def log(message: str) -> None:
        print(f"[bench {time.monotonic() - started:5.1f}s] {message}", flush=True)

    return log


def summary_line(f: Figure) -> str:
    ratio = "" if f.ratio is None else f"  {f.ratio:.2f}x {f.baseline_label}"
    aim = "" if f.aim is None else f"  aim {f.aim_text}: {'met' if f.met else 'MISSED'}"
    return f"  {f.title:<56} {report.num(f.measured, f.unit):>12}{ratio}{aim}"


def _terminate(signum: int, _frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so the daemon and workers are stopped on the way out."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    names = list(sys.argv[1:] if argv is None else argv) or list(SUITES)
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        print(f"bench: unknown suite {', '.join(unknown)}; choose from {', '.join(SUITES)}")
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    log = progress(started)
    probe = short_tmpdir()  # fail early, before any process starts, if /tmp is unusable
    probe.rmdir()
    failed, written = [], []
    for name in names:
        suite_started = time.monotonic()
        load = report.load_average()
        try:
            result = SUITES[name](log)
        except BenchError as exc:
            print(f"bench: {name} FAILED: {exc}", file=sys.stderr)
            failed.append(name)
            continue
        data = report.document(name, time.monotonic() - suite_started, load, result.as_json())
        written.append(report.write_results(name, data))
        print(f"\n{name}, {data['duration_s']} s:")
        for figure in result.figures:
            print(summary_line(figure))
        if report.busy(data):
            print(
                "\nwarning: the machine was busy (load average above its core count); "
                "latencies are pessimistic"
            )
    if written:
        docs = report.write_docs()
        paths = ", ".join(str(p.relative_to(REPO)) for p in written)
        print(f"\nwrote {paths} and {docs.relative_to(REPO)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
