"""Reading flow_raw: the binary COPY of its plain columns, decoded with numpy (no per-row Python).

``COPY (SELECT {READ_COLUMNS} ...) TO STDOUT (FORMAT BINARY)`` sends the columns as stored, with
no expression per row: PostgreSQL's cost is then the scan and one send function per value
(about half of what converting each address to a fixed 16 bytes in SQL cost). The rows vary in
width only by their addresses' families (an IPv4 ``inet`` is 8 bytes, IPv6 20), their NULLs and
their lists, and the reader knows each row's width: ``PQgetCopyData`` returns one row per call.

:func:`decode_rows` groups the rows by width. Within a group, the first row's field lengths give
a packed record type; the rows whose length fields all match it (in practice all of them: one
exporter template and one address family make one width) are converted column by column from
that record array, a block of rows at a time so each block stays in the CPU cache. The other
rows (lists, or a coincidence of equal widths) are decoded by walking their fields with gathers,
slower but exact. Rows come out in the order PostgreSQL sent them.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from ingest.addresses import V4_PREFIX_BYTES
from ingest.land.pgbinary import _FIXED, HEADER, KINDS, PG_EPOCH_US, TRAILER
from ingest.schema import AS_LIST, FLOW_COLUMNS, FLOW_SCHEMA

READ_COLUMNS = ", ".join(FLOW_COLUMNS)
# Decoded straight into the Arrow column's width (timestamps: int64 microseconds), so a slice in
# flight holds no int64 copy of its small columns.
NATIVE = {
    name: np.dtype(np.int64 if KINDS[name] == "timestamptz" else FLOW_SCHEMA.field(name).type.to_pandas_dtype())
    for name in FLOW_COLUMNS
    if KINDS[name] in _FIXED
}
BLOCK_ROWS = 8_192  # rows converted together: ~2 MB of record array, within a core's cache
_LENGTH = struct.Struct(">i")


class Columns:
    """Decoded values of some rows: per column native values (or a 16-byte address matrix), the
    field lengths (-1: NULL), and for list columns the offset of each field in the buffer."""

    def __init__(self, n: int):
        self.values: dict[str, np.ndarray] = {}
        self.lengths: dict[str, np.ndarray] = {}
        self.at: dict[str, np.ndarray] = {}
        self.n = n


def decode_rows(data: bytes | bytearray | memoryview, sizes: Sequence[int]) -> pa.Table:
    """The FLOW_SCHEMA table of a ``COPY (SELECT {READ_COLUMNS} ...) TO STDOUT (FORMAT BINARY)``
    whose messages (as ``PQgetCopyData`` returned them) had ``sizes`` bytes each."""
    raw = np.frombuffer(data, np.uint8)
    starts, widths = _row_bounds(data, sizes)
    if not len(starts):
        return FLOW_SCHEMA.empty_table()
    parts: list[tuple[np.ndarray, Columns]] = []
    walk: list[np.ndarray] = []
    if (widths == widths[0]).all():  # the usual slice: no sort needed to find its one width
        groups, inverse = widths[:1], None
    else:
        groups, inverse = np.unique(widths, return_inverse=True)
    for g, width in enumerate(groups):
        rows = np.arange(len(starts)) if len(groups) == 1 else np.flatnonzero(inverse == g)
        fast, slow = _decode_group(raw, starts[rows], int(width))
        if fast is not None:
            parts.append((rows[fast[0]], fast[1]))
        walk.append(rows[slow])
    slow_rows = np.concatenate(walk)
    if len(slow_rows):
        parts.append((slow_rows, _walk(raw, starts[slow_rows], widths[slow_rows])))
    return _table(raw, parts, len(starts))


def _row_bounds(data: bytes | bytearray | memoryview, sizes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Start offset and width of each row: the header comes with the first message, the trailer
    (-1 as int16) is the last one's end."""
    if data[: len(HEADER)] != HEADER or data[len(data) - len(TRAILER) :] != TRAILER:
        raise ValueError("not a binary COPY of flow_raw: header or trailer missing")
    widths = np.array(sizes, np.int64)
    if widths.sum() != len(data):
        raise ValueError(f"binary COPY messages of {widths.sum()} bytes in a buffer of {len(data)}")
    widths[0] -= len(HEADER)
    widths[-1] -= len(TRAILER)
    widths = widths[widths > 0]
    starts = len(HEADER) + np.cumsum(widths) - widths
    return starts, widths


def _first_row_lengths(raw: np.ndarray, start: int) -> list[int]:
    """The field lengths of the row at ``start`` (a short walk in Python: one row, 23 fields)."""
    view = memoryview(raw)
    if struct.unpack_from(">h", view, start)[0] != len(FLOW_COLUMNS):
        raise ValueError(f"flow_raw row of {struct.unpack_from('>h', view, start)[0]} fields")
    lengths, pos = [], start + 2
    for _name in FLOW_COLUMNS:
        (size,) = _LENGTH.unpack_from(view, pos)
        lengths.append(size)
        pos += 4 + max(size, 0)
    return lengths


