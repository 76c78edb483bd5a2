"""Reading flow_raw back (``ingest.land.pgrows``) from the real PostgreSQL: every row layout decodes as written."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ingest.land import open_landing
from ingest.land.pgrows import READ_COLUMNS, _row_bounds, decode_rows
from ingest.land.postgres import _copy_out
from ingest.schema import FLOW_SCHEMA
from tests.ingest.flows import random_flows

pytestmark = pytest.mark.integration
W0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
V6 = bytes(range(0x20, 0x30))  # 2021:2223:...: not IPv4-mapped


def land(cfg, table: pa.Table) -> None:
    landing = open_landing(cfg.model_copy(update={"mode": "minimal"}))
    try:
        for batch in table.to_batches():
            landing.write(batch)
    finally:
        landing.close()


def read_back(dsn: str) -> tuple[pa.Table, np.ndarray]:
    """flow_raw decoded, and the width of each row as the COPY sent it."""
    query = f"COPY (SELECT {READ_COLUMNS} FROM flowlens.flow_raw) TO STDOUT (FORMAT BINARY)".encode()
    with psycopg.connect(dsn) as conn:
        data, sizes = _copy_out(conn, query)
    return decode_rows(data, sizes), _row_bounds(data, sizes)[1]


def ordered(table: pa.Table) -> pa.Table:
    return table.sort_by([(c, "ascending") for c in ("receive_time", "src_addr", "dst_addr", "bytes")])


def without_lists(table: pa.Table) -> pa.Table:
    for name in ("as_path", "communities"):
        i = table.schema.get_field_index(name)
        table = table.set_column(i, FLOW_SCHEMA.field(name), pa.nulls(table.num_rows, FLOW_SCHEMA.field(name).type))
    return table


def test_rows_of_one_layout_decode_as_written(flowlens_config, clean_pg):
    flows = without_lists(pa.Table.from_batches([random_flows(3_000, 0, seed=3, v6_share=0.0, null_share=0.0)]))
    flows = flows.set_column(0, FLOW_SCHEMA.field(0), pa.array(np.full(3_000, int(W0.timestamp() * 1e6)))
                             .cast(FLOW_SCHEMA.field(0).type))  # fmt: skip
    land(flowlens_config, flows)
    got, widths = read_back(clean_pg)
    assert len(set(widths.tolist())) == 1  # the record-view path only
    assert ordered(got).equals(ordered(flows))


def test_mixed_families_nulls_and_lists_decode_as_written(flowlens_config, clean_pg):
    start = int(W0.timestamp() * 1e6)
    flows = pa.Table.from_batches([random_flows(4_000, start, seed=4, v6_share=0.3, null_share=0.3)])
    land(flowlens_config, flows)
    got, widths = read_back(clean_pg)
    assert len(set(widths.tolist())) > 10  # many layouts, lists among them: walked and grouped alike
    assert ordered(got).equals(ordered(flows))


def test_rows_of_equal_width_but_different_layouts_decode_as_written(flowlens_config, clean_pg):
    # A: IPv6 source (+12 bytes), no input interface (-8); B: IPv6 destination, no output interface.
    # Same width, fields in different places: the second one read must not take the first's layout.
    base = without_lists(pa.Table.from_batches([random_flows(2, int(W0.timestamp() * 1e6), seed=5,
                                                             v6_share=0.0, null_share=0.0)]))  # fmt: skip
    a, b = base.to_pylist()
    a.update(src_addr=V6, input_if=None)
    b.update(dst_addr=V6, output_if=None)
    flows = pa.Table.from_pylist([a, b], schema=FLOW_SCHEMA)
    land(flowlens_config, flows)
    got, widths = read_back(clean_pg)
    assert widths.tolist() == [widths[0]] * 2
    assert ordered(got).equals(ordered(flows))


def test_a_value_outside_the_arrow_type_is_a_clear_error(flowlens_config, clean_pg):
    flows = without_lists(pa.Table.from_batches([random_flows(10, int(W0.timestamp() * 1e6), seed=6,
                                                              v6_share=0.0, null_share=0.0)]))  # fmt: skip
    land(flowlens_config, flows)
    with psycopg.connect(clean_pg) as conn:
        conn.execute("UPDATE flowlens.flow_raw SET src_port = 70000")  # an int4 column: PostgreSQL takes it
    with pytest.raises(ValueError, match="src_port: a value outside uint16"):
        read_back(clean_pg)


def test_a_buffer_reused_for_a_shorter_copy_decodes_only_that_copys_rows(flowlens_config, clean_pg):
    start = int(W0.timestamp() * 1e6)
    flows = pa.Table.from_batches([random_flows(3_000, start, seed=7, v6_share=0.3, null_share=0.3)])
    land(flowlens_config, flows)
    query = f"COPY (SELECT {READ_COLUMNS} FROM flowlens.flow_raw{{}}) TO STDOUT (FORMAT BINARY)"
    fewer = " WHERE src_port < 30000"
    buffer = bytearray()
    with psycopg.connect(clean_pg) as conn:
        for where in ("", fewer):  # the second COPY leaves the first one's tail in the buffer
            data, sizes = _copy_out(conn, query.format(where).encode(), buffer)
            got, kept = decode_rows(data, sizes), len(buffer)
            data.release()
    expected = flows.filter(pc.less(flows.column("src_port"), 30000))
    assert 0 < got.num_rows < flows.num_rows and kept > sum(sizes)  # the tail was there, and ignored
    assert ordered(got).equals(ordered(expected))


def test_an_empty_list_in_the_last_field_of_the_last_row_decodes(flowlens_config, clean_pg):
    # An empty int8[] is 12 bytes in a binary COPY (no length field): as the very last field only
    # the 2-byte trailer follows it, so reading a 16-byte header there ran past the buffer.
    flows = pa.Table.from_batches([random_flows(20, int(W0.timestamp() * 1e6), seed=8, null_share=0.0)])
    last = FLOW_SCHEMA.get_field_index("communities")
    lists = [[65536 + i] for i in range(19)] + [[]]
    flows = flows.set_column(last, FLOW_SCHEMA.field(last), pa.array(lists, FLOW_SCHEMA.field(last).type))
    land(flowlens_config, flows)
    query = f"COPY (SELECT {READ_COLUMNS} FROM flowlens.flow_raw ORDER BY communities DESC) TO STDOUT (FORMAT BINARY)"
    with psycopg.connect(clean_pg) as conn:
        data, sizes = _copy_out(conn, query.encode())
    got = decode_rows(data, sizes)
    assert got.column("communities").to_pylist()[-1] == []
    assert sorted(map(tuple, got.column("communities").to_pylist())) == sorted(map(tuple, lists))
