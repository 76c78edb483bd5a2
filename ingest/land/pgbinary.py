"""Arrow flow batches <-> PostgreSQL binary COPY, vectorized with numpy (no per-row Python).

Writing: :func:`encode_copy` turns a FLOW_SCHEMA batch into one ``COPY ... FROM STDIN (FORMAT
BINARY)`` stream for ``flowlens.flow_raw``. Rows of a binary COPY are variable-width only through
NULLs and ``inet`` (IPv4 8 bytes, IPv6 20), so rows are grouped by that "shape" (which columns are
NULL, which addresses are IPv4): within a group every row has the same width and the group is one
``(rows, width)`` byte matrix filled column by column. Real traffic has a handful of shapes.
IPv4-mapped addresses become IPv4 ``inet`` values, so SQL users see ``10.0.0.1``, not ``::ffff:``.

Reading flow_raw back: :mod:`ingest.land.pgrows`.

This is the psycopg ``copy.set_types`` binary format written directly: psycopg's per-row
``write_row`` costs ~3 µs/row with 20 columns, this costs well under 1 µs/row.

Tables (the pipeline's writes): :func:`copy_arrow` sends any Arrow table with a PostgreSQL type per
column, column-at-a-time and keeping ``inet`` native, in chunks of ``CHUNK_ROWS`` (while the client
encodes the next one, the server still has the previous one's tail to work on). Two encoders:

- fixed width (the usual case: no NULLs, no text, each address column of one family): every row
  has the same width, so the rows are one NumPy record array filled column by column and its
  buffer *is* the COPY payload (``flow_stats``' 10 columns: about 0.2 µs a row);
- general: each field is encoded with Arrow kernels and the columns are joined element-wise, so
  the joined array's data buffer is the payload (about 0.5 µs a row).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from ingest.addresses import V4_PREFIX, address_matrix, addresses, v4_mapped
from ingest.schema import FLOW_COLUMNS

PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z in Unix microseconds
HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
TRAILER = struct.pack("!h", -1)

# Fixed-width PostgreSQL types -> their big-endian binary value (numpy dtype).
_FIXED = {"int2": ">i2", "int4": ">i4", "int8": ">i8", "float8": ">f8", "bool": ">?", "timestamptz": ">i8"}
WIDTH = {pg_type: np.dtype(dtype).itemsize for pg_type, dtype in _FIXED.items()}
# inet header words (family 2 AF_INET / 3 AF_INET6, prefix bits, is_cidr, address length).
INET4_WORD, INET6_WORD = 0x02200004, 0x03800010
NULL_FIELD = struct.pack(">i", -1)

# flow_raw column -> PostgreSQL type.
KINDS: dict[str, str] = {
    "receive_time": "timestamptz", "exporter": "inet", "observation_domain": "int8", "flow_version": "int2",
    "flow_start": "timestamptz", "flow_end": "timestamptz", "src_addr": "inet", "dst_addr": "inet",
    "src_port": "int4", "dst_port": "int4", "protocol": "int2", "tcp_flags": "int4", "bytes": "int8",
    "packets": "int8", "sampling_rate": "int8", "input_if": "int8", "output_if": "int8", "src_as": "int8",
    "dst_as": "int8", "direction": "int2", "next_hop": "inet", "as_path": "int8[]", "communities": "int8[]",
}  # fmt: skip
COPY_IN_SQL = f"COPY flowlens.flow_raw ({', '.join(FLOW_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
LISTS = tuple(name for name in FLOW_COLUMNS if KINDS[name] == "int8[]")
INT8_OID = 20
INET_NULL = 32  # shape bit of a NULL inet column: INET_NULL + its index (its own bit says IPv4)
LENGTH_BITS = 16  # a list's length in a row's group key (longer lists: not a valid flow_raw value)


def _column_values(batch: pa.RecordBatch, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(native int64/int32/... values, validity or None) for one non-address column."""
    col = batch.column(name)
    valid = None
    if col.null_count:
        valid = np.asarray(col.is_valid())
        col = col.fill_null(0)
    if KINDS[name] == "timestamptz":
        return col.cast(pa.int64()).to_numpy() - PG_EPOCH_US, valid
    return col.to_numpy(), valid


