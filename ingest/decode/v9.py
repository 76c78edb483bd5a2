"""NetFlow v9 (RFC 3954) packet header and set ids.

Header: version, count, sysUptime (ms), unix_secs, sequence, source id (the observation domain).
``count`` is the number of records (template and data) in the packet. Exporters get it wrong
often enough (padding, zero-filled tails) that the decoder walks the sets by their lengths and
only notes a mismatch.
"""

from __future__ import annotations

import struct

HEADER = struct.Struct("!HHIIII")
HEADER_LEN = 20
TEMPLATE_SET = 0
OPTIONS_SET = 1


def parse_header(payload: bytes) -> int | str:
    """The source id (observation domain), or the error reason. (sysUptime and unix_secs are
    read later for all packets at once, from their first 24 bytes.)"""
    if len(payload) < HEADER_LEN:
        return "truncated"
    return HEADER.unpack_from(payload)[5]
