"""The replay clock: the simulated exchange's notion of "now".

Replay time runs at ``speed`` times the wall clock (``1x`` real time, ``60x`` an hour a
minute), stands still when paused (``0``: only the admin endpoint moves it, which makes tests
deterministic), or, at ``max``, is driven by the engine as fast as subscribers take the data.
It never passes the end of the data. Nonces are checked against the wall clock, not this.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

_SPEED = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*x?\s*$", re.IGNORECASE)


def parse_speed(text: str) -> float | None:
    """``"1x"``, ``"60x"``, ``"0.5"``, ``"0"``/``"paused"`` -> a factor, ``"max"`` -> ``None``."""
    word = text.strip().lower()
    if word == "max":
        return None
    if word == "paused":
        return 0.0
    match = _SPEED.match(word)
    if not match:
        raise ValueError(f"speed must look like 1x, 10x, 0.5x, max or paused, not {text!r}")
    return float(match.group(1))


def format_speed(speed: float | None) -> str:
    if speed is None:
        return "max"
    return "paused" if speed == 0 else f"{speed:g}x"


class ReplayClock:
    def __init__(
        self,
        start_ms: int,
        speed: float | None,
        end_ms: int | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._monotonic = monotonic
        self.speed = speed
        self.end_ms = end_ms
        self._anchor_ms = start_ms
        self._anchor_wall = monotonic()

    @property
    def is_max(self) -> bool:
        return self.speed is None

    def now_ms(self) -> int:
        """The replay time the wall clock has reached (at ``max``: where the engine left it)."""
        now = self._anchor_ms
        if self.speed:
            now += int((self._monotonic() - self._anchor_wall) * 1000 * self.speed)
        return now if self.end_ms is None else min(now, self.end_ms)

    def jump_to(self, ms: int) -> None:
        """Continue from ``ms`` (clamped to the end of the data) at the current speed."""
        self._anchor_ms = ms if self.end_ms is None else min(ms, self.end_ms)
        self._anchor_wall = self._monotonic()

    def set_speed(self, speed: float | None) -> None:
        self.jump_to(self.now_ms())
        self.speed = speed

    @property
    def finished(self) -> bool:
        return self.end_ms is not None and self.now_ms() >= self.end_ms
