"""``flowlens replay FILE... --target HOST:PORT``: send captures or raw payload files to a collector.

A pcap/pcapng contributes every UDP datagram in it (``--port`` keeps one destination port), sent
at the capture's original pace (``--speed 2`` twice as fast, ``--speed 0`` as fast as possible) or
at a fixed ``--pps``. Any other file is one raw UDP payload (as in ``interop/logstash-netflow``).
With ``--keep-sources`` each original exporter address is replayed from a loopback address of its
own (127.0.0.1, 127.0.0.2, ... in order of appearance), so the collector still sees distinct
exporters with their own templates; otherwise everything comes from one socket.

Examples::

    flowlens replay capture.pcap --target 127.0.0.1:2055 --speed 10
    flowlens replay payloads/*.dat --target 127.0.0.1:4739 --pps 1000
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ingest.tools.capture import PCAP_MAGICS, PCAPNG_SHB, CaptureError, CaptureStats, read_udp


@dataclass(frozen=True)
class Datagram:
    time_us: int | None  # capture time; None for raw payload files
    source: str  # original exporter address (text)
    payload: bytes


def load(paths: list[Path], port: int | None = None) -> list[Datagram]:
    """Every datagram of the files, in file order (and capture order within a capture)."""
    out: list[Datagram] = []
    stats = CaptureStats()
    for path in paths:
        with open(path, "rb") as fh:
            magic = fh.read(4)
        if magic in PCAP_MAGICS or magic == PCAPNG_SHB:
            for d in read_udp(path, stats):
                if port is None or d.dst_port == port:
                    ip = ipaddress.IPv6Address(d.src)
                    out.append(Datagram(d.time_us, str(ip.ipv4_mapped or ip), d.payload))
        else:
            out.append(Datagram(None, "file", path.read_bytes()))
    return out


class Sources:
    """One UDP socket per original exporter (on 127.0.0.N) or a single shared socket."""

    def __init__(self, keep: bool):
        self.keep = keep
        self.socks: dict[str, socket.socket] = {}

    def socket_for(self, source: str) -> socket.socket:
        key = source if self.keep else ""
        sock = self.socks.get(key)
        if sock is None:
            if len(self.socks) >= 250:
                raise SystemExit("flowlens replay: more than 250 exporters; drop --keep-sources")
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((f"127.0.0.{len(self.socks) + 1}" if self.keep else "0.0.0.0", 0))
            self.socks[key] = sock
        return sock

    def close(self) -> None:
        for sock in self.socks.values():
            sock.close()


def replay(datagrams: list[Datagram], target: tuple[str, int], speed: float = 1.0, pps: float | None = None,
           keep_sources: bool = False, loops: int = 1) -> dict[str, float]:  # fmt: skip
    """Send the datagrams; pace by capture time / ``speed`` or by ``pps``; return what was sent."""
    sources = Sources(keep_sources)
    sent = sent_bytes = 0
    start = time.monotonic()
    try:
        for _ in range(loops):
            first = next((d.time_us for d in datagrams if d.time_us is not None), None)
            loop_start = time.monotonic()
            for i, d in enumerate(datagrams):
                due = _due(i, d, first, speed, pps)
                if due is not None:
                    wait = loop_start + due - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                sources.socket_for(d.source).sendto(d.payload, target)
                sent += 1
                sent_bytes += len(d.payload)
    finally:
        sources.close()
    elapsed = time.monotonic() - start
    return {"datagrams": sent, "bytes": sent_bytes, "seconds": round(elapsed, 3),
            "exporters": len(sources.socks)}  # fmt: skip


def _due(index: int, d: Datagram, first: int | None, speed: float, pps: float | None) -> float | None:
    """Seconds after the loop start at which datagram ``index`` is due (None = now)."""
    if pps:
        return index / pps
    if speed and d.time_us is not None and first is not None:
        return (d.time_us - first) / 1e6 / speed
    return None


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="flowlens replay", description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", type=Path, help="pcap/pcapng captures or raw payload files")
    p.add_argument("--target", default="127.0.0.1:2055", help="collector HOST:PORT")
    p.add_argument("--speed", type=float, default=1.0, help="pace factor vs the capture (0 = as fast as possible)")
    p.add_argument("--pps", type=float, help="fixed datagrams per second instead of the capture's pace")
    p.add_argument("--port", type=int, help="only datagrams to this destination port (captures)")
    p.add_argument("--keep-sources", action="store_true", help="one loopback source address per exporter")
    p.add_argument("--loops", type=int, default=1, help="send everything this many times")
    args = p.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    if not port.isdigit():
        print(f"flowlens replay: --target {args.target!r}: expected HOST:PORT", file=sys.stderr)
        return 2
    try:
        datagrams = load(args.files, args.port)
    except (OSError, CaptureError) as exc:
        print(f"flowlens replay: {exc}", file=sys.stderr)
        return 1
    if not datagrams:
        print("flowlens replay: no UDP datagrams in the files given (check --port)", file=sys.stderr)
        return 1
    result = replay(datagrams, (host or "127.0.0.1", int(port)), args.speed, args.pps, args.keep_sources, args.loops)
    print(json.dumps(result))
    return 0
