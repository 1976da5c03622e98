"""What `make bench` reports: medians and spreads, whether goals are met, the files it writes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.loadgen import LoadError, parse_wrk
from bench.report import Charts, format_table, plot, results_document, write_results
from bench.stats import (
    Goal,
    Spread,
    Threshold,
    absolute_result,
    failed,
    paired_ratios,
    percentile,
    ratio_result,
)

AT_LEAST_HALF = Goal.ratio(">=", 0.5)
AT_MOST_TWICE = Goal.ratio("<=", 2.0, unit="×")
LATENCY = Goal((Threshold("<=", 10, "p50", "ms"), Threshold("<=", 50, "p99", "ms")))


class TestSpread:
    def test_median_and_range_of_the_runs(self) -> None:
        spread = Spread.of([120.0, 100.0, 90.0])

        assert (spread.median, spread.low, spread.high) == (100.0, 90.0, 120.0)
        assert spread.relative == pytest.approx(0.3)

    def test_an_even_number_of_runs_takes_the_middle_two(self) -> None:
        assert Spread.of([1.0, 2.0, 3.0, 10.0]).median == 2.5

    def test_no_runs_is_an_error(self) -> None:
        with pytest.raises(ValueError):
            Spread.of([])

    def test_a_nan_run_is_an_error(self) -> None:
        with pytest.raises(ValueError):
            Spread.of([1.0, math.nan])


class TestRatios:
    def test_ratios_pair_the_runs_of_one_repetition(self) -> None:
        assert paired_ratios([50.0, 60.0], [100.0, 200.0]) == [0.5, 0.3]

    def test_the_value_is_the_median_of_the_per_run_ratios(self) -> None:
        result = ratio_result(
            id="P1",
            measure="m",
            goal=AT_LEAST_HALF,
            unit="req/s",
            measured=[40.0, 60.0, 90.0],
            baseline=[100.0, 100.0, 100.0],
        )

        assert result.ratio == pytest.approx(0.6)
        assert result.measured is not None
        assert result.measured.median == 60.0
        assert result.baseline is not None
        assert result.baseline.median == 100.0
        assert result.met

    @pytest.mark.parametrize(
        ("goal", "measured", "met"),
        [
            (AT_LEAST_HALF, 50.0, True),  # the bound itself is met
            (AT_LEAST_HALF, 49.9, False),
            (AT_MOST_TWICE, 200.0, True),
            (AT_MOST_TWICE, 201.0, False),
        ],
    )
    def test_met_compares_the_median_ratio_with_the_goal(
        self, goal: Goal, measured: float, met: bool
    ) -> None:
        result = ratio_result(
            id="P", measure="m", goal=goal, unit="", measured=[measured] * 3, baseline=[100.0] * 3
        )

        assert result.met is met

    def test_a_zero_baseline_cannot_meet_a_goal(self) -> None:
        result = ratio_result(
            id="P", measure="m", goal=AT_LEAST_HALF, unit="", measured=[1.0], baseline=[0.0]
        )

        assert result.error is not None
        assert not result.met


class TestAbsoluteGoals:
    def test_every_threshold_must_hold(self) -> None:
        ok = absolute_result(
            id="P5",
            measure="m",
            goal=LATENCY,
            unit="ms",
            values={"p50": [3.0, 4.0, 5.0], "p99": [20.0, 30.0, 60.0]},
        )
        slow_tail = absolute_result(
            id="P5",
            measure="m",
            goal=LATENCY,
            unit="ms",
            values={"p50": [3.0, 4.0, 5.0], "p99": [50.0, 60.0, 70.0]},
        )

        assert ok.met  # the medians (4 ms, 30 ms) decide, not the worst run
        assert not slow_tail.met

    def test_a_missing_value_is_not_met(self) -> None:
        result = absolute_result(
            id="P5", measure="m", goal=LATENCY, unit="ms", values={"p50": [1.0]}
        )

        assert not result.met

    def test_a_failed_measurement_is_never_met(self) -> None:
        result = failed(id="P6", measure="m", goal=LATENCY, unit="", error="provider down")

        assert not result.met
        assert "provider down" in format_table([result])


class TestJsonDocument:
    def results(self) -> list:
        return [
            ratio_result(
                id="P1",
                measure="m",
                goal=AT_LEAST_HALF,
                unit="req/s",
                measured=[60.0, 61.0, 59.0],
                baseline=[100.0, 100.0, 100.0],
            ),
            absolute_result(
                id="P5",
                measure="m",
                goal=LATENCY,
                unit="ms",
                values={"p50": [3.0, 4.0, 5.0], "p99": [20.0, 30.0, 40.0]},
            ),
            absolute_result(
                id="P6",
                measure="m",
                goal=Goal((Threshold(">=", 100, "payments/s"),)),
                unit="",
                values={"payments/s": [90.0, 95.0, 99.0]},
            ),
            failed(id="P7", measure="m", goal=AT_MOST_TWICE, unit="ms", error="boom"),
        ]

    def test_one_key_per_goal_with_value_baseline_goal_and_met(self) -> None:
        document = results_document(self.results())

        assert list(document) == ["P1", "P5", "P6", "P7"]
        for entry in document.values():
            assert {"value", "baseline", "goal", "met"} <= set(entry)
            assert isinstance(entry["met"], bool)
            assert isinstance(entry["goal"], str)
        assert document["P1"]["value"] == pytest.approx(0.6)
        assert document["P1"]["baseline"] == 100.0
        assert document["P1"]["goal"] == "≥ 0.5"
        assert document["P1"]["met"] is True
        assert document["P5"]["value"] == {"p50": 4.0, "p99": 30.0}
        assert document["P5"]["goal"] == "p50 ≤ 10 ms, p99 ≤ 50 ms"
        assert document["P6"]["value"] == 95.0
        assert document["P6"]["met"] is False
        assert document["P7"]["value"] is None
        assert document["P7"]["met"] is False

    def test_the_runs_behind_a_value_are_kept(self) -> None:
        detail = results_document(self.results())["P1"]["detail"]

        assert detail["measured"]["runs"] == [60.0, 61.0, 59.0]
        assert detail["ratio"]["min"] == pytest.approx(0.59)
        assert detail["ratio"]["max"] == pytest.approx(0.61)

    def test_the_file_and_its_latest_copy(self, tmp_path: Path) -> None:
        path = write_results(self.results(), directory=tmp_path, stamp="20260101T000000Z")

        assert path == tmp_path / "20260101T000000Z.json"
        written = json.loads(path.read_text())
        assert written == json.loads((tmp_path / "latest.json").read_text())
        assert written == results_document(self.results())


class TestTable:
    def test_a_ratio_just_below_its_goal_does_not_print_as_the_goal(self) -> None:
        result = ratio_result(
            id="P2",
            measure="m",
            goal=Goal.ratio(">=", 2.5),
            unit="req/s",
            measured=[2.4956],
            baseline=[1.0],
        )

        row = next(line for line in format_table([result]).splitlines() if line.startswith("P2"))
        assert "2.496" in row
        assert row.rstrip().endswith("NO")

    def test_a_row_per_goal_with_medians_ranges_and_met(self) -> None:
        table = format_table(TestJsonDocument().results())
        lines = table.splitlines()

        assert lines[0].split() == [
            "id",
            "measure",
            "baseline",
            "measured",
            "ratio",
            "goal",
            "met?",
        ]
        p1 = next(line for line in lines if line.startswith("P1"))
        assert "100 req/s" in p1
        assert "60.0 req/s (59.0–61.0)" in p1
        assert "0.600 (0.590–0.610)" in p1
        assert p1.rstrip().endswith("yes")
        p6 = next(line for line in lines if line.startswith("P6"))
        assert p6.rstrip().endswith("NO")


class TestPlot:
    def test_a_png_is_written(self, tmp_path: Path) -> None:
        charts = Charts()
        charts.throughput["hello"] = (Spread.of([100.0, 120.0, 110.0]), "req/s")
        charts.latency_ms["read"] = {"p50": 1.0, "p90": 2.0, "p99": 5.0, "p99.9": 9.0}

        path = plot(charts, tmp_path / "plot.png", title="t")

        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class TestPercentiles:
    def test_linear_between_closest_ranks(self) -> None:
        samples = [float(x) for x in range(1, 101)]

        assert percentile(samples, 50) == pytest.approx(50.5)
        assert percentile(samples, 99) == pytest.approx(99.01)
        assert percentile([7.0], 99) == 7.0

    def test_wrk_report_is_read_in_milliseconds(self) -> None:
        line = (
            'BENCH_WRK {"requests": 1000, "duration_us": 2000000, "status": 1, "connect": 0, '
            '"read": 0, "write": 0, "timeout": 0, "p50": 1500, "p90": 3000, "p99": 9000, '
            '"p99.9": 12000}'
        )

        run = parse_wrk(f"Running 2s test\n{line}\n")

        assert run.rate == 500.0
        assert run.errors == 1
        assert run.latency_ms == {"p50": 1.5, "p90": 3.0, "p99": 9.0, "p99.9": 12.0}

    def test_wrk_output_without_a_report_is_an_error(self) -> None:
        with pytest.raises(LoadError):
            parse_wrk("connection refused")
