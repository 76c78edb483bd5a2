"""Backpressure (the scaling model §8.1): the vectorized FlowQueue decides exactly as its flow-by-flow loop."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ingest.backpressure import DaemonLoad, FlowQueue
from ingest.config import IngestionBackpressure
from tests.ingest.flows import random_flows

T0 = 1_764_000_000_000_000


class SeedLoop:
    """The seed's IngestionBackpressure.handle_flow, one flow at a time (the queue never drains)."""

    def __init__(self, cfg: IngestionBackpressure):
        self.cfg = cfg
        self.depth = 0
        self.counter = 0

    def admit(self, n: int) -> tuple[int, int, int]:
        kept = sampled = dropped = 0
        for _ in range(n):
            if self.depth < self.cfg.sample_at_queue_depth:
                kept += 1
                self.depth += 1
            elif self.depth < self.cfg.drop_at_queue_depth:
                self.counter += 1
                if self.counter % self.cfg.sample_rate == 0:
                    kept += 1
                    self.depth += 1
                else:
                    sampled += 1
            else:
                dropped += 1
        return kept, sampled, dropped


@pytest.mark.parametrize("sizes", [[30, 30, 30, 30], [7, 100, 3], [200], [1] * 120, [45, 5, 60, 9]])
def test_same_decisions_as_the_seed_loop(sizes):
    cfg = IngestionBackpressure(sample_at_queue_depth=40, drop_at_queue_depth=50, max_queue_depth=50, sample_rate=4)
    queue, seed = FlowQueue(cfg), SeedLoop(cfg)
    for i, n in enumerate(sizes):
        result = queue.admit(random_flows(n, T0, seed=i, null_share=0))
        kept = result.kept.num_rows if result.kept is not None else 0
        assert (kept, result.sampled, result.dropped) == seed.admit(n), f"batch {i}"
    assert queue.depth == seed.depth


def test_sampled_flows_keep_totals_unbiased():
    cfg = IngestionBackpressure(sample_at_queue_depth=1, drop_at_queue_depth=100_000, max_queue_depth=100_000,
                                sample_rate=10)  # fmt: skip
    queue = FlowQueue(cfg)
    queue.admit(random_flows(1, T0, seed=9))
    batch = random_flows(50_000, T0, seed=10, null_share=0)
    result = queue.admit(batch)
    kept = result.kept
    assert kept.num_rows == 5_000 and result.sampled == 45_000 and result.dropped == 0
    assert pc.all(pc.equal(pc.divide(kept.column("sampling_rate"), 10), _kept_rates(batch, kept))).as_py()
    for name in ("bytes", "packets"):
        total, estimate = pc.sum(batch.column(name)).as_py(), pc.sum(kept.column(name)).as_py()
        assert abs(estimate - total) / total < 0.02, name  # 1:10 of 50k random flows: ~1% error


def _kept_rates(batch: pa.RecordBatch, kept: pa.RecordBatch) -> pa.Array:
    # Systematic sampling keeps flows 9, 19, 29, ... of the batch (the 10th of each cycle).
    return batch.column("sampling_rate").take(pa.array(np.arange(9, batch.num_rows, 10)))


def test_drop_at_limit_and_done_lowers_depth():
    cfg = IngestionBackpressure(sample_at_queue_depth=10, drop_at_queue_depth=12, max_queue_depth=12, sample_rate=2)
    queue = FlowQueue(cfg)
    first = queue.admit(random_flows(30, T0, seed=1))
    assert first.kept.num_rows == 12 and first.sampled == 2 and first.dropped == 16
    assert queue.depth == 12 and queue.dropped_total == 16
    item = queue.get(timeout=0.1)
    assert queue.oldest_us() == pc.min(item.batch.column("receive_time")).cast(pa.int64()).as_py()
    queue.done([item])
    assert queue.depth == 0 and queue.oldest_us() is None
    again = queue.admit(random_flows(5, T0, seed=2))
    assert again.kept.num_rows == 5 and again.dropped == 0


def test_every_flow_kept_while_sampling_is_scaled():
    """Even when the first flow of a batch falls on a kept position of the 1:N cycle."""
    cfg = IngestionBackpressure(sample_at_queue_depth=5, drop_at_queue_depth=100, max_queue_depth=100, sample_rate=2)
    queue = FlowQueue(cfg)
    queue.admit(random_flows(6, T0, seed=1))  # 5 normal + 1 sampled: the cycle now keeps the next flow
    batch = random_flows(8, T0, seed=2, null_share=0)
    kept = queue.admit(batch).kept
    want = batch.column("sampling_rate").take(pa.array([0, 2, 4, 6])).to_pylist()
    assert kept.column("sampling_rate").to_pylist() == [2 * r for r in want]


