"""Big-endian reads at offsets of an sFlow datagram buffer (``ingest.decode.xdr``)."""

from __future__ import annotations

import ipaddress
import struct

import numpy as np

from ingest.decode.xdr import Buffer

V4, V6 = ipaddress.ip_address("192.0.2.7"), ipaddress.ip_address("2001:db8::9")
# word 0: 7; word 1: 0xDEADBEEF; then an IPv4 address (word 2) and an IPv6 one (words 3-6)
RAW = struct.pack("!II", 7, 0xDEADBEEF) + V4.packed + V6.packed + bytes(32)


def test_words_are_read_big_endian_at_each_offset() -> None:
    buf = Buffer(RAW)
    assert buf.u32(np.array([0, 4, 0])).tolist() == [7, 0xDEADBEEF, 7]
    assert buf.u32s(np.array([0]), 2).tolist() == [[7, 0xDEADBEEF]]


def test_addresses_are_ipv4_mapped_or_as_they_are() -> None:
    buf = Buffer(RAW)
    mixed = buf.bytes16(np.array([8, 12]), np.array([True, False]))
    assert [ipaddress.ip_address(a.tobytes()) for a in mixed] == [ipaddress.ip_address(f"::ffff:{V4}"), V6]
    only4 = buf.bytes16(np.array([8]), np.array([True]))
    assert only4[0].tobytes() == ipaddress.ip_address(f"::ffff:{V4}").packed


def test_rows_are_the_bytes_at_each_offset() -> None:
    buf = Buffer(RAW)
    rows = buf.rows(np.array([4, 9]), 3)
    assert rows.shape == (2, 3) and [bytes(r) for r in rows] == [RAW[4:7], RAW[9:12]]
    assert buf.rows(np.array([0, 4]), 0).shape == (2, 0)
