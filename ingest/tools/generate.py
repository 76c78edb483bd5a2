"""``flowlens generate``: a synthetic NetFlow v5 / v9 / IPFIX exporter with a known ground truth.

The traffic is a small enterprise (:class:`Enterprise`): client subnets talking to a web tier
(443/80), web servers to an app tier (8080), app servers to databases (5432/3306), every host to
the DNS resolvers (UDP 53) and NTP servers (UDP 123), and clients to external destinations on the
Internet (443). Each exporter sends from its own loopback address (127.0.0.1, 127.0.0.2, ...: Linux
routes all of 127/8 locally) so a collector sees several exporters; exporters cycle through the
chosen versions, v9/IPFIX with template refreshes and sequence numbers from ``ingest.tools.encode``.

Deterministic: the same ``--seed`` and arguments send the same flows. ``--start`` stamps flows and
export headers in the past, with ``--speed`` simulated seconds per real second, so a collector
using ``ingest.timestamp_source: export`` fills earlier windows quickly. ``--truth FILE`` writes
what was sent, aggregated per (src, dst, dst_port, protocol) with bytes/packets/flows (Parquet if
the name ends in .parquet, else JSON), and a JSON summary line goes to stdout.

Examples::

    flowlens generate --target 127.0.0.1:2055 --rate 50000 --duration 60
    flowlens generate --target 127.0.0.1:4739 --versions 10 --flows 100000 --truth sent.parquet
    flowlens generate --start 2026-11-26T08:00:00Z --speed 60 --duration 30 --versions 9
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ingest import mmsg
from ingest.addresses import V4_PREFIX_BYTES
from ingest.schema import SFLOW_VERSION
from ingest.tools.encode import IPFIX_IPV4_FIELDS, V9_IPV4_FIELDS, IpfixEncoder, V9Encoder, encode_v5
from ingest.tools.encode_sflow import SflowEncoder

TRUTH_KEYS = ["src_addr", "dst_addr", "dst_port", "protocol"]


def _v4(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


@dataclass(frozen=True)
class Service:
    """One kind of conversation: clients in ``clients`` talking to ``servers`` on ``port``."""

    name: str
    clients: tuple[int, int]  # first IPv4 (int), count
    servers: tuple[int, int]
    port: int
    protocol: int  # 6 TCP, 17 UDP
    weight: float
    bytes_per_packet: tuple[int, int]
    packets: tuple[int, int]


@dataclass
class Enterprise:
    """The modelled estate; ``flows(n, rng, times)`` draws n flows from it."""

    clients: int = 2000  # spread over /24 client subnets 10.1.x.0
    services: list[Service] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.services:
            return
        c = (_v4("10.1.0.10"), self.clients)
        web, app, db = (_v4("10.20.1.10"), 8), (_v4("10.20.2.10"), 6), (_v4("10.20.3.10"), 4)
        every_host = (_v4("10.1.0.10"), self.clients)
        self.services = [
            Service("web-https", c, web, 443, 6, 30, (200, 1400), (4, 400)),
            Service("web-http", c, web, 80, 6, 5, (200, 1400), (4, 100)),
            Service("app", web, app, 8080, 6, 15, (300, 1200), (6, 200)),
            Service("postgres", app, (db[0], 2), 5432, 6, 8, (100, 1000), (4, 300)),
            Service("mysql", app, (db[0] + 2, 2), 3306, 6, 4, (100, 1000), (4, 300)),
            Service("dns", every_host, (_v4("10.20.0.53"), 2), 53, 17, 20, (60, 300), (1, 2)),
            Service("ntp", every_host, (_v4("10.20.0.123"), 2), 123, 17, 3, (76, 76), (1, 1)),
            Service("internet", c, (_v4("93.184.216.0"), 4000), 443, 6, 15, (200, 1400), (6, 2000)),
        ]

    def flows(self, n: int, rng: np.random.Generator, times_us: np.ndarray) -> dict[str, np.ndarray]:
        """``n`` flows (FLOW_SCHEMA column names) ending at ``times_us``."""
        weights = np.array([s.weight for s in self.services])
        pick = rng.choice(len(self.services), size=n, p=weights / weights.sum())
        src = np.empty(n, np.uint32)
        dst = np.empty(n, np.uint32)
        cols = {k: np.empty(n, np.int64) for k in ("dst_port", "protocol", "bytes", "packets")}
        for i, svc in enumerate(self.services):
            rows = np.flatnonzero(pick == i)
            m = len(rows)
            if not m:
                continue
            # Clients follow a skewed popularity: a few hosts talk much more than the rest.
            src[rows] = svc.clients[0] + (rng.zipf(1.3, m) - 1) % svc.clients[1]
            dst[rows] = svc.servers[0] + (rng.zipf(1.5, m) - 1) % svc.servers[1]
            packets = rng.integers(svc.packets[0], svc.packets[1] + 1, m)
            cols["packets"][rows] = packets
            cols["bytes"][rows] = packets * rng.integers(svc.bytes_per_packet[0], svc.bytes_per_packet[1] + 1, m)
            cols["dst_port"][rows] = svc.port
            cols["protocol"][rows] = svc.protocol
        duration = rng.integers(10_000, 30_000_000, n)
        return {
            "src_addr": _mapped(src),
            "dst_addr": _mapped(dst),
            "src_port": rng.integers(32768, 61000, n).astype(np.uint16),
            "dst_port": cols["dst_port"].astype(np.uint16),
            "protocol": cols["protocol"].astype(np.uint8),
            "tcp_flags": np.where(cols["protocol"] == 6, 0x1B, 0).astype(np.uint16),
            "bytes": cols["bytes"].astype(np.uint64),
            "packets": cols["packets"].astype(np.uint64),
            "flow_start": times_us - duration,
            "flow_end": times_us,
            "input_if": rng.integers(1, 48, n).astype(np.uint32),
            "output_if": rng.integers(1, 48, n).astype(np.uint32),
            "src_as": np.zeros(n, np.uint32),
            "dst_as": np.where(pick == len(self.services) - 1, 15133, 0).astype(np.uint32),
            "direction": np.zeros(n, np.uint8),
        }


def _mapped(v4: np.ndarray) -> np.ndarray:
    """IPv4 ints -> (n, 16) IPv4-mapped IPv6 byte matrix."""
    out = np.zeros((len(v4), 16), np.uint8)
    out[:, :12] = V4_PREFIX_BYTES
    out[:, 12:] = v4.astype(">u4").view(np.uint8).reshape(-1, 4)
    return out


class Exporter:
    """One simulated exporter: its source address, version and encoder state."""

    def __init__(self, index: int, version: int, source: str):
        self.index = index
        self.version = version
        self.source = source
        self.v5_seq = 0
        self.boot_ms: int | None = None
        if version == SFLOW_VERSION:
            self.encoder = SflowEncoder(source, sampling_rate=1, sub_agent=index)
        elif version == 9:
            self.encoder = V9Encoder(256 + index, V9_IPV4_FIELDS, domain=index)
        elif version == 10:
            self.encoder = IpfixEncoder(300 + index, IPFIX_IPV4_FIELDS, domain=index)
        else:
            self.encoder = None

    def packets(self, cols: dict[str, np.ndarray], export_s: int) -> list[bytes]:
        if self.version == 5:
            if self.boot_ms is None:
                self.boot_ms = export_s * 1000 - 3_600_000
            uptime = export_s * 1000 - self.boot_ms
            out = encode_v5(cols, sys_uptime_ms=uptime, unix_secs=export_s, seq=self.v5_seq, engine_id=self.index)
            self.v5_seq += len(cols["bytes"])
            return out
        if self.version == SFLOW_VERSION:
            return self.encoder.datagrams(cols)
        return self.encoder.packets(cols, export_time=export_s)

    def as_sent(self, cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The flows as a collector reads them back (sFlow: one sampled packet per flow)."""
        if self.version != SFLOW_VERSION:
            return cols
        return cols | {k: v.astype(cols[k].dtype) for k, v in self.encoder.as_decoded(cols).items()}