def _record_type(lengths: list[int]) -> np.dtype | None:
    """The packed record of rows with these field lengths, or None when a list is not NULL."""
    fields: list[tuple] = [("count", ">i2")]
    for name, size in zip(FLOW_COLUMNS, lengths, strict=True):
        fields.append((f"len_{name}", ">i4"))
        kind = KINDS[name]
        if size < 0:
            continue
        if kind == "int8[]":
            return None
        if kind == "inet":
            if size not in (8, 20):
                raise ValueError(f"flow_raw {name}: an inet value of {size} bytes")
            fields.append((name, "u1", (size,)))
        else:
            if size != np.dtype(_FIXED[kind]).itemsize:
                raise ValueError(f"flow_raw {name}: a {kind} value of {size} bytes")
            fields.append((name, _FIXED[kind]))
    return np.dtype(fields)


def _decode_group(raw: np.ndarray, starts: np.ndarray, width: int) -> tuple:
    """((positions, Columns) of the rows decoded as records, or None; positions left to walk)."""
    lengths = _first_row_lengths(raw, int(starts[0]))
    record = _record_type(lengths)
    if record is None or record.itemsize != width:
        return None, np.arange(len(starts))
    if len(starts) * width == len(raw) - len(HEADER) - len(TRAILER):  # the whole buffer: no gather
        rows = raw[len(HEADER) : len(raw) - len(TRAILER)].view(record)
    else:
        rows = _rows(raw, starts, width).view(record).reshape(-1)
    out, same = _convert(rows, lengths)
    if same.all():
        return (np.arange(len(starts)), out), np.zeros(0, np.int64)
    fast = np.flatnonzero(same)  # rare: rows of this width but another layout
    return (fast, _convert(rows[fast], lengths)[0]), np.flatnonzero(~same)


def _convert(rows: np.ndarray, lengths: list[int]) -> tuple[Columns, np.ndarray]:
    """Native values of a record array of one layout, converted ``BLOCK_ROWS`` rows at a time, and
    which rows have that layout (every length field as in ``lengths``: the others' values are junk)."""
    n = len(rows)
    out = Columns(n)
    targets = {}
    for name, size in zip(FLOW_COLUMNS, lengths, strict=True):
        out.lengths[name] = np.broadcast_to(np.int32(size), n)  # one value for the whole group
        kind = KINDS[name]
        if kind == "int8[]":
            out.at[name] = np.broadcast_to(np.int64(0), n)
        elif kind == "inet":
            out.values[name] = np.zeros((n, 16), np.uint8) if size < 0 else np.empty((n, 16), np.uint8)
            if size == 8:
                out.values[name][:, :12] = V4_PREFIX_BYTES
                targets[name] = out.values[name][:, 12:]
            elif size == 20:
                targets[name] = out.values[name]
        else:
            out.values[name] = np.zeros(n, NATIVE[name]) if size < 0 else np.empty(n, NATIVE[name])
            if size >= 0:
                targets[name] = out.values[name]
    expected = [(f"len_{name}", size) for name, size in zip(FLOW_COLUMNS, lengths, strict=True)]
    same = np.empty(n, bool)
    for lo in range(0, n, BLOCK_ROWS):
        block = rows[lo : lo + BLOCK_ROWS]
        ok = block["count"] == len(FLOW_COLUMNS)
        for field, size in expected:
            ok &= block[field] == size
        same[lo : lo + BLOCK_ROWS] = ok
        for name, target in targets.items():
            field = block[name]
            if field.ndim == 2:
                target[lo : lo + BLOCK_ROWS] = field[:, 4:]
                continue
            target[lo : lo + BLOCK_ROWS] = field
            if ((target[lo : lo + BLOCK_ROWS] != field) & ok).any():  # PostgreSQL's signed int, Arrow's unsigned
                raise ValueError(f"flow_raw {name}: a value outside {FLOW_SCHEMA.field(name).type}")
    return out, same


