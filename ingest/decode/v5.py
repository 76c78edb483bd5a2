"""NetFlow v5: a 24-byte header and fixed 48-byte records, decoded with one numpy view.

The front end copies every v5 record of a ``decode_many`` call into one array read through
``RECORD``; ``flow_columns`` turns it into ``FLOW_SCHEMA`` columns, with the per-packet header
values (export time, sysUptime, sampling rate) spread to the records with ``np.repeat``.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from ingest.decode import columns
from ingest.decode.columns import Columns, constant
from ingest.decode.timestamps import uptime_to_unix_us

HEADER = struct.Struct("!HHIIIIBBH")  # version, count, sysUptime, secs, nsecs, sequence, engine type/id, sampling
HEADER_LEN = 24
RECORD_LEN = 48
_MAX_AGE_US = (1 << 31) * 1000  # a record's uptime is at most 2^31 ms away from its header's

RECORD = np.dtype(
    {
        "names": ["src_addr4", "dst_addr4", "input_if", "output_if", "packets", "bytes", "start_uptime",
                  "end_uptime", "src_port", "dst_port", "tcp_flags", "protocol", "src_as", "dst_as"],
        "formats": ["=u4", "=u4", ">u2", ">u2", ">u4", ">u4", ">u4", ">u4", ">u2", ">u2", "u1",
                    "u1", ">u2", ">u2"],
        "offsets": [0, 4, 12, 14, 16, 20, 24, 28, 32, 34, 37, 38, 40, 42],
        "itemsize": RECORD_LEN,
    }
)  # fmt: skip


def parse_header(payload: bytes) -> int | str:
    """The record count, or the error reason. (The header's clock and sampling interval are
    read later for all packets at once, from their first 24 bytes.)"""
    if len(payload) < HEADER_LEN:
        return "truncated"
    count = HEADER.unpack_from(payload)[1]
    if count == 0:
        return "malformed"
    if HEADER_LEN + count * RECORD_LEN > len(payload):
        return "truncated"  # claims more records than it holds: trust none of them
    return count


def flow_columns(recs: np.ndarray, packet: dict[str, Any], counts: np.ndarray | int) -> Columns | None:
    """``FLOW_SCHEMA`` columns of v5 records (``RECORD``) from a ``packet_table`` of their packets
    (``counts`` records each). None when a general rule is needed: an exporter boot time
    learned from options data (the per-template path of ``columns.forward`` handles it).

    The v5 record is fixed, so this is ``columns.forward`` for one known layout without its
    role lookups: one pass per column, and the time validity checked once per packet (a
    record's time is its packet's export time minus at most 2^31 ms)."""
    if packet["system_init_ms"].any():
        return None
    n = len(recs)
    recv = np.repeat(packet["recv"], counts)
    single = packet["_single_exporter"]
    exporter = constant(single, "V16", n) if single is not None else np.repeat(packet["exporter"], counts)
    export_us, uptime = packet["export_us"], packet["uptime"]
    start, end = _times(recs, export_us, uptime, counts)
    cols: Columns = {
        "receive_time": (recv, None),
        "exporter": (exporter, None),
        "observation_domain": (constant(0, np.uint32, n), None),
        "flow_version": (constant(5, np.uint8, n), None),
        "flow_start": (start, None),
        "flow_end": (end, None),
        "src_addr": (columns.mapped(recs["src_addr4"]), None),
        "dst_addr": (columns.mapped(recs["dst_addr4"]), None),
        "src_port": (recs["src_port"].astype(np.uint16), None),
        "dst_port": (recs["dst_port"].astype(np.uint16), None),
        "protocol": (recs["protocol"].copy(), None),
        "tcp_flags": (recs["tcp_flags"].astype(np.uint16), None),
        "bytes": (recs["bytes"].astype(np.uint64), None),
        "packets": (recs["packets"].astype(np.uint64), None),
        "input_if": (recs["input_if"].astype(np.uint32), None),
        "output_if": (recs["output_if"].astype(np.uint32), None),
        "src_as": (recs["src_as"].astype(np.uint32), None),
        "dst_as": (recs["dst_as"].astype(np.uint32), None),
        "direction": columns.absent("direction", n),
    }
    if not (int(export_us.min()) >= _MAX_AGE_US and int(export_us.max()) < columns.MAX_TIME_US - _MAX_AGE_US):
        cols["flow_start"] = (start, columns.valid_times(start, None))
        cols["flow_end"] = (end, columns.valid_times(end, None))
    rate = packet["rate"]
    columns.scale(cols, int(rate[0]) if (rate == rate[0]).all() else np.repeat(rate, counts))
    return cols


def _times(
    recs: np.ndarray, export_us: np.ndarray, uptime: np.ndarray, counts: np.ndarray | int
) -> tuple[np.ndarray, np.ndarray]:
    """(flow start, flow end) in µs from the records' sysUptime stamps and their packet's clock."""
    export_us, uptime = np.repeat(export_us, counts), np.repeat(uptime, counts)
    return (
        uptime_to_unix_us(recs["start_uptime"], export_us, uptime),
        uptime_to_unix_us(recs["end_uptime"], export_us, uptime),
    )
