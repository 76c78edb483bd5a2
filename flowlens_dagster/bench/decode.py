"""``flowlens bench decode [--json]``: decoder throughput per core, next to the Python ``netflow`` package.

Workload: realistic export packets built with ``ingest.tools.encode`` from random IPv4 flows: v5 with
30 records, v9 (46-byte records) and IPFIX (58-byte records) filling a 1472-byte UDP payload
(about 31 and 25 records), templates re-sent every 20 packets; sFlow datagrams of raw-packet
samples with 128-byte headers (7 samples in 1472 bytes), and the same with an extended gateway
record in each sample (``sflow_gateway``: next hop, AS path, communities; 5 samples). The FlowLens
decoder runs ``decode_many`` over batches of ``--batch`` packets, by default the ingest daemon's
``ingest.decode_batch_packets`` (the most it takes per call when packets are waiting); the
``netflow`` package parses a slice of the same packets one by one with its template cache (it is
~50x slower, so a slice keeps the run short); for sFlow the baseline is tshark (Wireshark's
dissector) over a pcap of the same slice, its CPU time read from the child's rusage, and, when
``go`` is installed, GoFlow2 (``ingest.tools.goflow2``: built once from the Go module proxy into
the state directory) fed the first ``--goflow2-flows`` of them over loopback UDP, its CPU time
read from ``/proc`` (``goflow2_sflow_flows_per_s``; writing its protobuf records to a file
included, as tshark's text output is). Figures are
flows per CPU-second of this thread (``time.thread_time``), i.e. per core whatever else the
machine runs: the best of ``--repeat`` runs, the versions taking turns, and
(``*_median_flows_per_s``) their median.
"""

from __future__ import annotations

import argparse
import atexit
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from flowlens_dagster.bench.report import report
from ingest.addresses import V4_PREFIX
from ingest.config import IngestConfig, load_config
from ingest.decode import Decoder
from ingest.tools import goflow2
from ingest.tools.capture import ethernet_frame, write_pcap
from ingest.tools.encode import V9_IPV4_FIELDS, IpfixEncoder, V9Encoder, encode_v5
from ingest.tools.encode_sflow import SflowEncoder

EXPORT_TIME = 1_700_000_000
EXPORTER = V4_PREFIX + bytes([192, 0, 2, 10])
PAYLOAD = 1472  # the largest UDP payload in a 1500-byte MTU
SFLOW_AGENT = ("192.0.2.10", 1000, 0, 128)  # agent, sampling rate, sub-agent, header length
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
        # raw-packet samples of 128-byte headers, 1 in 1000 (7 per datagram)
        "sflow": SflowEncoder(*SFLOW_AGENT, max_payload=PAYLOAD).datagrams(flows),
        # the same with an extended gateway record in each sample (5 per datagram)
        "sflow_gateway": SflowEncoder(*SFLOW_AGENT, max_payload=PAYLOAD, gateway=True).datagrams(flows),
    }


def _cpu() -> float:
    """CPU seconds of this thread plus those of finished child processes (tshark)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.thread_time() + children.ru_utime + children.ru_stime


Run = Callable[[], int | tuple[int, float]]  # flows, or (flows, CPU seconds it measured itself)


def _rates(runs: dict[str, Run], repeat: int) -> dict[str, tuple[list[float], int]]:
    """(flows per CPU-second of every run, flows per run) for each named run.

    The runs take turns, ``repeat`` rounds: a slow spell of the machine (another VM on the
    host) then costs every version one run, not one version all of its runs. A run in another
    process that this one does not wait for (GoFlow2) returns its own CPU seconds."""
    rates: dict[str, list[float]] = {name: [] for name in runs}
    flows: dict[str, int] = {}
    for _ in range(repeat):
        for name, run in runs.items():
            start = _cpu()
            done = run()
            flows[name], cpu = done if isinstance(done, tuple) else (done, _cpu() - start)
            rates[name].append(flows[name] / max(cpu, 1e-9))
    return {name: (rates[name], flows[name]) for name in runs}


def flowlens_run(packets: list[bytes], batch: int) -> Callable[[], int]:
    """One run: a fresh decoder over every packet, ``batch`` packets per ``decode_many``; the flow count."""
    items = [(EXPORTER, p, EXPORT_TIME * 1_000_000) for p in packets]

    def run() -> int:
        decoder = Decoder()
        return sum(decoder.decode_many(items[i : i + batch]).num_rows for i in range(0, len(items), batch))

    return run


def tshark_run(packets: list[bytes]) -> Callable[[], int]:
    """Wireshark's sFlow dissector on the same datagrams (a pcap, ``tshark -T fields`` of one field
    per sample): its CPU time is read from the child's rusage, start-up included."""
    folder = tempfile.mkdtemp(prefix="flowlens-bench-")
    atexit.register(shutil.rmtree, folder, True)  # the pcap lives as long as the bench
    path = Path(folder) / "sflow.pcap"
    collector = bytes([192, 0, 2, 250])
    write_pcap(path, ((EXPORT_TIME * 1_000_000 + i, ethernet_frame(collector, collector, 17, 50000, 6343, 0, payload=p))
                      for i, p in enumerate(packets)))  # fmt: skip
    command = ["tshark", "-n", "-r", str(path), "-T", "fields", "-e", "sflow.flow_sample.sampling_rate"]

    def run() -> int:
        out = subprocess.run(command, capture_output=True, text=True, check=True)
        return sum(len(line.split(",")) for line in out.stdout.splitlines() if line)

    return run


