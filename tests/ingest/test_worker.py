"""Pure parts of the receiving process: per-exporter counting of decoded batches."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa

from ingest.worker import count_by_exporter
from tests.ingest.flows import random_flows


def test_count_by_exporter_matches_a_plain_count_on_runs_and_on_shuffled_rows():
    flows = random_flows(3_000, 1_700_000_000_000_000, seed=5)
    rng = np.random.default_rng(2)
    exporters = [bytes(10) + b"\xff\xff" + bytes([10, 0, 0, i]) for i in range(3)]
    # runs of one exporter and version, as the decoder emits them, then the same rows shuffled
    picks = np.repeat(rng.integers(0, 3, 12), 250)
    versions = np.repeat(rng.choice([5, 9, 10], 12), 250).astype(np.uint8)
    for order in (np.arange(3_000), rng.permutation(3_000)):
        exp = pa.array([exporters[i] for i in picks[order]], pa.binary(16))
        batch = flows.set_column(1, "exporter", exp).set_column(3, "flow_version", pa.array(versions[order]))
        want = Counter(zip(exp.to_pylist(), versions[order].tolist(), strict=True))
        assert count_by_exporter(batch) == dict(want)
        sliced = batch.slice(1_000, 700)  # a slice: buffers start at an offset
        assert count_by_exporter(sliced) == dict(
            Counter(zip(sliced.column(1).to_pylist(), sliced.column(3).to_pylist(), strict=True))
        )
    assert count_by_exporter(flows.slice(0, 0)) == {}
