"""Small rolling statistics shared by the strategies (pure, O(1) or O(window) per update).

Strategies keep windows of tens to a few thousand values; plain Python with running
sums is fast enough there and keeps the results exactly reproducible.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right, insort
from collections import deque
from collections.abc import Iterable, Sequence


class Rolling:
    """The last ``size`` values with their mean and standard deviation.

    Keeps running sums, recomputed from scratch every ``size`` updates so that floating
    point drift cannot build up over days of data.
    """

    def __init__(self, size: int):
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self.values: deque[float] = deque(maxlen=size)
        self._sum = 0.0
        self._sumsq = 0.0
        self._since_exact = 0

    def push(self, value: float) -> None:
        if len(self.values) == self.size:
            old = self.values[0]
            self._sum -= old
            self._sumsq -= old * old
        self.values.append(value)
        self._sum += value
        self._sumsq += value * value
        self._since_exact += 1
        if self._since_exact >= self.size:
            self._sum = math.fsum(self.values)
            self._sumsq = math.fsum(v * v for v in self.values)
            self._since_exact = 0

    def __len__(self) -> int:
        return len(self.values)

    @property
    def full(self) -> bool:
        return len(self.values) == self.size

    @property
    def last(self) -> float:
        return self.values[-1]

    @property
    def mean(self) -> float:
        return self._sum / len(self.values) if self.values else 0.0

    @property
    def std(self) -> float:
        """Population standard deviation (0 for fewer than two values)."""
        n = len(self.values)
        if n < 2:
            return 0.0
        var = self._sumsq / n - (self._sum / n) ** 2
        return math.sqrt(var) if var > 0 else 0.0

    def zscore(self, value: float) -> float:
        """How many standard deviations ``value`` is from the window's mean (0 if flat)."""
        sd = self.std
        return (value - self.mean) / sd if sd > 0 else 0.0


class RollingRank:
    """The last ``size`` values kept sorted too, for percentile ranks in O(log n)."""

    def __init__(self, size: int):
        self.window = Rolling(size)
        self._sorted: list[float] = []

    def push(self, value: float) -> None:
        if self.window.full:
            old = self.window.values[0]
            del self._sorted[bisect_left(self._sorted, old)]
        self.window.push(value)
        insort(self._sorted, value)

    def __len__(self) -> int:
        return len(self._sorted)

    def percentile(self, value: float) -> float:
        """Share of the window at or below ``value``, from 0 to 1 (ties count half)."""
        n = len(self._sorted)
        if n == 0:
            return 0.5
        below = bisect_left(self._sorted, value)
        at = bisect_right(self._sorted, value) - below
        return (below + 0.5 * at) / n


def ema(values: Iterable[float], period: int) -> float | None:
    """Exponential moving average (smoothing 2 / (period + 1)), seeded with the first value."""
    alpha = 2.0 / (period + 1)
    out: float | None = None
    for v in values:
        out = v if out is None else out + alpha * (v - out)
    return out


def sma(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else 0.0


def true_range(high: float, low: float, prev_close: float | None) -> float:
    if prev_close is None:
        return high - low
    return max(high - low, abs(high - prev_close), abs(low - prev_close))


def slope(values: Sequence[float]) -> float:
    """Least-squares slope per step of a short series (0 for fewer than two values)."""
    n = len(values)
    if n < 2:
        return 0.0
    mx = (n - 1) / 2
    my = math.fsum(values) / n
    num = math.fsum((i - mx) * (v - my) for i, v in enumerate(values))
    den = math.fsum((i - mx) ** 2 for i in range(n))
    return num / den


def clamp01(x: float) -> float:
    return 0.0 if not math.isfinite(x) else min(1.0, max(0.0, x))
