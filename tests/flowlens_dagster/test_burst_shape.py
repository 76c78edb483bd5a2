"""The burst bench's prediction input: how many connections the generator's estate puts in a window."""

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