def _list_values(col: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(flat values, offset of each row's first value, lengths, validity) of a list column."""
    offsets = col.offsets.to_numpy().astype(np.int64)
    flat = col.values.to_numpy(zero_copy_only=False).astype(np.int64)
    valid = np.asarray(col.is_valid()) if col.null_count else np.ones(len(col), bool)
    return flat, offsets[:-1], np.diff(offsets), valid  # ``values`` ignores a slice: offsets index it as they are


def encode_copy(batch: pa.RecordBatch) -> bytes:
    """The whole binary COPY stream (header, rows, trailer) for a FLOW_SCHEMA batch."""
    n = batch.num_rows
    cols: dict[str, tuple] = {}
    shape = np.zeros(n, dtype=np.int64)
    lengths = np.zeros(n, dtype=np.int64)  # the list columns' lengths, LENGTH_BITS each
    for bit, name in enumerate(FLOW_COLUMNS):
        kind = KINDS[name]
        if kind == "inet":
            column = batch.column(name)
            addr = addresses(column)
            is_v4 = v4_mapped(addr)
            cols[name] = (addr, is_v4)
            shape |= is_v4.astype(np.int64) << bit
            if column.null_count:
                shape |= (~np.asarray(column.is_valid())).astype(np.int64) << (INET_NULL + bit)
        elif kind == "int8[]":
            column = batch.column(name)
            if column.null_count == n:
                cols[name] = None
                shape |= 1 << bit
                continue
            cols[name] = _list_values(column)
            count, valid = cols[name][2], cols[name][3]
            if (count >= 1 << LENGTH_BITS).any():
                raise CopyEncodeError(f"{name}: a list of more than {(1 << LENGTH_BITS) - 1} values")
            shape |= (~valid).astype(np.int64) << bit
            lengths |= np.where(valid, count, 0) << (LENGTH_BITS * LISTS.index(name))
        else:
            cols[name] = _column_values(batch, name)
            if cols[name][1] is not None:
                shape |= (~cols[name][1]).astype(np.int64) << bit
    parts = [HEADER]
    if lengths.any():
        keys, inverse = np.unique(np.stack([shape, lengths], axis=1), axis=0, return_inverse=True)
        groups = [(int(k[0]), int(k[1]), np.flatnonzero(inverse.reshape(-1) == i)) for i, k in enumerate(keys)]
    else:
        shapes = np.unique(shape)
        groups = [(int(v), 0, None if len(shapes) == 1 else np.flatnonzero(shape == v)) for v in shapes]
    for value, length_key, rows in groups:
        parts.append(_encode_group(cols, value, length_key, rows, n))
    parts.append(TRAILER)
    return b"".join(parts)


def _list_length(length_key: int, name: str) -> int:
    return (length_key >> (LENGTH_BITS * LISTS.index(name))) & ((1 << LENGTH_BITS) - 1)


def _row_dtype(shape: int, length_key: int) -> np.dtype:
    """The packed big-endian record type of a row of this shape (NULL columns have no value)."""
    fields: list[tuple] = [("count", ">i2")]
    for bit, name in enumerate(FLOW_COLUMNS):
        flag = bool(shape >> bit & 1)
        fields.append((f"len_{name}", ">i4"))
        if KINDS[name] == "inet":
            if not shape >> (INET_NULL + bit) & 1:
                fields.append((f"hdr_{name}", ">u4"))
                fields.append((name, "u1", (4 if flag else 16,)))
        elif KINDS[name] == "int8[]":
            if not flag:  # ndim, has-NULL flag, element type, then (length, lower bound) and elements
                k = _list_length(length_key, name)
                fields.append((f"arr_{name}", ">i4", (5 if k else 3,)))
                if k:
                    fields.append((name, [("len", ">i4"), ("v", ">i8")], (k,)))
        elif not flag:
            fields.append((name, _FIXED[KINDS[name]]))
    return np.dtype(fields)


def _encode_group(cols, shape: int, length_key: int, rows: np.ndarray | None, n: int) -> bytes:
    """Rows sharing one shape (same NULLs, address families, list lengths) as one packed record array."""
    rec = np.empty(n if rows is None else len(rows), dtype=_row_dtype(shape, length_key))
    rec["count"] = len(FLOW_COLUMNS)
    for bit, name in enumerate(FLOW_COLUMNS):
        flag = bool(shape >> bit & 1)
        kind = KINDS[name]
        if kind == "int8[]":
            _encode_list(rec, cols[name], name, flag, _list_length(length_key, name), rows)
            continue
        values = cols[name][0] if rows is None else cols[name][0][rows]
        if kind == "inet":
            if shape >> (INET_NULL + bit) & 1:
                rec[f"len_{name}"] = -1
                continue
            rec[f"len_{name}"] = 8 if flag else 20
            rec[f"hdr_{name}"] = INET4_WORD if flag else INET6_WORD
            rec[name] = values[:, 12:] if flag else values
        elif flag:
            rec[f"len_{name}"] = -1
        else:
            rec[f"len_{name}"] = WIDTH[KINDS[name]]
            rec[name] = values
    return rec.tobytes()


def _encode_list(rec: np.ndarray, col: tuple | None, name: str, null: bool, k: int, rows: np.ndarray | None) -> None:
    """A list column of rows that all hold ``k`` values (or are all NULL) as PostgreSQL int8[]."""
    if null:
        rec[f"len_{name}"] = -1
        return
    rec[f"len_{name}"] = 12 + (8 + 12 * k if k else 0)
    rec[f"arr_{name}"] = (1, 0, INT8_OID, k, 1) if k else (0, 0, INT8_OID)
    if k:
        flat, first = col[0], col[1] if rows is None else col[1][rows]
        rec[name]["len"] = 8
        rec[name]["v"] = flat[first[:, None] + np.arange(k)]


# --- writing any Arrow table ------------------------------------------------------------------
# An inet field: its length, then the header word (family, prefix bits, is_cidr, length), the address.
INET4_HEAD = struct.pack(">iI", 8, INET4_WORD)  # length + header word of an IPv4 inet field
INET6_HEAD = struct.pack(">iI", 20, INET6_WORD)
# Rows per encoded chunk: small enough that the server starts on the first one quickly and each
# general-path buffer stays far below Arrow's 2 GiB binary limit.
CHUNK_ROWS = 100_000


class CopyEncodeError(ValueError):
    """A column cannot be encoded for the PostgreSQL type asked for."""


def _fixed_field(values: np.ndarray, dtype: str) -> pa.Array:
    """int32 length prefix + big-endian value per row, as a fixed-size binary Arrow array."""
    size = np.dtype(dtype).itemsize
    rows = np.empty(len(values), dtype=[("len", ">i4"), ("v", dtype)])
    rows["len"] = size
    rows["v"] = values
    buf = pa.py_buffer(rows.tobytes())
    return pc.cast(pa.FixedSizeBinaryArray.from_buffers(pa.binary(4 + size), len(values), [None, buf]), pa.binary())


def _numpy_values(column: pa.Array, pg_type: str) -> np.ndarray:
    if pg_type == "timestamptz":
        micros = pc.cast(pc.cast(column, pa.timestamp("us", tz="UTC")), pa.int64())
        return pc.fill_null(micros, 0).to_numpy(zero_copy_only=False) - PG_EPOCH_US
    if pg_type == "bool":
        return pc.fill_null(column, False).to_numpy(zero_copy_only=False)
    return pc.fill_null(column, 0).to_numpy(zero_copy_only=False)


def _inet_field(column: pa.Array) -> pa.Array:
    addrs = pc.cast(column, pa.binary())
    is_v4 = pc.equal(pc.binary_slice(addrs, 0, 12), pa.scalar(V4_PREFIX, pa.binary()))
    v4 = pc.binary_join_element_wise(pa.scalar(INET4_HEAD), pc.binary_slice(addrs, 12, 16), pa.scalar(b""))
    v6 = pc.binary_join_element_wise(pa.scalar(INET6_HEAD), addrs, pa.scalar(b""))
    return pc.if_else(is_v4, v4, v6)


def _text_field(column: pa.Array) -> pa.Array:
    data = pc.cast(pc.cast(column, pa.string()), pa.binary())
    lengths = pc.fill_null(pc.binary_length(data), 0).to_numpy(zero_copy_only=False).astype(">i4")
    prefix = pa.FixedSizeBinaryArray.from_buffers(pa.binary(4), len(data), [None, pa.py_buffer(lengths.tobytes())])
    return pc.binary_join_element_wise(pc.cast(prefix, pa.binary()), data, pa.scalar(b""))


def encode_field(column: pa.Array, pg_type: str) -> pa.Array:
    """One column as binary-COPY fields (length + bytes, or -1 for NULL)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pg_type in _FIXED:
        encoded = _fixed_field(_numpy_values(column, pg_type), _FIXED[pg_type])
    elif pg_type == "inet":
        if not (pa.types.is_fixed_size_binary(column.type) and column.type.byte_width == 16) and not (
            pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)
        ):
            raise CopyEncodeError(f"inet needs 16-byte addresses, got {column.type}")
        encoded = _inet_field(column)
    elif pg_type == "text":
        encoded = _text_field(column)
    else:
        raise CopyEncodeError(f"no binary COPY encoder for PostgreSQL type {pg_type!r}")
    if column.null_count:
        encoded = pc.if_else(pc.is_null(column), pa.scalar(NULL_FIELD), encoded)
    return encoded


def _fixed_width_fields(table: pa.Table, pg_types: Sequence[str]) -> list[tuple] | None:
    """Per column ``(record fields, values)`` when every row encodes to the same width, else None.

    That holds when no column has NULLs or is text, and each inet column holds one address family
    (IPv4 fields are 8 bytes, IPv6 20).
    """
    columns = []
    for i, pg_type in enumerate(pg_types):
        column = table.column(i)
        if column.null_count or (pg_type not in _FIXED and pg_type != "inet"):
            return None
        if pg_type != "inet":
            columns.append(([(f"len{i}", ">i4"), (f"v{i}", _FIXED[pg_type])], _numpy_values(column, pg_type)))
            continue
        addrs = address_matrix(column)
        if addrs is None:
            return None
        is_v4 = v4_mapped(addrs)
        if is_v4.all():
            columns.append(([(f"len{i}", ">i4"), (f"head{i}", ">u4"), (f"v{i}", "u1", (4,))], addrs[:, 12:]))
        elif not is_v4.any():
            columns.append(([(f"len{i}", ">i4"), (f"head{i}", ">u4"), (f"v{i}", "u1", (16,))], addrs))
        else:
            return None
    return columns


def _fixed_width_rows(table: pa.Table, pg_types: Sequence[str]) -> memoryview | None:
    """The COPY rows as one packed NumPy record array (see ``_fixed_width_fields``), or None."""
    columns = _fixed_width_fields(table, pg_types)
    if columns is None:
        return None
    fields: list[tuple] = [("count", ">i2")]
    for column_fields, _ in columns:
        fields.extend(column_fields)
    rows = np.empty(table.num_rows, np.dtype(fields))  # a list of fields is packed: no padding
    rows["count"] = table.num_columns
    for i, (column_fields, values) in enumerate(columns):
        if len(column_fields) == 3:  # inet: length, header word, address bytes
            width = values.shape[1]
            rows[f"len{i}"] = 4 + width
            rows[f"head{i}"] = INET4_WORD if width == 4 else INET6_WORD
        else:
            rows[f"len{i}"] = np.dtype(column_fields[1][1]).itemsize
        rows[f"v{i}"] = values
    return memoryview(rows).cast("B")


def encode_rows(table: pa.Table, pg_types: Sequence[str]) -> bytes:
    """The binary-COPY row bytes of ``table`` (no header/trailer); columns in table order."""
    return bytes(_encode_chunk(table, pg_types))


def _encode_chunk(table: pa.Table, pg_types: Sequence[str]) -> bytes | memoryview:
    """``encode_rows`` without the final copy: the fixed-width path returns the record buffer itself."""
    if table.num_columns != len(pg_types):
        raise CopyEncodeError(f"{table.num_columns} columns but {len(pg_types)} PostgreSQL types")
    if table.num_rows == 0:
        return b""
    fixed = _fixed_width_rows(table, pg_types)
    if fixed is not None:
        return fixed
    count = pa.scalar(struct.pack(">h", table.num_columns))
    fields = [encode_field(table.column(i), t) for i, t in enumerate(pg_types)]
    joined = pc.binary_join_element_wise(count, *fields, pa.scalar(b""))
    joined = joined.combine_chunks() if isinstance(joined, pa.ChunkedArray) else joined
    offsets = np.frombuffer(joined.buffers()[1], dtype=np.int32, count=len(joined) + 1, offset=joined.offset * 4)
    return joined.buffers()[2].to_pybytes()[offsets[0] : offsets[-1]]


def copy_arrow(cur: psycopg.Cursor, target: str, table: pa.Table, pg_types: Sequence[str]) -> int:
    """Binary COPY ``table`` into ``target`` (column names = the table's); returns rows copied."""
    columns = sql.SQL(", ").join(sql.Identifier(name) for name in table.column_names)
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(sql_identifier(target), columns)
    with cur.copy(statement) as copy:
        copy.write(HEADER)
        for start in range(0, table.num_rows, CHUNK_ROWS):
            copy.write(_encode_chunk(table.slice(start, CHUNK_ROWS), pg_types))
        copy.write(TRAILER)
    return table.num_rows


def _ident(name: str) -> sql.Composable:
    return sql.SQL(".").join(sql.Identifier(part) for part in name.split("."))


def sql_identifier(name: str) -> sql.Composable:
    """``schema.table`` as a quoted SQL identifier."""
    return sql.SQL(".").join(sql.Identifier(part) for part in name.split("."))