def goflow2_run(collector: goflow2.Collector, packets: list[bytes], samples: int) -> Run:
    """GoFlow2 on the same datagrams (``samples`` flow samples in them): (flows it wrote, the CPU
    seconds its process used meanwhile). Datagrams the kernel dropped are neither counted nor
    paid for."""

    def run() -> tuple[int, float]:
        start = collector.cpu_seconds()
        collector.send(packets)
        flows = len(collector.messages(samples))
        return flows, collector.cpu_seconds() - start

    return run


def _goflow2_rates(packets: dict[str, list[bytes]], flows: dict[str, int], repeat: int) -> dict[str, float] | str:
    """GoFlow2's best flows per CPU-second on each sFlow workload, or why it did not run."""
    exe = goflow2.binary(load_config().state_dir)
    if isinstance(exe, str):
        return exe
    try:
        with goflow2.Collector(exe, "bin") as collector:
            runs = {v: goflow2_run(collector, p, flows[v]) for v, p in packets.items()}
            return {v: round(max(rates)) for v, (rates, _) in _rates(runs, repeat).items()}
    except (OSError, RuntimeError) as exc:
        return f"goflow2 did not run: {exc}"


def netflow_run(packets: list[bytes]) -> Callable[[], int]:
    """The same with the ``netflow`` package, packet by packet with its template cache."""
    from netflow import parse_packet  # the peer: imported only for the comparison

    def run() -> int:
        templates: dict = {"netflow": {}, "ipfix": {}}
        return sum(len(parse_packet(p, templates).flows) for p in packets)

    return run


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="flowlens bench decode", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    parser.add_argument("--flows", type=int, default=600_000, help="flows per version for FlowLens")
    parser.add_argument("--peer-flows", type=int, default=20_000, help="flows per version for the netflow package")
    parser.add_argument(
        "--batch", type=int, default=IngestConfig().decode_batch_packets,
        help="packets per decode_many call (default: the daemon's ingest.decode_batch_packets)",
    )  # fmt: skip
    parser.add_argument("--goflow2-flows", type=int, default=100_000, help="sFlow flows per version for GoFlow2")
    parser.add_argument("--repeat", type=int, default=7, help="runs per figure, taking turns (the best is kept)")
    args = parser.parse_args(argv)
    packets = workloads(args.flows)
    ours = _rates({v: flowlens_run(p, args.batch) for v, p in packets.items()}, args.repeat)
    share = args.peer_flows / args.flows
    peers = {
        v: (tshark_run if v.startswith("sflow") else netflow_run)(p[: max(1, int(len(p) * share))])
        for v, p in packets.items()
    }
    peer = _rates(peers, args.repeat)
    figures: dict[str, float] = {}
    baseline: dict[str, float] = {}
    for version, (rates, _) in ours.items():
        figures[f"{version}_flows_per_s"] = round(max(rates))
        baseline[f"{version}_flows_per_s"] = round(max(peer[version][0]))
    for version, (rates, _) in ours.items():
        figures[f"{version}_median_flows_per_s"] = round(statistics.median(rates))
    sizes = {version: round(flows / len(packets[version]), 1) for version, (_, flows) in ours.items()}
    gf_share = args.goflow2_flows / args.flows
    gf_packets = {v: packets[v][: max(1, int(len(packets[v]) * gf_share))] for v in ("sflow", "sflow_gateway")}
    gf_flows = {v: round(len(p) * sizes[v]) for v, p in gf_packets.items()}
    peer_go = _goflow2_rates(gf_packets, gf_flows, args.repeat)
    if isinstance(peer_go, dict):
        for version, rate in peer_go.items():
            baseline[f"goflow2_{version}_flows_per_s"] = rate
        goflow2_ratio = {v: round(figures[f"{v}_flows_per_s"] / max(r, 1), 3) for v, r in peer_go.items()}
    config = {
        "flows": args.flows,
        "batch_packets": args.batch,
        "flows_per_packet": sizes,
        "clock": "time.thread_time (CPU seconds of one core), best and median of --repeat runs",
        "baseline": "Python netflow package (sFlow: tshark, start-up included), same packets "
        "(first --peer-flows), same run",
        "goflow2": f"GoFlow2 {goflow2.VERSION} (protobuf records to a file), first --goflow2-flows, same run; "
        "FlowLens/GoFlow2: "
        f"{goflow2_ratio}"
        if isinstance(peer_go, dict)
        else f"skipped: {peer_go}",
    }
    report("decode", figures, baseline, config, args.json)
    return 0
