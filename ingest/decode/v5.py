"""NetFlow v5: a 24-byte header and fixed 48-byte records, decoded with one numpy view.

The front end copies every v5 record of a ``decode_many`` call into one array read through
``RECORD``; ``flow_columns`` turns it into ``FLOW_SCHEMA`` columns, with the per-packet header
values (export time, sysUptime, sampling rate) spread to the records by its ``Context``.
"""

from __future__ import annotations

import struct

import numpy as np

from ingest.decode import columns
from ingest.decode.columns import Columns
from ingest.decode.context import Context
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


def flow_columns(recs: np.ndarray, ctx: Context) -> Columns | None:
    """``FLOW_SCHEMA`` columns of v5 records (``RECORD``) with their packets' ``Context``. None
    when a general rule is needed: an exporter boot time learned from options data (the
    per-template path of ``columns.forward`` handles it).

    The v5 record is fixed, so this is ``columns.forward`` for one known layout without its
    role lookups: one pass per column, and the time validity checked once per packet (a
    record's time is its packet's export time minus at most 2^31 ms)."""
    if ctx.get("system_init_ms") is not None:
        return None
    export_us, uptime = ctx["export_us"], ctx["uptime"]
    start = uptime_to_unix_us(recs["start_uptime"], export_us, uptime)
    end = uptime_to_unix_us(recs["end_uptime"], export_us, uptime)
    cols: Columns = {
        "receive_time": (ctx["recv"], None),
        "exporter": (ctx["exporter"], None),
        "observation_domain": (ctx["domain"], None),
        "flow_version": (ctx["version"], None),
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
        "direction": columns.absent("direction", ctx.n),
    }
    clock = ctx.per_packet("export_us")
    if not (int(clock.min()) >= _MAX_AGE_US and int(clock.max()) < columns.MAX_TIME_US - _MAX_AGE_US):
        cols["flow_start"] = (start, columns.valid_times(start, None))
        cols["flow_end"] = (end, columns.valid_times(end, None))
    columns.scale(cols, ctx.shared("rate"))
    return cols
