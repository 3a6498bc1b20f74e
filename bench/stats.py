"""Distributions and figures: what a benchmark hands to the report.

A ``Dist`` keeps a summary, not the samples, so results files stay small and diffable;
measured in interleaved rounds, it is the quietest round (see ``Dist.best_of``).
A ``Figure`` is one row of docs/benchmarks.md: a statistic of one distribution, the same
statistic of its baseline, their ratio, and the aim it is held to (information only).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

Stat = Literal["p50", "p90", "p99", "mean", "value"]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), on sorted data."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


@dataclass(frozen=True)
class Dist:
    """Summary of one measured distribution, in ``unit``."""

    label: str
    unit: str
    n: int
    p50: float
    p90: float
    p99: float
    mean: float
    min: float
    max: float
    rounds_p50: tuple[float, ...] = ()
    rounds_p99: tuple[float, ...] = ()

    @classmethod
    def of(cls, label: str, unit: str, values: Sequence[float], scale: float = 1.0) -> Dist:
        """Summarise raw samples; ``scale`` converts them to ``unit`` (e.g. 1e-3 for ns→µs)."""
        data = sorted(v * scale for v in values)
        if not data:
            raise ValueError(f"{label}: no samples")
        return cls(
            label=label,
            unit=unit,
            n=len(data),
            p50=_r(percentile(data, 50)),
            p90=_r(percentile(data, 90)),
            p99=_r(percentile(data, 99)),
            mean=_r(statistics.fmean(data)),
            min=_r(data[0]),
            max=_r(data[-1]),
        )

    @classmethod
    def best_of(
        cls, label: str, unit: str, rounds: Sequence[Sequence[float]], scale: float = 1.0
    ) -> Dist:
        """The round with the lowest p50, remembering every round's p50 and p99.

        On a shared machine a round can coincide with someone else's burst of work; as
        with ``timeit``'s minimum, the quietest round is the best estimate of our own
        cost, and the spread of the others shows how noisy the machine was.
        """
        dists = [cls.of(label, unit, r, scale) for r in rounds]
        best = min(dists, key=lambda d: d.p50)
        return replace(
            best, rounds_p50=tuple(d.p50 for d in dists), rounds_p99=tuple(d.p99 for d in dists)
        )

    def get(self, stat: Stat) -> float:
        return self.mean if stat == "value" else float(getattr(self, stat))


@dataclass(frozen=True)
class Aim:
    """``measured`` (or the ratio, when ``on == "ratio"``) must be below ``limit``, or at
    least ``limit`` with ``at_least``; ``text`` replaces the generated description."""

    limit: float
    on: Literal["measured", "ratio"] = "measured"
    at_least: bool = False
    text: str = ""

    def met(self, measured: float, ratio: float | None) -> bool | None:
        value = ratio if self.on == "ratio" else measured
        if value is None or math.isnan(value):
            return None
        return value >= self.limit if self.at_least else value < self.limit

    def describe(self, unit: str) -> str:
        if self.text:
            return self.text
        sign = "≥" if self.at_least else "<"
        return f"{sign} {self.limit:g}x" if self.on == "ratio" else f"{sign} {self.limit:g} {unit}"


@dataclass(frozen=True)
class Figure:
    """One reported number, next to its baseline and aim."""

    id: str
    title: str
    unit: str
    stat: Stat
    measured: float
    baseline: float | None = None
    baseline_label: str | None = None
    aim: Aim | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0:
            return None
        return round(self.measured / self.baseline, 2)

    @property
    def met(self) -> bool | None:
        return None if self.aim is None else self.aim.met(self.measured, self.ratio)

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["ratio"] = self.ratio
        out["aim"] = None if self.aim is None else {**asdict(self.aim), "text": self.aim_text}
        out["met"] = self.met
        return out

    @property
    def aim_text(self) -> str:
        return "" if self.aim is None else self.aim.describe(self.unit)


def compare(
    fid: str,
    title: str,
    measured: Dist,
    stat: Stat,
    baseline: Dist | None = None,
    aim: Aim | None = None,
    note: str = "",
) -> Figure:
    """A figure from one statistic of a distribution and, optionally, of its baseline."""
    return Figure(
        id=fid,
        title=title,
        unit=measured.unit,
        stat=stat,
        measured=measured.get(stat),
        baseline=None if baseline is None else baseline.get(stat),
        baseline_label=None if baseline is None else baseline.label,
        aim=aim,
        note=note,
    )


def _r(value: float) -> float:
    """Round to 4 significant digits: more is noise, and it keeps the JSON readable."""
    if value == 0 or math.isnan(value):
        return value
    return round(value, max(0, 3 - math.floor(math.log10(abs(value)))))