@dataclass
class Plan:
    """What to send: rate, amount, versions, exporters, clock."""

    rate: float = 10_000.0  # flows per second (0 = as fast as possible)
    duration: float = 10.0
    flows: int | None = None  # total flows (overrides duration)
    versions: tuple[int, ...] = (9,)
    exporters: int = 3
    seed: int = 1
    start_us: int | None = None  # simulated clock start (None = now, real time)
    speed: float = 1.0  # simulated seconds per real second
    chunk: int = 3000  # flows built per step


class Generator:
    """Builds export packets chunk by chunk and tracks the ground truth."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.rng = np.random.default_rng(plan.seed)
        self.model = Enterprise()
        self.exporters = [
            Exporter(i, plan.versions[i % len(plan.versions)], f"127.0.0.{i + 1}") for i in range(plan.exporters)
        ]
        self.truth_parts: list[pa.Table] = []
        self.sent_flows = 0
        self.sent_packets = 0
        self.sent_bytes = 0

    def steps(self, now_us) -> Iterator[tuple[Exporter, list[bytes], int]]:
        """Endless (exporter, packets, flows) steps; ``now_us()`` gives the simulated clock."""
        turn = 0
        while True:
            exporter = self.exporters[turn % len(self.exporters)]
            turn += 1
            n = self.plan.chunk
            if self.plan.flows is not None:
                n = min(n, self.plan.flows - self.sent_flows)
                if n <= 0:
                    return
            clock = now_us()
            # Flows end up to 2 s before export, as an exporter's active/inactive timeouts do.
            times = clock - self.rng.integers(0, 2_000_000, n)
            cols = self.model.flows(n, self.rng, times)
            packets = exporter.packets(cols, clock // 1_000_000)
            self._remember(exporter.as_sent(cols))
            self.sent_flows += n
            yield exporter, packets, n

    def _remember(self, cols: dict[str, np.ndarray]) -> None:
        n = len(cols["bytes"])
        table = pa.table(
            {
                "src_addr": _fixed16(cols["src_addr"]),
                "dst_addr": _fixed16(cols["dst_addr"]),
                "dst_port": cols["dst_port"],
                "protocol": cols["protocol"],
                "bytes": cols["bytes"],
                "packets": cols["packets"],
                "flows": np.ones(n, np.int64),
            }
        )
        self.truth_parts.append(_aggregate(table))
        if len(self.truth_parts) > 64:
            self.truth_parts = [_aggregate(pa.concat_tables(self.truth_parts))]

    def truth(self) -> pa.Table:
        """Everything sent so far, summed per (src_addr, dst_addr, dst_port, protocol)."""
        if not self.truth_parts:
            return _aggregate(pa.table({k: [] for k in [*TRUTH_KEYS, "bytes", "packets", "flows"]}))
        return _aggregate(pa.concat_tables(self.truth_parts)).sort_by([(k, "ascending") for k in TRUTH_KEYS])


def _fixed16(mat: np.ndarray) -> pa.Array:
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), len(mat), [None, pa.py_buffer(mat.tobytes())])


def _aggregate(table: pa.Table) -> pa.Table:
    agg = table.group_by(TRUTH_KEYS).aggregate([("bytes", "sum"), ("packets", "sum"), ("flows", "sum")])
    return agg.rename_columns([*TRUTH_KEYS, "bytes", "packets", "flows"])


def truth_rows(table: pa.Table) -> list[dict]:
    """Ground truth as JSON-friendly rows with text addresses."""
    out = []
    for row in table.to_pylist():
        for key in ("src_addr", "dst_addr"):
            ip = ipaddress.IPv6Address(row[key])
            row[key] = str(ip.ipv4_mapped or ip)
        out.append(row)
    return out


def write_truth(table: pa.Table, path: Path) -> None:
    if path.suffix == ".parquet":
        pq.write_table(table, path)
    else:
        path.write_text(json.dumps(truth_rows(table)))


class Sender:
    """UDP sockets, one per exporter source address, all aimed at one collector."""

    def __init__(self, target: tuple[str, int], sources: list[str], sndbuf: int = 8 << 20):
        self.target = target
        self.socks: dict[str, socket.socket] = {}
        for source in sources:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
            sock.bind((source, 0))
            self.socks[source] = sock

    def send(self, source: str, packets: list[bytes]) -> int:
        """Send ``packets`` from ``source``'s socket; returns the bytes sent (sendmmsg on Linux)."""
        return mmsg.send_all(self.socks[source], packets, self.target)

    def close(self) -> None:
        for sock in self.socks.values():
            sock.close()


