"""Mutation fuzzing of the decoder: ``python -m ingest.tools.fuzz --packets 1000000``.

Seeds are real exporters' datagrams: the softflowd captures kept with the decoder tests
(``tests/ingest/decode/testdata``), an external corpus given with ``--corpus DIR`` (raw payload
``*.dat`` files or captures; the logstash-netflow interop set, for example), and packets built here
with ``ingest.tools.encode`` (v5, v9, IPFIX, IPv6, variable-length and options templates) and
``ingest.tools.encode_sflow`` (sFlow datagrams of every sample and record kind). Each round takes a
seed and applies one to three mutations: bit flips, random bytes, truncation, garbage appended, a
rewritten set length / field count / template id, or a splice of two packets. Mutated packets
come from a pool of exporters larger than the decoder's exporter cap, in batches through
``decode_many`` (the production path); every fourth call holds one packet alone, because a call with
one broken sFlow datagram is refused whole by the compiled walk (``ingest/decode/sflow_kernel.py``)
and only calls whose structure holds reach it. The packet-header parser is also fuzzed alone, on mutated
sampled packets (VLAN, MPLS, tunnels, IPv6 extensions) from every starting layer.

The run fails (exit 1) if the decoder raises, counts an ``internal`` error (a parser bug caught
by its safety net), returns a batch that is not ``FLOW_SCHEMA``, or exceeds a memory cap
(templates, exporters, pending bytes). It prints one JSON summary.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ingest.addresses import V4_PREFIX
from ingest.decode import Decoder, DecoderLimits, headers
from ingest.schema import FLOW_SCHEMA
from ingest.tools.capture import read_udp
from ingest.tools.encode import IPFIX_IPV6_FIELDS, VARLEN, IpfixEncoder, V9Encoder, encode_v5
from ingest.tools.encode_sflow import example_datagrams, example_packets

# In a source checkout: the captures beside the decoder tests (absent from an installed package).
TESTDATA = Path(__file__).resolve().parents[2] / "tests" / "ingest" / "decode" / "testdata"
_HEADER_STARTS = (headers.ETHERNET, headers.IPV4, headers.IPV6, headers.MPLS, headers.IP_ANY, headers.TRANSPORT)
FUZZ_LIMITS = DecoderLimits(
    max_templates=200, max_exporters=16, max_pending_bytes=1 << 20, max_pending_sets=500, template_timeout_s=60
)


@dataclass
class FuzzResult:
    packets: int = 0
    records: int = 0
    headers: int = 0  # packet headers given to the header parser alone
    raised: list[str] = field(default_factory=list)
    internal: list[dict] = field(default_factory=list)  # bugs caught by the decoder's safety net
    schema_mismatches: int = 0
    cap_violations: list[str] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    max_rss_mb: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.raised or self.schema_mismatches or self.cap_violations or self.errors.get("internal"))


def corpus_packets(folder: Path) -> list[bytes]:
    """Every datagram in ``folder``: each ``*.dat`` is one payload, each capture gives its UDP payloads."""
    if not folder.is_dir():
        return []
    seeds = [p.read_bytes() for p in sorted(folder.glob("*.dat"))]
    for capture in sorted([*folder.glob("*.pcap"), *folder.glob("*.pcapng")]):
        seeds += [d.payload for d in read_udp(capture)]
    return seeds


def seed_packets(corpus: Path | None = None) -> list[bytes]:
    """Recorded datagrams (the test captures, plus ``corpus`` if given) and every kind the encoder builds."""
    seeds = corpus_packets(TESTDATA) + (corpus_packets(corpus) if corpus else [])
    rng = np.random.default_rng(1)
    n = 40
    addr = np.zeros((n, 16), np.uint8)
    addr[:, 10:12] = 0xFF
    addr[:, 12:] = rng.integers(0, 256, (n, 4))
    addr6 = rng.integers(0, 256, (n, 16)).astype(np.uint8)
    base = {
        "src_port": rng.integers(0, 65536, n), "dst_port": rng.integers(0, 65536, n),
        "protocol": np.full(n, 6), "bytes": rng.integers(1, 10**6, n), "packets": rng.integers(1, 999, n),
        "flow_start": np.full(n, 1_700_000_000_000_000), "flow_end": np.full(n, 1_700_000_001_000_000),
    }  # fmt: skip
    v4 = base | {"src_addr": addr, "dst_addr": addr[::-1].copy()}
    v6 = base | {"src_addr": addr6, "dst_addr": addr6[::-1].copy(), "ie315": [bytes(rng.bytes(60))] * n}
    seeds += encode_v5(v4, sys_uptime_ms=5_000, unix_secs=1_700_000_000)
    seeds += V9Encoder(300, domain=3).packets(v4, 1_700_000_000)
    seeds += IpfixEncoder(400, IPFIX_IPV6_FIELDS, 5).packets(v6, 1_700_000_000)
    varlen = IpfixEncoder(401, (*IPFIX_IPV6_FIELDS, (315, VARLEN)), 5)
    seeds += varlen.packets(v6, 1_700_000_000)
    seeds.append(varlen.options_packet(402, [(48, 1)], [(34, 4)], {"ie48": [1], "ie34": [10]}, 1_700_000_000))
    seeds.append(varlen.withdrawal_packet(1_700_000_000))
    seeds += example_datagrams()  # sFlow: every sample and record kind, tunnels, MPLS, IPv6 extensions
    return seeds


def fuzz_headers(rnd: random.Random, seeds: list[bytes], rows: int = 64) -> int:
    """The packet-header parser alone, on mutated sampled packets of every kind, from every
    starting layer; returns the rows parsed (it must not raise)."""
    frames = [mutate(rnd.choice(seeds), rnd.choice(seeds), rnd)[: rnd.randint(0, 300)] for _ in range(rows)]
    matrix, lengths = headers.frames_matrix(frames)
    start = np.array([rnd.choice(_HEADER_STARTS) for _ in range(rows)])
    parsed = headers.parse(matrix, lengths, start, rnd.choice(headers.TUNNELS), np.full(rows, rnd.choice((6, 17, 1))))
    return len(parsed.src)


def mutate(packet: bytes, other: bytes, rnd: random.Random) -> bytes:
    data = bytearray(packet)
    for _ in range(rnd.randint(1, 3)):
        kind = rnd.randrange(8)
        if kind == 0 and data:  # bit flips
            for _ in range(rnd.randint(1, 8)):
                i = rnd.randrange(len(data))
                data[i] ^= 1 << rnd.randrange(8)
        elif kind == 1 and data:  # random bytes
            for _ in range(rnd.randint(1, 4)):
                data[rnd.randrange(len(data))] = rnd.randrange(256)
        elif kind == 2:  # truncate
            data = data[: rnd.randrange(len(data) + 1)]
        elif kind == 3:  # garbage tail
            data += rnd.randbytes(rnd.randint(1, 64))
        elif kind in (4, 5) and len(data) > 24:  # a 16-bit field (set length, count, id) rewritten
            i = rnd.randrange(0, len(data) - 2, 2)
            value = rnd.choice([0, 1, 3, 4, 255, 256, 0x7FFF, 0x8000, 0xFFFF, rnd.randrange(65536)])
            data[i : i + 2] = struct.pack("!H", value)
        elif kind == 6:  # splice two packets
            cut = rnd.randrange(len(data) + 1)
            data = data[:cut] + other[rnd.randrange(len(other) + 1) :]
        elif kind == 7 and len(data) > 8:  # duplicate a region (repeated sets/records)
            a = rnd.randrange(len(data))
            b = min(len(data), a + rnd.randint(4, 200))
            data = data[:b] + data[a:b] + data[b:]
    return bytes(data)


def run(
    total: int, seed: int = 0, batch: int = 64, limits: DecoderLimits = FUZZ_LIMITS, corpus: Path | None = None
) -> FuzzResult:
    """Fuzz ``total`` packets; the decoder under test is checked against ``limits`` after each batch."""
    rnd = random.Random(seed)
    seeds = seed_packets(corpus)
    frames = example_packets()
    exporters = [V4_PREFIX + bytes([10, 0, 0, i]) for i in range(limits.max_exporters * 2)]
    decoder = Decoder(limits=limits)
    result = FuzzResult()
    start = time.perf_counter()
    clock = 1_700_000_000_000_000
    internal_seen = 0
    calls = 0
    while result.packets < total:
        items = []
        calls += 1
        for _ in range(min(1 if calls % 4 == 0 else batch, total - result.packets)):
            packet = rnd.choice(seeds)
            if rnd.random() < 0.9:
                packet = mutate(packet, rnd.choice(seeds), rnd)
            clock += rnd.randint(0, 2_000_000)
            items.append((rnd.choice(exporters), packet, clock))
        try:
            out = decoder.decode_many(items)
        except Exception as exc:  # the property under test: nothing may escape
            result.raised.append(f"{type(exc).__name__}: {exc}")
            items_repr = [p.hex() for _, p, _ in items]
            result.raised.append(json.dumps(items_repr)[:2000])
            break
        if decoder.stats.errors.get("internal", 0) > internal_seen and len(result.internal) < 5:
            internal_seen = decoder.stats.errors["internal"]
            result.internal.append({"error": decoder.last_internal_error, "packets": [p.hex() for _, p, _ in items]})
        try:
            result.headers += fuzz_headers(rnd, frames)
        except Exception as exc:  # the parser alone: nothing may escape either
            result.raised.append(f"headers: {type(exc).__name__}: {exc}")
            break
        result.packets += len(items)
        result.records += out.num_rows
        result.schema_mismatches += not out.schema.equals(FLOW_SCHEMA)
        _check_caps(decoder, limits, result)
    result.seconds = round(time.perf_counter() - start, 1)
    result.errors = dict(decoder.stats.errors)
    result.max_rss_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def _check_caps(decoder: Decoder, limits: DecoderLimits, result: FuzzResult) -> None:
    exporters = {key[0] for key in decoder.templates}
    checks = {
        "templates": (len(decoder.templates), limits.max_templates),
        "exporters": (len(exporters), limits.max_exporters),
        "pending_bytes": (decoder.stats.pending_bytes, limits.max_pending_bytes),
        "pending_sets": (decoder.stats.pending, limits.max_pending_sets),
        "samplers": (len(decoder.samplers), limits.max_sampler_entries),
        "interface_counters": (len(decoder.interface_counters.latest), limits.max_sampler_entries),
    }
    for name, (value, cap) in checks.items():
        if value > cap and len(result.cap_violations) < 10:
            result.cap_violations.append(f"{name} {value} > {cap}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ingest.tools.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=64, help="packets per decode call (every fourth call: one)")
    parser.add_argument("--corpus", type=Path, help="extra seeds: a folder of *.dat payloads and/or captures")
    args = parser.parse_args(argv)
    if args.corpus and not args.corpus.is_dir():
        parser.error(f"--corpus {args.corpus}: not a folder")
    if args.batch < 1:
        parser.error(f"--batch {args.batch}: give at least 1 packet per call")
    result = run(args.packets, args.seed, batch=args.batch, corpus=args.corpus)
    print(json.dumps({"ok": result.ok, **vars(result)}))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