def test_the_limits_are_the_daemons_not_each_process():
    """Two processes sharing one DaemonLoad admit against their summed depth, as one queue would."""
    cfg = IngestionBackpressure(sample_at_queue_depth=100, drop_at_queue_depth=120, max_queue_depth=120,
                                sample_rate=2, sample_at_queue_seconds=0, drop_at_queue_seconds=0)  # fmt: skip
    slots = [0.0] * 4
    first, second = FlowQueue(cfg, DaemonLoad(slots, 0)), FlowQueue(cfg, DaemonLoad(slots, 1))
    assert first.admit(random_flows(80, T0, seed=1)).kept.num_rows == 80
    result = second.admit(random_flows(80, T0, seed=2))  # alone it would keep all 80
    kept = result.kept.num_rows
    assert (kept, result.sampled, result.dropped) == (20 + 20, 20, 20)
    assert first.daemon_depth() == second.daemon_depth() == 80 + kept == 120
    item = first.get(timeout=0.1)
    first.done([item])  # landed: the room comes back for both
    assert second.daemon_depth() == kept and first.depth == 0


def test_levels_follow_the_measured_rate_with_the_counts_as_floors():
    cfg = IngestionBackpressure()  # 50,000 / 100,000 flows, 2 s / 4 s, ceiling 4M
    slots = [0.0] * 4
    queue = FlowQueue(cfg, DaemonLoad(slots, 0))
    assert queue.levels() == (50_000, 100_000)  # no traffic measured: the model's counts
    slots[1], slots[3] = 10_000.0, 5_000.0  # two processes at 15,000 flows/s together: 2 s < 50,000
    assert queue.levels() == (50_000, 100_000)
    slots[1], slots[3] = 200_000.0, 100_000.0  # 300,000 flows/s: 2 s and 4 s of it
    assert queue.levels() == (600_000, 1_200_000)
    slots[1] = 3_000_000.0  # past the ceiling: memory bounds the levels
    assert queue.levels() == (4_000_000, 4_000_000)
    seed_only = IngestionBackpressure(sample_at_queue_seconds=0, drop_at_queue_seconds=0)
    assert FlowQueue(seed_only, DaemonLoad(slots, 0)).levels() == (50_000, 100_000)


def test_offered_rate_is_measured_on_the_receive_clock_and_decays_slowly():
    load = DaemonLoad([0.0, 0.0], 0)
    t = 1_764_000_000_000_000  # a bucket boundary

    def offer(first_us: int, flows: int, span_us: int) -> None:
        load.offered(first_us + np.arange(flows) * span_us // flows)

    offer(t, 5_000, 50_000)
    assert load.rate() == 0  # the first bucket (0.1 s of receive time) is not complete
    offer(t + 100_000, 20_000, 100_000)  # a new bucket: the first one gives 50,000 flows/s
    assert load.rate() == 50_000
    offer(t + 50_000, 5_000, 50_000)  # late flows of the first bucket (another exporter, decoded later)
    offer(t + 200_000, 1, 1)
    assert load.rate() == (10_000 + 20_000) / 0.2  # every complete bucket of the span, not decode order
    offer(t + 10_200_000, 1, 1)  # then 10 s of silence: one half-life
    assert load.rate() == 75_000


def test_the_first_batch_after_a_start_sets_the_levels_before_its_own_admission():
    """Packets that waited in the socket arrive as one big batch: its receive times tell the rate."""
    queue = FlowQueue(IngestionBackpressure(), DaemonLoad([0.0, 0.0], 0))
    batch = random_flows(60_000, T0, seed=3, null_share=0)  # more than the 50,000-flow floor
    times = pa.array(T0 + np.arange(60_000) * 5, pa.timestamp("us", tz="UTC"))  # 200,000 flows/s
    batch = batch.set_column(0, "receive_time", times)
    result = queue.admit(batch)
    assert (result.sampled, result.dropped) == (0, 0)
    # the complete 0.1 s buckets of receive time (20,000 flows each) give 200,000 flows/s at once
    assert queue.levels() == (400_000, 800_000)  # 2 s and 4 s of the measured rate