def run(plan: Plan, target: tuple[str, int], stop_after: float | None = None) -> Generator:
    """Send the plan's traffic to ``target``; return the generator (truth, counts)."""
    gen = Generator(plan)
    sender = Sender(target, [e.source for e in gen.exporters])
    real_start = time.monotonic()
    sim_start = plan.start_us if plan.start_us is not None else time.time_ns() // 1000
    duration = None if plan.flows is not None else plan.duration

    def now_us() -> int:
        return sim_start + int((time.monotonic() - real_start) * plan.speed * 1_000_000)

    try:
        for exporter, packets, _ in gen.steps(now_us):
            gen.sent_bytes += sender.send(exporter.source, packets)
            gen.sent_packets += len(packets)
            elapsed = time.monotonic() - real_start
            if plan.rate:
                ahead = gen.sent_flows / plan.rate - elapsed
                if ahead > 0:
                    time.sleep(ahead)
            if duration is not None and time.monotonic() - real_start >= duration:
                break
            if stop_after is not None and elapsed >= stop_after:
                break
    finally:
        sender.close()
    gen.elapsed = time.monotonic() - real_start
    return gen


def parse_target(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not port.isdigit():
        raise SystemExit(f"flowlens generate: --target {text!r}: expected HOST:PORT, e.g. 127.0.0.1:2055")
    return host or "127.0.0.1", int(port)


def parse_start(text: str | None) -> int | None:
    if not text:
        return None
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SystemExit(f"flowlens generate: --start {text!r}: expected ISO time, e.g. 2026-11-26T08:00:00Z") from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return int(ts.timestamp() * 1_000_000)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="flowlens generate", description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default="127.0.0.1:2055", help="collector HOST:PORT (default 127.0.0.1:2055)")
    p.add_argument("--rate", type=float, default=10_000, help="flows per second (0 = as fast as possible)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds to send (ignored with --flows)")
    p.add_argument("--flows", type=int, help="send exactly this many flows, then stop")
    p.add_argument(
        "--versions", default="9", help="comma-separated: 5, 9, 10 (IPFIX), sflow (sFlow v5 raw-packet samples)"
    )
    p.add_argument("--exporters", type=int, default=3, help="exporters, sending from 127.0.0.1, .2, ...")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--start", help="simulated start time (ISO, UTC), e.g. two hours ago, to fill past windows")
    p.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second (with --start)")
    p.add_argument("--truth", type=Path, help="write the ground truth here (.parquet or .json)")
    args = p.parse_args(argv)
    try:
        versions = tuple(SFLOW_VERSION if v.strip() == "sflow" else int(v) for v in args.versions.split(","))
    except ValueError:
        versions = ()
    if not versions or any(v not in (5, 9, 10, SFLOW_VERSION) for v in versions):
        print(f"flowlens generate: --versions {args.versions!r}: use 5, 9, 10 and/or sflow, e.g. 9,10", file=sys.stderr)
        return 2
    plan = Plan(rate=args.rate, duration=args.duration, flows=args.flows, versions=versions,
                exporters=max(1, min(args.exporters, 250)), seed=args.seed, start_us=parse_start(args.start),
                speed=args.speed)  # fmt: skip
    gen = run(plan, parse_target(args.target))
    truth = gen.truth()
    if args.truth:
        write_truth(truth, args.truth)
    summary = {
        "flows": gen.sent_flows,
        "packets": gen.sent_packets,
        "bytes_on_wire": gen.sent_bytes,
        "seconds": round(gen.elapsed, 3),
        "flows_per_s": round(gen.sent_flows / gen.elapsed) if gen.elapsed else None,
        "keys": truth.num_rows,
        "flow_bytes": int(sum(truth.column("bytes").to_pylist())),
        "flow_packets": int(sum(truth.column("packets").to_pylist())),
        "exporters": [e.source for e in gen.exporters],
        "versions": list(versions),
    }
    print(json.dumps(summary))
    return 0
