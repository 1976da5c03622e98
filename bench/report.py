"""What a run leaves behind: the printed table, ``bench/results/<timestamp>.json`` and a plot."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.stats import Result, Spread

RESULTS_DIR = Path(__file__).resolve().parent / "results"
LATEST = "latest.json"
COLUMNS = ("id", "measure", "baseline", "measured", "ratio", "goal", "met?")


@dataclass
class Charts:
    """What the plot shows: throughputs (median and spread) and latency percentiles."""

    throughput: dict[str, tuple[Spread, str]] = field(default_factory=dict)  # name → (runs, unit)
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # name → {p50: ms}


def _number(value: float, *, decimals: int = 2) -> str:
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.{decimals}f}"


def format_spread(spread: Spread, unit: str = "", *, decimals: int = 2) -> str:
    """``median unit (low–high)``; the range is left out for a single run."""
    text = _number(spread.median, decimals=decimals) + (f" {unit}" if unit else "")
    if len(spread.runs) > 1:
        low, high = (_number(v, decimals=decimals) for v in (spread.low, spread.high))
        text += f" ({low}–{high})"
    return text


def _row(result: Result) -> tuple[str, ...]:
    if result.error is not None:
        return (result.id, result.measure, "—", f"failed: {result.error}", "—", "", "no")
    baseline = format_spread(result.baseline, result.unit) if result.baseline else "—"
    if result.measured is not None:
        measured = format_spread(result.measured, result.unit)
    else:
        measured = "; ".join(
            f"{name} {format_spread(spread, result.unit)}" for name, spread in result.values.items()
        )
    # Three decimals: a ratio just below its goal must not print as the goal itself.
    ratio = format_spread(result.ratios, decimals=3) if result.ratios is not None else "—"
    return (
        result.id,
        result.measure,
        baseline,
        measured,
        ratio,
        result.goal.describe(),
        "yes" if result.met else "NO",
    )


def format_table(results: Sequence[Result]) -> str:
    """The results as an aligned text table (medians, with the range of the runs)."""
    rows = [COLUMNS, *(_row(result) for result in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = []
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def format_markdown(results: Sequence[Result]) -> str:
    """The same table in Markdown (for a README)."""
    rows = [_row(result) for result in results]
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def results_document(results: Sequence[Result]) -> dict[str, Any]:
    """One key per goal id: ``{"value", "baseline", "goal", "met", "detail"}``."""
    return {result.id: result.as_json() for result in results}


def write_results(results: Sequence[Result], *, directory: Path, stamp: str) -> Path:
    """Write ``<stamp>.json`` and its copy ``latest.json``; returns the first."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stamp}.json"
    path.write_text(json.dumps(results_document(results), indent=2, allow_nan=False) + "\n")
    shutil.copyfile(path, directory / LATEST)
    return path


def plot(charts: Charts, path: Path, *, title: str) -> Path:
    """Throughput bars (median, whiskers for the range) and latency percentiles, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(15, 6.5))
    figure.suptitle(title, fontsize=10)

    names = list(charts.throughput)
    medians = [charts.throughput[n][0].median for n in names]
    lows = [charts.throughput[n][0].median - charts.throughput[n][0].low for n in names]
    highs = [charts.throughput[n][0].high - charts.throughput[n][0].median for n in names]
    labels = [f"{n}\n[{charts.throughput[n][1]}]" for n in names]
    positions = list(range(len(names)))
    left.barh(positions, medians, xerr=[lows, highs], color="tab:blue", alpha=0.8, capsize=3)
    left.set_yticks(positions, labels, fontsize=7)
    left.invert_yaxis()
    left.set_xscale("log")
    left.set_xlabel("throughput, median of the runs (log scale; whiskers: lowest–highest run)")
    left.set_title("Throughput")
    tops = [charts.throughput[n][0].high for n in names]
    for position, value, top in zip(positions, medians, tops, strict=True):
        left.annotate(
            _number(value),
            (top, position),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=7,
        )

    for name, points in charts.latency_ms.items():
        order = sorted(points, key=_percentile_key)
        right.plot(
            [_percentile_key(p) for p in order], [points[p] for p in order], marker="o", label=name
        )
    right.set_xscale("logit")
    ticks = sorted({_percentile_key(p) for pts in charts.latency_ms.values() for p in pts})
    if ticks:
        right.set_xticks(ticks, [f"p{t * 100:g}" for t in ticks])
        right.minorticks_off()
    right.set_yscale("log")
    right.set_ylabel("latency, ms (log scale)")
    right.set_title("Latency percentiles (median run)")
    right.grid(True, which="both", alpha=0.3)
    if charts.latency_ms:
        right.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _percentile_key(label: str) -> float:
    return float(label.lstrip("p")) / 100


def median_percentiles(runs: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per percentile label, the median over runs (for the plot)."""
    labels = runs[0].keys() if runs else []
    return {label: Spread.of([run[label] for run in runs]).median for label in labels}