def _walk(raw: np.ndarray, starts: np.ndarray, widths: np.ndarray) -> Columns:
    """Rows of any layout: each field's length is gathered from every row, then its value."""
    n = len(starts)
    out = Columns(n)
    pos = starts + 2
    for name in FLOW_COLUMNS:
        size = _rows(raw, pos, 4).view(">i4").reshape(-1).astype(np.int32)
        out.lengths[name] = size
        kind = KINDS[name]
        if kind == "int8[]":
            out.at[name] = pos + 4
        elif kind == "inet":
            out.values[name] = _walk_addresses(raw, pos, size)
        else:
            value = _rows(raw, np.where(size >= 0, pos + 4, 0), np.dtype(_FIXED[kind]).itemsize)
            value = np.where(size >= 0, value.view(_FIXED[kind]).reshape(-1), 0)
            out.values[name] = value.astype(NATIVE[name])
            if (out.values[name] != value).any():
                raise ValueError(f"flow_raw {name}: a value outside {FLOW_SCHEMA.field(name).type}")
        pos = pos + 4 + np.maximum(size, 0)
    if (pos != starts + widths).any():
        raise ValueError("flow_raw rows whose fields do not fill them")
    return out


def _walk_addresses(raw: np.ndarray, pos: np.ndarray, size: np.ndarray) -> np.ndarray:
    if ((size != 8) & (size != 20) & (size != -1)).any():
        raise ValueError("flow_raw: an inet value that is neither IPv4 nor IPv6")
    matrix = np.zeros((len(pos), 16), np.uint8)
    v4, v6 = size == 8, size == 20
    matrix[v4, :12] = V4_PREFIX_BYTES
    matrix[v4, 12:] = _rows(raw, pos[v4] + 8, 4)
    matrix[v6] = _rows(raw, pos[v6] + 8, 16)
    return matrix


def _table(raw: np.ndarray, parts: list[tuple[np.ndarray, Columns]], n: int) -> pa.Table:
    """The parts' rows in their original order as a FLOW_SCHEMA table."""
    order = None
    positions = np.concatenate([p for p, _ in parts])
    if len(parts) > 1 or (positions != np.arange(n)).any():
        order = np.argsort(positions, kind="stable")

    def column(kind: str, name: str) -> np.ndarray:
        if order is None:
            return getattr(parts[0][1], kind)[name]
        merged = np.concatenate([getattr(c, kind)[name] for _, c in parts])
        return merged if order is None else merged[order]

    arrays = []
    for name in FLOW_COLUMNS:
        field = FLOW_SCHEMA.field(name)
        size = column("lengths", name)
        if KINDS[name] == "int8[]":
            arrays.append(_lists(raw, column("at", name), size, field, n))
            continue
        null = size < 0
        if null.any() and not field.nullable:
            raise ValueError(f"flow_raw {name}: NULL in a NOT NULL column")
        if KINDS[name] == "inet":
            bitmap = pa.py_buffer(np.packbits(~null, bitorder="little")) if null.any() else None
            arrays.append(
                pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), n, [bitmap, pa.py_buffer(column("values", name))])
            )
            continue
        values = column("values", name)
        if KINDS[name] == "timestamptz":
            values += PG_EPOCH_US  # the decoded array is ours: shift it in place
        if KINDS[name] == "timestamptz":
            arrays.append(pa.array(values, pa.int64(), mask=null if null.any() else None).cast(field.type))
        else:
            arrays.append(pa.array(values, field.type, mask=null if null.any() else None))
    return pa.Table.from_arrays(arrays, schema=FLOW_SCHEMA)


def _lists(raw: np.ndarray, at: np.ndarray, size: np.ndarray, field: pa.Field, n: int) -> pa.Array:
    if (size < 0).all():
        return pa.nulls(n, field.type)
    return _decode_lists(raw, at, size.astype(np.int64))


def _rows(raw: np.ndarray, at: np.ndarray, width: int) -> np.ndarray:
    """``(len(at), width)`` bytes of ``raw`` from each offset (one contiguous copy)."""
    if not len(at):
        return np.zeros((0, width), np.uint8)
    return np.lib.stride_tricks.sliding_window_view(raw, width)[at]


def _decode_lists(raw: np.ndarray, at: np.ndarray, size: np.ndarray) -> pa.Array:
    """int8[] fields (one dimension, no NULL elements: what ``encode_copy`` writes) at ``at``."""
    valid = size >= 0
    # ndim, flags, element type; an empty list (ndim 0) ends there, so its length is read only
    # where there is one: the last field of the last row may be an empty list before the trailer
    ndim = _rows(raw, np.where(valid, at, 0), 4).view(">i4").reshape(-1)
    if ((ndim > 1) & valid).any():
        raise ValueError("flow_raw list column with more than one dimension")
    listed = valid & (ndim == 1)
    count = np.zeros(len(at), np.int64)
    count[listed] = _rows(raw, at[listed] + 12, 4).view(">i4").reshape(-1)
    offsets = np.zeros(len(at) + 1, np.int32)
    np.cumsum(count, out=offsets[1:])
    index = np.arange(int(count.sum())) - np.repeat(offsets[:-1], count)
    values = _rows(raw, np.repeat(at + 24, count) + 12 * index, 8).view(">i8").reshape(-1).astype(np.uint32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values), type=AS_LIST, mask=pa.array(~valid))
