"""NetFlow v5: a 24-byte header and fixed 48-byte records, decoded with one numpy view.

Every v5 record of a ``decode_many`` call is concatenated and read through ``RECORD`` in one
``np.frombuffer``; per-packet header values (export time, sysUptime, sampling interval) are
spread to the records with ``np.repeat``.
"""

from __future__ import annotations

import struct

import numpy as np

HEADER = struct.Struct("!HHIIIIBBH")  # version, count, sysUptime, secs, nsecs, sequence, engine type/id, sampling
HEADER_LEN = 24
RECORD_LEN = 48

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
