"""The numbers behind the table: medians and spreads of repeated runs, goals and whether they hold.

Every measurement is repeated (three times by default) and reported as the median with its
spread (lowest and highest run). A ratio goal compares two measurements taken side by side in the
same repetition, so its value is the median of the per-repetition ratios: drift of the shared
machine between repetitions moves both sides of a ratio together.
"""

from __future__ import annotations

import math
import operator
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_COMPARE: Mapping[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
}
_SYMBOL = {">=": "≥", "<=": "≤"}


@dataclass(frozen=True)
class Spread:
    """The median of repeated runs and how far apart they were."""

    median: float
    low: float
    high: float
    runs: tuple[float, ...]

    @classmethod
    def of(cls, runs: Sequence[float]) -> Spread:
        """Summarise at least one run."""
        if not runs:
            raise ValueError("a spread needs at least one run")
        if any(math.isnan(run) for run in runs):
            raise ValueError("a run is NaN")
        return cls(median=statistics.median(runs), low=min(runs), high=max(runs), runs=tuple(runs))

    @property
    def relative(self) -> float:
        """(highest - lowest) / median: 0.1 means the runs lay within 10 % of the median."""
        if self.median == 0:
            return 0.0 if self.high == self.low else math.inf
        return (self.high - self.low) / abs(self.median)

    def as_json(self) -> dict[str, Any]:
        """The spread as plain JSON values."""
        return {
            "median": self.median,
            "min": self.low,
            "max": self.high,
            "relative": round(self.relative, 4) if math.isfinite(self.relative) else None,
            "runs": list(self.runs),
        }


@dataclass(frozen=True)
class Threshold:
    """One bound of a goal: ``<name> <op> <limit>`` (op is ``>=`` or ``<=``)."""

    op: str
    limit: float
    name: str = "ratio"
    unit: str = ""

    def __post_init__(self) -> None:
        if self.op not in _COMPARE:
            raise ValueError(f"unknown comparison {self.op!r}")

    def holds(self, value: float) -> bool:
        """Whether ``value`` meets this bound (NaN never does)."""
        return not math.isnan(value) and _COMPARE[self.op](value, self.limit)

    def describe(self, *, with_name: bool) -> str:
        unit = f" {self.unit}" if self.unit else ""
        limit = f"{self.limit:g}{unit}"
        text = f"{_SYMBOL[self.op]} {limit}"
        return f"{self.name} {text}" if with_name else text


@dataclass(frozen=True)
class Goal:
    """Every threshold must hold for the goal to be met."""

    thresholds: tuple[Threshold, ...]

    @classmethod
    def ratio(cls, op: str, limit: float, *, unit: str = "") -> Goal:
        """A goal on a ratio measured against a baseline (``unit`` is ``×`` for speed-ups)."""
        return cls((Threshold(op, limit, "ratio", unit),))

    def met(self, values: Mapping[str, float]) -> bool:
        """Whether every threshold holds for ``values`` (by threshold name)."""
        return all(t.name in values and t.holds(values[t.name]) for t in self.thresholds)

    def describe(self) -> str:
        named = len(self.thresholds) > 1 or self.thresholds[0].name != "ratio"
        return ", ".join(t.describe(with_name=named) for t in self.thresholds)


@dataclass(frozen=True)
class Result:
    """One line of the table and one key of the JSON file.

    A ratio result has a ``baseline`` and ``measured`` (medians of the absolute numbers) and
    ``ratios`` (per repetition); an absolute result (P5, P6) has ``values`` by threshold name.
    """

    id: str
    measure: str
    goal: Goal
    unit: str
    baseline: Spread | None = None
    measured: Spread | None = None
    ratios: Spread | None = None
    values: Mapping[str, Spread] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    error: str | None = None

    @property
    def ratio(self) -> float | None:
        """The median of the per-repetition ratios, if this is a ratio result."""
        return self.ratios.median if self.ratios is not None else None

    def checked_values(self) -> dict[str, float]:
        """The medians the goal is checked against, by threshold name."""
        checked = {name: spread.median for name, spread in self.values.items()}
        if self.ratios is not None:
            checked["ratio"] = self.ratios.median
        return checked

    @property
    def met(self) -> bool:
        """Whether the goal holds for the medians (never for a failed measurement)."""
        return self.error is None and self.goal.met(self.checked_values())

    def as_json(self) -> dict[str, Any]:
        """``{"value", "baseline", "goal", "met"}`` plus the details behind them."""
        value: Any
        if self.error is not None:
            value = None
        elif self.ratios is not None:
            value = _rounded(self.ratios.median)
        elif len(self.values) == 1:
            value = _rounded(next(iter(self.values.values())).median)
        else:
            value = {name: _rounded(spread.median) for name, spread in self.values.items()}
        detail: dict[str, Any] = {"measure": self.measure, "unit": self.unit}
        if self.baseline is not None:
            detail["baseline"] = self.baseline.as_json()
        if self.measured is not None:
            detail["measured"] = self.measured.as_json()
        if self.ratios is not None:
            detail["ratio"] = self.ratios.as_json()
        for name, spread in self.values.items():
            detail[name] = spread.as_json()
        if self.notes:
            detail["notes"] = list(self.notes)
        if self.error is not None:
            detail["error"] = self.error
        return {
            "value": value,
            "baseline": _rounded(self.baseline.median) if self.baseline is not None else None,
            "goal": self.goal.describe(),
            "met": self.met,
            "detail": detail,
        }


def _rounded(value: float) -> float:
    return round(value, 4) if math.isfinite(value) else value


def paired_ratios(measured: Sequence[float], baseline: Sequence[float]) -> list[float]:
    """measured[i] / baseline[i] for each repetition (a zero baseline gives NaN)."""
    if len(measured) != len(baseline):
        raise ValueError("ratios need as many measured runs as baseline runs")
    return [m / b if b else math.nan for m, b in zip(measured, baseline, strict=True)]


def ratio_result(
    *,
    id: str,
    measure: str,
    goal: Goal,
    unit: str,
    measured: Sequence[float],
    baseline: Sequence[float],
    notes: Sequence[str] = (),
) -> Result:
    """A ratio result from paired runs of the measured system and its baseline."""
    ratios = [r for r in paired_ratios(measured, baseline) if not math.isnan(r)]
    if not ratios:
        return failed(id=id, measure=measure, goal=goal, unit=unit, error="baseline was zero")
    return Result(
        id=id,
        measure=measure,
        goal=goal,
        unit=unit,
        baseline=Spread.of(baseline),
        measured=Spread.of(measured),
        ratios=Spread.of(ratios),
        notes=tuple(notes),
    )


def absolute_result(
    *,
    id: str,
    measure: str,
    goal: Goal,
    unit: str,
    values: Mapping[str, Sequence[float]],
    notes: Sequence[str] = (),
) -> Result:
    """A result checked against absolute thresholds, one list of runs per threshold name."""
    return Result(
        id=id,
        measure=measure,
        goal=goal,
        unit=unit,
        values={name: Spread.of(runs) for name, runs in values.items()},
        notes=tuple(notes),
    )


def failed(*, id: str, measure: str, goal: Goal, unit: str, error: str) -> Result:
    """A measurement that could not be taken: reported, and never met."""
    return Result(id=id, measure=measure, goal=goal, unit=unit, error=error)


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation between closest ranks."""
    if not samples:
        raise ValueError("a percentile needs at least one sample")
    if not 0 <= q <= 100:
        raise ValueError("q must be within 0..100")
    ordered = sorted(samples)
    position = (len(ordered) - 1) * q / 100
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)
