"""Talking to systemd (sd_notify) through the ``sdnotify`` package.

Two gaps of that package are covered here: it has no helper for ``MONOTONIC_USEC``
(needed with ``RELOADING=1``), and it encodes messages as latin-1, silently dropping a
``STATUS=`` line that holds any other character. Messages are sent as UTF-8, which is
what systemd reads, by handing sdnotify a string whose latin-1 bytes are that UTF-8.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping

import sdnotify

log = logging.getLogger(__name__)

# Only the main process talks to systemd (NotifyAccess=main); agents never see these.
SYSTEMD_ONLY_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def child_environ(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for an agent process: ours, minus systemd's notification variables."""
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if k not in SYSTEMD_ONLY_VARS}


def monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def under_systemd(environ: Mapping[str, str] | None = None) -> bool:
    """True when started by systemd as a service (it sets ``INVOCATION_ID``)."""
    env = os.environ if environ is None else environ
    return bool(env.get("INVOCATION_ID") or env.get("NOTIFY_SOCKET"))


class Notifier:
    """sd_notify messages; every method is a no-op outside systemd."""

    def __init__(self) -> None:
        self._notifier: sdnotify.SystemdNotifier | None = None
        self._failed = False
        self.watchdog_interval_s: float | None = None
        if os.environ.get("NOTIFY_SOCKET"):
            try:
                self._notifier = sdnotify.SystemdNotifier(debug=True)
            except OSError as exc:
                log.error("Cannot reach systemd's notification socket: %s", exc)
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID")
        if usec.isdigit() and (not pid or pid == str(os.getpid())):
            self.watchdog_interval_s = int(usec) / 2 / 1_000_000

    @property
    def enabled(self) -> bool:
        return self._notifier is not None

    def send(self, *lines: str) -> None:
        if self._notifier is None:
            return
        message = "\n".join(lines)
        try:
            self._notifier.notify(message.encode("utf-8").decode("latin-1"))
        except OSError as exc:
            if not self._failed:
                log.error("Cannot notify systemd (%s); further failures are not logged", exc)
            self._failed = True

    def ready(self, status: str | None = None) -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> None:
        self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}")

    def stopping(self, status: str | None = None) -> None:
        self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> None:
        self.send(f"STATUS={' '.join(text.split())}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")
