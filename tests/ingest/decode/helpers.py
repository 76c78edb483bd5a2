"""Shared test data for decoder tests: random flows and small conversions."""

from __future__ import annotations

import ipaddress

import numpy as np
import pyarrow as pa

EXPORT_TIME = 1_700_000_000
EXPORTER = "192.0.2.10"
RECEIVE_US = EXPORT_TIME * 1_000_000 + 500_000


def random_flows(n: int, seed: int, ipv6: bool = False) -> dict[str, np.ndarray]:
    """Random flows with ms-aligned times in the hour before EXPORT_TIME (v9/IPFIX ms precision)."""
    rng = np.random.default_rng(seed)
    if ipv6:
        src = rng.integers(0, 256, (n, 16)).astype(np.uint8)
        dst = rng.integers(0, 256, (n, 16)).astype(np.uint8)
        src[:, 0] = dst[:, 0] = 0x20  # global unicast, never IPv4-mapped
    else:
        src = np.zeros((n, 16), np.uint8)
        dst = np.zeros((n, 16), np.uint8)
        src[:, 10:12] = dst[:, 10:12] = 0xFF
        src[:, 12:] = rng.integers(0, 256, (n, 4))
        dst[:, 12:] = rng.integers(0, 256, (n, 4))
    end = EXPORT_TIME * 1_000_000 - rng.integers(0, 3_600_000, n) * 1000
    return {
        "src_addr": src,
        "dst_addr": dst,
        "src_port": rng.integers(0, 65536, n),
        "dst_port": rng.integers(0, 65536, n),
        "protocol": rng.choice([1, 6, 17, 47, 58], n),
        "tcp_flags": rng.integers(0, 256, n),
        "bytes": rng.integers(1, 2**32, n),
        "packets": rng.integers(1, 2**32, n),
        "flow_start": end - rng.integers(0, 600_000, n) * 1000,
        "flow_end": end,
        "input_if": rng.integers(0, 65536, n),
        "output_if": rng.integers(0, 65536, n),
        "src_as": rng.integers(0, 65536, n),
        "dst_as": rng.integers(0, 65536, n),
        "direction": rng.integers(0, 2, n),
    }


def column(batch: pa.RecordBatch | pa.Table, name: str) -> list:
    return batch.column(name).to_pylist()


def addresses(batch: pa.RecordBatch, name: str) -> list[str | None]:
    out: list[str | None] = []
    for value in batch.column(name).to_pylist():
        addr = None if value is None else ipaddress.IPv6Address(value)
        out.append(None if addr is None else str(addr.ipv4_mapped or addr))
    return out


def times_us(batch: pa.RecordBatch, name: str) -> np.ndarray:
    return batch.column(name).cast(pa.int64()).to_numpy(zero_copy_only=False)


def mapped(text: str) -> bytes:
    addr = ipaddress.ip_address(text)
    return (addr if addr.version == 6 else ipaddress.IPv6Address(f"::ffff:{addr}")).packed
