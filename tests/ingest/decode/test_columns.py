"""Shared constant columns (``columns.constant``) and their use in decoded batches."""

from __future__ import annotations

import numpy as np
import pytest

from ingest.decode import Decoder, columns
from ingest.tools.encode import encode_v5
from tests.ingest.decode.helpers import EXPORT_TIME, RECEIVE_US, random_flows


def test_constant_values_are_read_only_and_shared() -> None:
    a = columns.constant(7, np.uint32, 10)
    b = columns.constant(7, np.uint32, 5000)
    assert a.tolist() == [7] * 10 and (b == 7).all() and len(b) == 5000
    assert not a.flags.writeable and not b.flags.writeable
    with pytest.raises(ValueError):
        b[0] = 1
    exporter = bytes(range(16))
    rows = columns.constant(exporter, "V16", 3)
    assert [bytes(r) for r in rows] == [exporter] * 3
    assert np.shares_memory(columns.constant(7, np.uint32, 100), b)  # one cached array, sliced


def test_constant_memory_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many distinct values (exporters) never hold more than ``CONSTANT_BYTES``."""
    monkeypatch.setattr(columns, "CONSTANT_BYTES", 1 << 20)
    monkeypatch.setattr(columns, "_constants", {})
    monkeypatch.setattr(columns, "_constant_bytes", 0)
    for i in range(200):
        value = i.to_bytes(16, "big")
        rows = columns.constant(value, "V16", 1000 + i * 37)
        assert len(rows) == 1000 + i * 37 and bytes(rows[-1]) == value
        assert columns.constant_bytes() <= 1 << 20
    assert sum(a.nbytes for a in columns._constants.values()) == columns.constant_bytes()


def test_batches_built_on_shared_constants() -> None:
    """Batches of different sizes from one exporter: their constant columns (slices of one
    cached array each) hold the right value, length and nulls."""
    decoder = Decoder(default_sampling_rate=4)
    packets = encode_v5(random_flows(90, 1), sys_uptime_ms=86_400_000, unix_secs=EXPORT_TIME)
    first = decoder.decode_many([("192.0.2.1", p, RECEIVE_US) for p in packets[:2]])
    second = decoder.decode_many([("192.0.2.1", p, RECEIVE_US) for p in packets[2:]])
    assert first.num_rows == 60 and second.num_rows == 30
    for batch in (first, second):
        assert set(batch.column("exporter").to_pylist()) == {bytes(10) + b"\xff\xff" + bytes([192, 0, 2, 1])}
        assert set(batch.column("flow_version").to_pylist()) == {5}
        assert set(batch.column("sampling_rate").to_pylist()) == {4}
        assert batch.column("direction").null_count == batch.num_rows
        assert batch.column("observation_domain").to_pylist() == [0] * batch.num_rows
