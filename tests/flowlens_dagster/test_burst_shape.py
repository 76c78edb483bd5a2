"""The burst bench: its prediction input (the connections the generator's estate puts in a window), its
timeline (steady windows, then a burst ending at a window's end) and its ratios."""

import pyarrow.parquet as pq

from flowlens_dagster.bench.burst import generator_connections


def test_connections_grow_with_flows_and_never_exceed_them():
    counts = [generator_connections(n) for n in (0, 5_000.0, 45_000.0, 200_000.0)]
    assert counts[0] == 0
    assert 0 < counts[1] <= 5_000 and counts[1] < counts[2] < counts[3] < 200_000


def test_the_count_matches_what_the_generator_sends(tmp_path):
    from ingest.tools.generate import main as generate

    truth = tmp_path / "truth.parquet"
    # nowhere to send to matters not: the truth file is what was drawn (UDP to a closed port is dropped)
    generate(["--target", "127.0.0.1:9", "--flows", "20000", "--rate", "0", "--versions", "9", "--seed", "3",
              "--truth", str(truth)])  # fmt: skip
    sent = pq.read_table(truth).num_rows  # one row per (src, dst, dst_port, protocol)
    assert abs(generator_connections(20_000) - sent) <= 0.1 * sent


def test_the_burst_ends_at_a_window_end_after_at_least_two_steady_windows(capsys):
    from datetime import UTC, datetime

    from flowlens_dagster.bench.burst import before_seconds, calibration_windows, main, parse_args

    args = parse_args(["--before-windows", "2", "--speed", "5", "--burst-seconds", "12"])
    # two whole windows, then the third one's steady part: the burst (60 s on the window clock) ends with it
    assert before_seconds(args) * args.speed == 2 * 300 + 240
    long = parse_args(["--before-windows", "2", "--speed", "5", "--burst-seconds", "90"])
    assert before_seconds(long) * long.speed == 2 * 300 + 150  # longer than a window: it starts earlier, ends at 1200
    start = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    windows = calibration_windows(start)
    assert [(start - w).total_seconds() for w in windows] == [1200, 900, 600, 300]  # contiguous up to the start
    # one steady window would be the generator's first: its one-time costs would land in the burst's
    assert main(["--before-windows", "1"]) == 2
    assert "--before-windows must be at least 2" in capsys.readouterr().err


def test_a_figure_the_run_could_not_measure_has_no_ratio():
    from flowlens_dagster.bench.report import ratios

    assert ratios({"drain_seconds": None, "lost_flows": 0}, {"drain_seconds": 300.0}) == {}
    assert ratios({"drain_seconds": 450.0}, {"drain_seconds": 300.0}) == {"drain_seconds": 1.5}


def test_the_timed_calibration_window_is_as_large_as_the_bursts_window():
    from flowlens_dagster.bench.burst import calibration_flows, parse_args

    # a window is 60 s of wall clock at speed 5: 10 s of burst, 50 s of steady traffic
    args = parse_args(["--steady", "2000", "--burst", "40000", "--burst-seconds", "10", "--speed", "5"])
    assert calibration_flows(args) == 40_000 * 10 + 2_000 * 50 and isinstance(calibration_flows(args), int)
    # a burst longer than a window fills it
    assert calibration_flows(parse_args(["--burst", "40000", "--burst-seconds", "90", "--speed", "5"])) == 2_400_000
