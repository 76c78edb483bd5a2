"""``flowlens bench cluster [--json]``: the ingest daemon's zero-loss rate into a 3-broker Kafka cluster
against one broker, in the same run.

Both Kafkas are started by the bench from the stack's own code (``flowlens_dagster.stack.kafka_cluster``)
on free ports in a temporary directory, with the same heap per node: one node (replication 1), then
``--brokers`` nodes (replication 3, min.insync.replicas 2). The daemon produces with acks=all and
idempotence to both, so the cluster's cost is what replication adds: every batch is acknowledged
only once two replicas hold it. The rate search and its pass rule are ``flowlens bench ingest``'s
(loss < 0.1%, socket queue nearly empty when sending stops, everything landed within 2 s). The
baseline is the single broker; figures: ``cluster_flows_per_s`` (and its loss), with
``baseline.cluster_flows_per_s`` the single broker's rate and the ratio between them. On one
machine the brokers share its cores and disk with the daemon and the sender, so the ratio is the
cost of replication here, not a cluster's capacity (which grows with its hosts).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

from flowlens_dagster.bench.ingest import DaemonCollector, SenderProcess, Trial, search
from flowlens_dagster.bench.report import report
from flowlens_dagster.stack.kafka_cluster import temporary, topics
from flowlens_dagster.stack.settings import kafka_heap_mb
from ingest.config import FlowLensConfig, load_config

BYTES_PER_FLOW = 1400 / 25  # v9/IPFIX datagrams of the bench sender: about 25 flows in 1400 bytes


def measure(cfg: FlowLensConfig, workdir: Path, processes: int, args, log) -> tuple[Trial | None, list[Trial]]:
    """The zero-loss rate search of ``flowlens bench ingest`` against the daemon landing to ``cfg``'s Kafka."""
    collector = DaemonCollector(cfg, workdir, processes)
    sender = None
    try:
        sender = SenderProcess(("127.0.0.1", collector.port), (9, 10))
        collector.warm_up(sender)
        label = f"{cfg.kafka.brokers} broker(s)"
        return search(collector, sender, args.start_rate, args.max_rate, args.seconds, BYTES_PER_FLOW, log, label)
    finally:
        if sender is not None:
            sender.close()
        with contextlib.suppress(Exception):
            collector.close()


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="flowlens bench cluster", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--brokers", type=int, default=3, help="brokers of the cluster (replication min(3, brokers))")
    p.add_argument("--seconds", type=float, default=4.0, help="sending time per trial")
    p.add_argument("--start-rate", type=float, default=100_000)
    p.add_argument("--max-rate", type=float, default=4_000_000)
    p.add_argument("--processes", type=int, default=0, help="receiving processes (0 = one per core)")
    p.add_argument("--config", help="FlowLens config (Kafka version, partitions)")
    args = p.parse_args(argv)
    if args.brokers < 2:
        p.error("--brokers must be at least 2 (the baseline is one broker)")
    cfg = load_config(args.config)
    # The daemon's backpressure levels in seconds of traffic, as bench ingest sets them.
    ingestion = cfg.backpressure.ingestion.model_copy(
        update={"sample_at_queue_depth": 2_000_000, "drop_at_queue_depth": 4_000_000, "max_queue_depth": 4_000_000}
    )
    cfg = cfg.model_copy(update={"backpressure": cfg.backpressure.model_copy(update={"ingestion": ingestion})})
    processes = args.processes or os.cpu_count() or 1
    heap = max(512, kafka_heap_mb() // args.brokers)
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if args.json else (lambda m: print(m, flush=True))
    workdir = Path(tempfile.mkdtemp(prefix="flowlens-bench-cluster-"))
    results: dict[int, tuple[Trial | None, list[Trial]]] = {}
    try:
        for brokers in (1, args.brokers):
            with temporary(cfg.model_copy(update={"mode": "standard"}), brokers, workdir / f"kafka-{brokers}",
                           heap_mb=heap) as nodes:  # fmt: skip
                topics(nodes.cfg)
                results[brokers] = measure(nodes.cfg, workdir / f"daemon-{brokers}", processes, args, log)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    single, cluster = results[1][0], results[args.brokers][0]
    figures = {
        "cluster_flows_per_s": round(cluster.achieved_rate) if cluster else 0,
        "cluster_loss_ratio": round(cluster.loss, 6) if cluster else None,
    }
    baseline = {"cluster_flows_per_s": round(single.achieved_rate) if single else 0}
    config = {
        "brokers": args.brokers, "replication_factor": min(3, args.brokers),
        "min_insync_replicas": 2 if args.brokers >= 3 else 1, "acks": "all", "idempotence": True,
        "baseline": "one broker (replication 1), same daemon, sender and heap per node, same run",
        "heap_mb_per_node": heap, "receiving_processes": processes, "cores": os.cpu_count(),
        "seconds_per_trial": args.seconds,
        "pass_rule": "loss < 0.1%, socket queue at stop <= 0.05 s of traffic, landed within 2 s",
        "trials": {str(b): [_trial(t) for t in trials] for b, (_, trials) in results.items()},
    }  # fmt: skip
    report("cluster", figures, baseline, config, args.json)
    return 0


def _trial(t: Trial) -> dict:
    return {"target": round(t.rate), "sent_per_s": round(t.achieved_rate), "loss": round(t.loss, 6), "pass": t.passed}
