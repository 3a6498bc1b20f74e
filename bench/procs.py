"""Starting, waiting for and always reaping the processes a benchmark needs.

Every process is started in its own session, so one ``killpg`` reaches it and anything it
started; every wait has a deadline. A benchmark that fails must not leave a process behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# systemd's variables would make the daemon talk to a service manager that is not there.
SYSTEMD_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "INVOCATION_ID")


class BenchError(RuntimeError):
    """A benchmark could not run (a process died, a deadline passed)."""


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SYSTEMD_VARS}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def short_tmpdir() -> Path:
    """A directory under /tmp: Unix socket paths must fit in 107 bytes."""
    return Path(tempfile.mkdtemp(prefix="bb", dir="/tmp"))


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


def kill_group(proc: subprocess.Popen[bytes], grace_s: float = 2.0) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
        if not group_alive(proc.pid):
            return


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_until(
    check: Callable[[], bool], timeout_s: float, what: str, proc: subprocess.Popen[bytes]
) -> None:
    """Poll ``check`` until true; fail early if ``proc`` dies, late if the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if proc.poll() is not None:
            raise BenchError(f"{what}: process exited with status {proc.returncode}")
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(0.01)


class Worker:
    """One ``python -m bench.workers`` process, its stderr kept in a log file."""

    def __init__(self, name: str, args: list[str], logdir: Path):
        self.name = name
        self.log = logdir / f"{name}.log"
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.workers", *args],
                cwd=REPO,
                env=clean_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )

    def wait_for(self, path: Path, timeout_s: float) -> None:
        """Wait until the worker creates ``path`` (its ready marker)."""
        try:
            wait_until(path.exists, timeout_s, f"worker {self.name}", self.proc)
        except BenchError as exc:
            raise BenchError(f"{exc}:\n{tail(self.log)}") from None

    def finish(self, timeout_s: float) -> None:
        """Wait for a clean exit; raise with the worker's stderr otherwise."""
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise BenchError(
                f"worker {self.name} did not finish within {timeout_s:.0f} s"
            ) from None
        if code != 0:
            raise BenchError(f"worker {self.name} exited with {code}:\n{tail(self.log)}")

    def kill(self) -> None:
        if self.proc.poll() is None or group_alive(self.proc.pid):
            kill_group(self.proc)


@contextlib.contextmanager
def workers(logdir: Path) -> Iterator[Callable[[str, list[str]], Worker]]:
    """Yields a ``start(name, args)``; every worker started is killed on the way out."""
    started: list[Worker] = []

    def start(name: str, args: list[str]) -> Worker:
        worker = Worker(name, args, logdir)
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.kill()
