"""IPFIX (RFC 7011) message header and set ids.

Header: version 10, message length, export time (s), sequence, observation domain. The message
length bounds the sets: bytes beyond it are ignored, a length beyond the datagram is truncation.
Set id 2 is a template set, 3 an options template set, 256+ data; a template record with no
fields withdraws that template (id 2 or 3 in it: every data or options template of the domain).
"""

from __future__ import annotations

import struct

HEADER = struct.Struct("!HHIII")
HEADER_LEN = 16
TEMPLATE_SET = 2
OPTIONS_SET = 3


def parse_header(payload: bytes) -> tuple[int, int] | str:
    """(message length, observation domain) or the error reason."""
    if len(payload) < HEADER_LEN:
        return "truncated"
    _, length, _, _, domain = HEADER.unpack_from(payload)
    if length < HEADER_LEN:
        return "malformed"
    if length > len(payload):
        return "truncated"
    return length, domain
