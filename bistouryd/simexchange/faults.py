"""Faults injected on request (admin endpoint or the Python API), to test a client's
resilience: HTTP errors for the next N requests or N seconds (instead of serving them, or
after serving them: the action took effect but its answer is lost), slow answers, a stalled
websocket (connections stay open, nothing is sent), and going away (the listening socket
closes, connections are refused, then it comes back on the same port).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

REST_PATHS = frozenset({"/info", "/exchange"})


@dataclass
class HttpFault:
    status: int
    remaining: int | None  # requests still to fail (None: until ``until``)
    until: float | None  # monotonic deadline (None: until ``remaining`` runs out)
    paths: frozenset[str]
    info_types: frozenset[str] | None = None  # only these /info request types (None: all)
    after: bool = False  # serve the request first, then answer the error (the answer is lost)


class Faults:
    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self.http: HttpFault | None = None
        self.delay_ms = 0
        self.delay_paths = REST_PATHS
        self.stall_until = 0.0
        self.down_until = 0.0
        self.stalled_frames = 0

    def fail_http(
        self,
        status: int,
        count: int | None = None,
        seconds: float | None = None,
        paths: frozenset[str] = REST_PATHS,
        info_types: frozenset[str] | None = None,
        after: bool = False,
    ) -> None:
        if not 400 <= status <= 599:
            raise ValueError(f"status must be an HTTP error (400-599), not {status}")
        if (count is None) == (seconds is None):
            raise ValueError("give exactly one of count or seconds")
        until = None if seconds is None else self._monotonic() + seconds
        self.http = HttpFault(status, count, until, paths, info_types, after)

    @property
    def wants_info_type(self) -> bool:
        """Whether ``http_error_for`` needs the /info request's ``type`` to decide."""
        return self.http is not None and self.http.info_types is not None

    def http_error_for(self, path: str, info_type: str | None = None) -> HttpFault | None:
        """The fault to answer ``path`` with (its ``status``, instead of or after serving it),
        if one is active."""
        fault = self.http
        if fault is None or path not in fault.paths:
            return None
        if fault.info_types is not None and (path != "/info" or info_type not in fault.info_types):
            return None
        if fault.until is not None and self._monotonic() >= fault.until:
            self.http = None
            return None
        if fault.remaining is not None:
            if fault.remaining <= 0:
                self.http = None
                return None
            fault.remaining -= 1
        return fault

    def stall_ws(self, seconds: float) -> None:
        self.stall_until = self._monotonic() + seconds

    def ws_stalled(self) -> bool:
        return self._monotonic() < self.stall_until

    def delays(self, path: str) -> float:
        """Seconds to wait before serving ``path``."""
        return self.delay_ms / 1000 if path in self.delay_paths else 0.0

    def clear(self) -> None:
        self.http = None
        self.delay_ms = 0
        self.delay_paths = REST_PATHS
        self.stall_until = 0.0

    def describe(self) -> dict[str, object]:
        now = self._monotonic()
        http = None
        if self.http is not None:
            http = {
                "status": self.http.status,
                "remaining": self.http.remaining,
                "seconds_left": None
                if self.http.until is None
                else max(0.0, self.http.until - now),
                "paths": sorted(self.http.paths),
                "info_types": None
                if self.http.info_types is None
                else sorted(self.http.info_types),
                "after": self.http.after,
            }
        return {
            "http_error": http,
            "delay_ms": self.delay_ms,
            "delay_paths": sorted(self.delay_paths),
            "ws_stall_seconds_left": max(0.0, self.stall_until - now),
            "ws_frames_dropped_by_stall": self.stalled_frames,
            "down_seconds_left": max(0.0, self.down_until - now),
        }
