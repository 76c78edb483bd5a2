"""``flowlens decode FILE... [--port N] [--table]``: print the flows in captures or payload files.

Files are processed in the order given with one decoder, so templates learned from one file
decode data in the next, as a collector would. A pcap/pcapng contributes every UDP datagram
(``--port`` keeps one destination port), the exporter being the datagram's IP source and the
receive time its capture time; any other file is one raw UDP payload (``.dat``), attributed to
``--exporter`` and received at the file's modification time.

Output: one JSON object per flow (addresses as text, times ISO-8601 UTC), or ``--table``.
Decoder counters (errors by reason, templates, pending data) go to stderr with ``--stats``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from ingest.addresses import addr_text
from ingest.decode import Decoder
from ingest.tools.capture import PCAP_MAGICS, PCAPNG_SHB, CaptureError, CaptureStats, read_udp

TABLE_COLUMNS = ("flow_start", "src_addr", "src_port", "dst_addr", "dst_port", "protocol", "bytes", "packets",
                 "sampling_rate", "exporter")  # fmt: skip


def batch_records(batch: pa.RecordBatch) -> Iterator[dict]:
    """Rows of a flow batch as JSON-ready dicts."""
    names = batch.schema.names
    texts: dict[bytes, str] = {}
    for row in batch.to_pylist():
        out = {}
        for name in names:
            value = row[name]
            if isinstance(value, bytes):
                value = texts.get(value) or texts.setdefault(value, addr_text(value))
            elif isinstance(value, dt.datetime):
                value = value.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
            out[name] = value
        yield out


def _packets(path: Path, port: int | None, exporter: str, stats: CaptureStats) -> list[tuple[bytes | str, bytes, int]]:
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic in PCAP_MAGICS or magic == PCAPNG_SHB:
        return [(d.src, d.payload, d.time_us) for d in read_udp(path, stats) if port is None or d.dst_port == port]
    return [(exporter, path.read_bytes(), int(path.stat().st_mtime * 1_000_000))]


def _print_table(rows: list[dict], out) -> None:
    widths = {c: max([len(c)] + [len(str(r[c])) for r in rows]) for c in TABLE_COLUMNS}
    print("  ".join(c.ljust(widths[c]) for c in TABLE_COLUMNS), file=out)
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in TABLE_COLUMNS), file=out)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="flowlens decode", description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="pcap/pcapng captures or raw payload files")
    parser.add_argument("--port", type=int, help="only UDP datagrams to this destination port (captures)")
    parser.add_argument("--table", action="store_true", help="aligned columns for humans instead of JSON lines")
    parser.add_argument("--exporter", default="0.0.0.0", help="exporter address for raw payload files")
    parser.add_argument("--state", type=Path, help="load templates from / save them to this JSON file")
    parser.add_argument("--stats", action="store_true", help="print decoder counters to stderr at the end")
    args = parser.parse_args(argv)
    decoder = Decoder()
    if args.state and args.state.exists():
        decoder.load_state(args.state)
    capture_stats = CaptureStats()
    rows: list[dict] = []
    for path in args.files:
        try:
            packets = _packets(path, args.port, args.exporter, capture_stats)
        except (OSError, CaptureError) as exc:
            print(f"flowlens decode: {path}: {exc}", file=sys.stderr)
            return 1
        batch = decoder.decode_many(packets)
        if args.table:
            rows.extend(batch_records(batch))
        else:
            for row in batch_records(batch):
                sys.stdout.write(json.dumps(row) + "\n")
    if args.table:
        _print_table(rows, sys.stdout)
    if args.state:
        decoder.save_state(args.state)
    if args.stats:
        stats = decoder.stats.as_dict() | {"capture": vars(capture_stats)}
        print(json.dumps(stats), file=sys.stderr)
    return 0
