"""``flowlens bench decode [--json]``: decoder throughput per core, next to the Python ``netflow`` package.

Workload: realistic export packets built with ``ingest.encode`` from random IPv4 flows: v5 with
30 records, v9 (46-byte records) and IPFIX (58-byte records) filling a 1472-byte UDP payload
(about 31 and 25 records), templates re-sent every 20 packets. The FlowLens decoder runs
``decode_many`` over batches of ``--batch`` packets, by default the ingest daemon's
``ingest.decode_batch_packets`` (the most it takes per call when packets are waiting); the
``netflow`` package parses a slice of the same packets one by one with its template cache (it is
~50x slower, so a slice keeps the run short). Figures are flows per CPU-second of this thread
(``time.thread_time``), i.e. per core whatever else the machine runs; the best of ``--repeat``
runs is kept.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from ingest.addresses import V4_PREFIX
from ingest.benchmark import report
from ingest.config import IngestConfig
from ingest.decode import Decoder
from ingest.encode import V9_IPV4_FIELDS, IpfixEncoder, V9Encoder, encode_v5

EXPORT_TIME = 1_700_000_000
EXPORTER = V4_PREFIX + bytes([192, 0, 2, 10])
PAYLOAD = 1472  # the largest UDP payload in a 1500-byte MTU
# A typical router v9 IPv4 template (46 bytes: the defaults plus next hop, masks and ToS).
V9_BENCH_FIELDS = (*V9_IPV4_FIELDS, (15, 4), (9, 1), (13, 1), (5, 1))
# A typical IPFIX IPv4 template (58 bytes: reduced-size packets and flags as many exporters send).
IPFIX_BENCH_FIELDS = ((8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (6, 1), (1, 8), (2, 4), (152, 8), (153, 8),
                      (10, 4), (14, 4), (16, 4), (17, 4))  # fmt: skip


def random_flows(n: int, seed: int = 7) -> dict[str, np.ndarray]:
    """``n`` IPv4 flows with realistic ranges (ms-aligned times in the minute before export)."""
    rng = np.random.default_rng(seed)
    addr = np.zeros((2, n, 16), np.uint8)
    addr[:, :, 10:12] = 0xFF
    addr[:, :, 12:] = rng.integers(0, 256, (2, n, 4))
    end = EXPORT_TIME * 1_000_000 - rng.integers(0, 60_000, n) * 1000
    return {
        "src_addr": addr[0],
        "dst_addr": addr[1],
        "src_port": rng.integers(1024, 65536, n),
        "dst_port": rng.choice([53, 80, 443, 123, 22, 8080], n),
        "protocol": rng.choice([6, 17], n),
        "tcp_flags": rng.integers(0, 64, n),
        "bytes": rng.integers(40, 1_500_000, n),
        "packets": rng.integers(1, 1000, n),
        "flow_start": end - rng.integers(0, 30_000, n) * 1000,
        "flow_end": end,
        "input_if": rng.integers(1, 64, n),
        "output_if": rng.integers(1, 64, n),
        "src_as": rng.integers(0, 65536, n),
        "dst_as": rng.integers(0, 65536, n),
        "direction": rng.integers(0, 2, n),
    }


def workloads(n: int) -> dict[str, list[bytes]]:
    flows = random_flows(n)
    return {
        "v5": encode_v5(flows, sys_uptime_ms=86_400_000, unix_secs=EXPORT_TIME, flows_per_packet=30),
        "v9": V9Encoder(256, V9_BENCH_FIELDS, 1, max_payload=PAYLOAD).packets(flows, EXPORT_TIME),
        "ipfix": IpfixEncoder(256, IPFIX_BENCH_FIELDS, 1, max_payload=PAYLOAD).packets(flows, EXPORT_TIME),
    }


def _best(run: Callable[[], int], repeat: int) -> tuple[float, int]:
    """(best flows per CPU-second, flows per run)."""
    best, flows = 0.0, 0
    for _ in range(repeat):
        start = time.thread_time()
        flows = run()
        elapsed = max(time.thread_time() - start, 1e-9)
        best = max(best, flows / elapsed)
    return best, flows


def flowlens_rate(packets: list[bytes], batch: int, repeat: int) -> tuple[float, int]:
    items = [(EXPORTER, p, EXPORT_TIME * 1_000_000) for p in packets]

    def run() -> int:
        decoder = Decoder()
        return sum(decoder.decode_many(items[i : i + batch]).num_rows for i in range(0, len(items), batch))

    return _best(run, repeat)


def netflow_rate(packets: list[bytes], repeat: int) -> tuple[float, int]:
    from netflow import parse_packet  # the peer: imported only for the comparison

    def run() -> int:
        templates: dict = {"netflow": {}, "ipfix": {}}
        return sum(len(parse_packet(p, templates).flows) for p in packets)

    return _best(run, repeat)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="flowlens bench decode", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    parser.add_argument("--flows", type=int, default=600_000, help="flows per version for FlowLens")
    parser.add_argument("--peer-flows", type=int, default=20_000, help="flows per version for the netflow package")
    parser.add_argument(
        "--batch", type=int, default=IngestConfig().decode_batch_packets,
        help="packets per decode_many call (default: the daemon's ingest.decode_batch_packets)",
    )  # fmt: skip
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (the best is kept)")
    args = parser.parse_args(argv)
    figures: dict[str, float] = {}
    baseline: dict[str, float] = {}
    sizes: dict[str, float] = {}
    for version, packets in workloads(args.flows).items():
        rate, flows = flowlens_rate(packets, args.batch, args.repeat)
        figures[f"{version}_flows_per_s"] = round(rate)
        sizes[version] = round(flows / len(packets), 1)
        peer_packets = packets[: max(1, int(len(packets) * args.peer_flows / args.flows))]
        baseline[f"{version}_flows_per_s"] = round(netflow_rate(peer_packets, args.repeat)[0])
    config = {
        "flows": args.flows,
        "batch_packets": args.batch,
        "flows_per_packet": sizes,
        "clock": "time.thread_time (CPU seconds of one core)",
        "baseline": "Python netflow package, same packets (first --peer-flows), same run",
    }
    report("decode", figures, baseline, config, args.json)
    return 0
