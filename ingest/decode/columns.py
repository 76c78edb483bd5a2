"""From decoded template roles to ``FLOW_SCHEMA`` columns, vectorized over a group of records.

Input: ``values`` (role name -> numpy array, one entry per record; IPv4 addresses as raw ``=u4``
words, IPv6 as ``V16``) and ``ctx`` (per-record copies of the packet context: receive time, exporter, domain,
version, header times, resolved sampling rate). Output: ``Columns``, a dict of column name ->
``(array, valid mask or None)`` that ``concat`` joins and ``to_batch`` turns into Arrow.

Cisco ASA NSEL rule (firewall event, IE 233 or v9 field 40005): a connection is reported when it
is created (event 1), possibly updated (5) and when it is torn down (2). Create events carry no
traffic yet, and the teardown (or update) carries the counters, so create events that carry no
bytes and no packets are *dropped* (counted as ``nsel_create_skipped``): keeping them would count
every connection twice. A create event that does carry traffic (some exporters report the first
packets' delta there; the later events then carry only what follows) is kept. Denied
(3) and alert (4) events are kept as flows with whatever counters they carry. Forward bytes and
packets are octetDeltaCount/packetDeltaCount when present, else the initiator counters (IE 231/298:
ASA's ``NF_F_FWD_FLOW_DELTA_BYTES``, deltas since the previous event of the connection, so updates
and the teardown add up without overlap), else the totals (IE 85/86). Responder counters (IE
232/299) become a reverse-direction record (addresses, ports, interfaces and AS swapped), the same
treatment as RFC 5103 biflow counters (PEN 29305), never added to the forward count.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from ingest.addresses import V4_PREFIX
from ingest.decode.fields import ROLE_PRIORITY
from ingest.decode.headers import Headers
from ingest.decode.timestamps import side
from ingest.schema import AS_LIST, FLOW_SCHEMA, ROUTING_COLUMNS

Column = tuple[np.ndarray, np.ndarray | None]  # values, validity (None: all valid)
Columns = dict[str, Column]
NSEL_CREATE = 1
MAX_TIME_US = 7_258_118_400_000_000  # 2200-01-01: later (or negative) times are garbage -> null
TARGET = {f.name: np.dtype(f.type.to_pandas_dtype()) for f in FLOW_SCHEMA if pa.types.is_integer(f.type)}
_NUMPY_TYPE = TARGET | {f.name: np.dtype(np.int64) for f in FLOW_SCHEMA if pa.types.is_timestamp(f.type)}
_NULLABLE = {"flow_start", "flow_end", "input_if", "output_if", "src_as", "dst_as", "direction", "next_hop"}
_FIELDS = [(f.name, f.type, _NUMPY_TYPE.get(f.name), f.name in _NULLABLE) for f in FLOW_SCHEMA]
_NAMES = FLOW_SCHEMA.names
CONSTANT_BYTES = 32 << 20  # memory the shared constant columns may hold (beyond: all dropped, rebuilt)
_constants: dict[tuple[Any, Any], np.ndarray] = {}
_constant_bytes = 0


def constant(value: int | bytes, dtype: Any, n: int) -> np.ndarray:
    """A read-only array of ``n`` times ``value`` (an int, or the raw bytes of one item), shared
    between calls.

    Columns that repeat one value (an exporter, the version, a sampling rate, an absent field's
    zeros and its all-null validity) are slices of one cached array per value: writing a fresh
    one every call costs as much memory bandwidth as decoding a real column. Read-only, so
    nothing can change it behind the batches that share it."""
    global _constant_bytes
    cached = _constants.get((value, dtype))
    if cached is not None and len(cached) >= n:
        return cached[:n]
    dtype_ = np.dtype(dtype)
    raw = value if isinstance(value, bytes) else np.array(value, dtype_).tobytes()
    size = 1 << max(12, (n - 1).bit_length())  # a power of two: a few sizes per value as calls vary
    if size * dtype_.itemsize > CONSTANT_BYTES // 8:  # too big to keep: a private array
        return np.frombuffer(raw * n, dtype_)
    if cached is not None:  # outgrown: replaced below
        _constant_bytes -= cached.nbytes
    if _constant_bytes + size * dtype_.itemsize > CONSTANT_BYTES:
        _constants.clear()
        _constant_bytes = 0
    cached = _constants[(value, dtype)] = np.frombuffer(raw * size, dtype_)  # from bytes: read-only
    _constant_bytes += cached.nbytes
    return cached[:n]


def constant_bytes() -> int:
    """Memory held by the shared constant columns (at most ``CONSTANT_BYTES``)."""
    return _constant_bytes


def widen(values: np.ndarray) -> np.ndarray:
    """Big-endian field -> native integers (1-8 byte widths: reduced-size encoding too)."""
    if values.ndim == 1:
        return values.astype(values.dtype.newbyteorder("="), copy=False)
    out = np.zeros(len(values), np.uint64)
    for i in range(values.shape[1]):
        out = (out << np.uint64(8)) | values[:, i].astype(np.uint64)
    return out


_MAPPED_ZERO = V4_PREFIX + bytes(4)  # ::ffff:0.0.0.0


def mapped(addr4: np.ndarray) -> np.ndarray:
    """Raw IPv4 words (``=u4`` holding the 4 network-order bytes) -> ``V16`` IPv4-mapped IPv6."""
    out = constant(_MAPPED_ZERO, "V16", len(addr4)).copy().view("=u4").reshape(-1, 4)  # prefilled (n, 4)
    # An unaligned source (records of 46 or 58 bytes) takes numpy's slow path in this strided
    # assignment: an aligned copy first is three times faster.
    out[:, 3] = addr4 if addr4.flags.aligned else addr4.copy()
    return out.view("V16").reshape(-1)


def as_bytes(addresses: np.ndarray) -> np.ndarray:
    """``V16`` addresses -> contiguous ``(n, 16) uint8``."""
    return np.ascontiguousarray(addresses).view(np.uint8).reshape(-1, 16)


def _address(values: dict[str, np.ndarray], which: str, n: int) -> np.ndarray:
    v4, v6 = values.get(f"{which}_addr4"), values.get(f"{which}_addr6")
    if v4 is None and v6 is None:
        return np.zeros(n, "V16")
    if v4 is None:
        return np.ascontiguousarray(v6)
    out = mapped(v4)
    if v6 is not None:  # templates with both: the family actually filled in wins
        use6 = (v4 == 0) & as_bytes(v6).any(axis=1)
        out[use6] = v6[use6]
    return out


def _first(values: dict[str, np.ndarray], role: str, n: int) -> np.ndarray | None:
    for candidate in ROLE_PRIORITY.get(role, (role,)):
        if (v := values.get(candidate)) is not None:
            return widen(v)
    return None


def _uint(values: dict[str, np.ndarray], role: str, n: int) -> np.ndarray:
    """The role's column converted once, straight to its ``FLOW_SCHEMA`` integer type."""
    dtype = TARGET[role]
    for candidate in ROLE_PRIORITY.get(role, (role,)):
        if (v := values.get(candidate)) is not None:
            return v.astype(dtype)
    return np.zeros(n, dtype)


def forward(values: dict[str, np.ndarray], ctx: Any, sections: Headers | None) -> Columns:
    """Forward-direction flow columns for ``ctx.n`` records (before NSEL/biflow handling).

    ``ctx`` maps context names (``recv``, ``exporter``, ``domain``, ``version``, ``secs``,
    ``uptime``, ``has_uptime``, ...) to per-record arrays and has ``n`` and ``get``."""
    n = ctx.n
    values = {k: (widen(v) if v.ndim == 2 else v) for k, v in values.items()}
    cols: Columns = {
        "receive_time": (ctx["recv"], None),
        "exporter": (ctx["exporter"], None),
        "observation_domain": (ctx["domain"], None),
        "flow_version": (ctx["version"], None),
        "src_addr": (_address(values, "src", n), None),
        "dst_addr": (_address(values, "dst", n), None),
        "src_port": (_uint(values, "src_port", n), None),
        "dst_port": (_uint(values, "dst_port", n), None),
        "protocol": (_uint(values, "protocol", n), None),
        "tcp_flags": (_uint(values, "tcp_flags", n), None),
        "bytes": (_uint(values, "bytes", n), None),
        "packets": (_uint(values, "packets", n), None),
    }
    start, has_start = side(values, "start", ctx)
    end, has_end = side(values, "end", ctx)
    if (duration := values.get("duration_ms")) is not None and has_end is not None:
        derived = ~has_end if has_start is None else has_start & ~has_end
        end = np.where(derived, start + duration.astype(np.int64) * 1000, end)
        has_end = has_end | derived
    cols["flow_start"] = (start, valid_times(start, has_start))
    cols["flow_end"] = (end, valid_times(end, has_end))
    for name in ("input_if", "output_if", "src_as", "dst_as", "direction"):
        v = values.get(name)
        cols[name] = (v.astype(TARGET[name]), None) if v is not None else absent(name, n)
    if sections is not None:
        _apply_sections(cols, values, sections)
    return cols


def absent(name: str, n: int) -> Column:
    """A nullable column no record has: shared zeros, all null."""
    return constant(0, TARGET[name], n), constant(0, np.bool_, n)


def _null_column(name: str, n: int) -> Column:
    """A routing column (``ingest.schema.ROUTING_COLUMNS``) a decoder left out: all null, built
    from shared zeros (an Arrow list of ``n`` nulls: zero offsets and no values)."""
    if name not in ROUTING_COLUMNS:
        raise KeyError(name)
    if name == "next_hop":
        return constant(bytes(16), "V16", n), constant(0, np.bool_, n)
    if not _null_lists or len(_null_lists[0]) < n:  # built once per size class, then sliced
        size = 1 << max(12, (n - 1).bit_length())
        offsets = pa.py_buffer(constant(0, np.int32, size + 1))
        bitmap = pa.py_buffer(constant(0, np.uint8, (size + 7) // 8))
        values = pa.array([], pa.uint32())
        _null_lists[:] = [pa.Array.from_buffers(AS_LIST, size, [bitmap, offsets], null_count=size, children=[values])]
    # A slice from 0: every reader, even one of the raw buffers, sees the first ``n`` entries.
    return _null_lists[0].slice(0, n), None


# The all-null AS list column (``_null_column``): building it costs more than a call's sFlow
# columns' Arrow wrapping (measured), so one is kept, of the largest size met (a power of two).
_null_lists: list[pa.Array] = []


def valid_times(us: np.ndarray, present: np.ndarray | None) -> np.ndarray | None:
    """Present and within 1970-2200 (None: every record; checked with min/max first, the common case)."""
    if present is None and (not len(us) or (int(us.min()) >= 0 and int(us.max()) < MAX_TIME_US)):
        return None
    valid = (us >= 0) & (us < MAX_TIME_US)
    return valid if present is None else valid & present


def _apply_sections(cols: Columns, values: dict[str, np.ndarray], parsed: Headers) -> None:
    """Fill addresses, ports, protocol and flags from parsed packet sections where the record
    has no addresses of its own; a record without counters stands for one sampled packet of
    its IP length (the layer-3 bytes every other flow counts; the frame size only when the
    section holds no IP header)."""
    found = parsed.is_ip | (parsed.src_port > 0) | (parsed.dst_port > 0)
    fill = found & ~as_bytes(cols["src_addr"][0]).any(axis=1)
    if fill.any():
        for name in ("src_port", "dst_port", "protocol", "tcp_flags"):
            cols[name] = (np.where(fill, getattr(parsed, name).astype(TARGET[name]), cols[name][0]), None)
        with_ip = fill & parsed.is_ip
        for name, value in (("src_addr", parsed.src), ("dst_addr", parsed.dst)):
            column = cols[name][0].copy()
            column[with_ip] = value[with_ip]
            cols[name] = (column, None)
    if "packets" not in values and "total_packets" not in values:
        cols["packets"] = (np.where(found, 1, cols["packets"][0]).astype(np.uint64), None)
    if "bytes" not in values and "total_bytes" not in values:
        frame_size = values.get("frame_size")
        size = frame_size.astype(np.int64) if frame_size is not None else 0
        cols["bytes"] = (np.where(parsed.ip_length > 0, parsed.ip_length, size).astype(np.uint64), None)


def reverse(cols: Columns, values: dict[str, np.ndarray]) -> tuple[Columns, np.ndarray] | None:
    """Reverse-direction records (RFC 5103 PEN 29305 counters, or NSEL responder counters)."""
    n = len(cols["bytes"][0])
    rev_bytes = _first(values, "rev_bytes", n)
    if rev_bytes is None:
        rev_bytes = _first(values, "rev_total_bytes", n)
    rev_packets = _first(values, "rev_packets", n)
    if rev_packets is None:
        rev_packets = _first(values, "rev_total_packets", n)
    if rev_bytes is None and rev_packets is None:
        rev_bytes, rev_packets = _first(values, "responder_bytes", n), _first(values, "responder_packets", n)
    if rev_bytes is None and rev_packets is None:
        return None
    rev_bytes = rev_bytes if rev_bytes is not None else np.zeros(n, np.uint64)
    rev_packets = rev_packets if rev_packets is not None else np.zeros(n, np.uint64)
    keep = (rev_bytes > 0) | (rev_packets > 0)
    if not keep.any():
        return None
    swap = {"src_addr": "dst_addr", "dst_addr": "src_addr", "src_port": "dst_port", "dst_port": "src_port",
            "input_if": "output_if", "output_if": "input_if", "src_as": "dst_as", "dst_as": "src_as"}  # fmt: skip
    out: Columns = {}
    for name, (array, valid) in cols.items():
        array, valid = cols[swap.get(name, name)]
        out[name] = (array[keep], None if valid is None else valid[keep])
    rev_flags = values.get("rev_tcp_flags")
    out["tcp_flags"] = (widen(rev_flags)[keep] if rev_flags is not None else np.zeros(int(keep.sum()), np.uint64), None)
    out["bytes"] = (rev_bytes[keep], None)
    out["packets"] = (rev_packets[keep], None)
    return out, keep


def nsel_keep(values: dict[str, np.ndarray], cols: Columns) -> np.ndarray | None:
    """Mask of records to keep under the NSEL rule above (None: not a firewall-event template)."""
    event = values.get("fw_event")
    if event is None:
        return None
    empty = (cols["bytes"][0] == 0) & (cols["packets"][0] == 0)
    return ~((widen(event) == NSEL_CREATE) & empty)


def select(cols: Columns, keep: np.ndarray) -> Columns:
    return {k: (_take(a, keep), None if m is None else m[keep]) for k, (a, m) in cols.items()}


def _take(values: Any, keep: np.ndarray) -> Any:
    """Rows ``keep`` (a mask) of a numpy column or of an Arrow one (the list columns)."""
    return values.filter(pa.array(keep)) if isinstance(values, pa.Array) else values[keep]


def pick(rate: np.ndarray | int, keep: np.ndarray) -> np.ndarray | int:
    """The rates of the kept records (a rate shared by all records stays an int)."""
    return rate if isinstance(rate, int) else rate[keep]


def scale(cols: Columns, rate: np.ndarray | int) -> None:
    """Multiply bytes and packets by the sampling rate (per record, or an int for all) and record it."""
    if isinstance(rate, int):
        factor = np.uint64(rate) if rate != 1 else None
        cols["sampling_rate"] = (constant(rate, np.uint32, len(cols["bytes"][0])), None)
    else:
        factor = rate.astype(np.uint64)
        cols["sampling_rate"] = (rate, None)
    if factor is not None:
        cols["bytes"] = (cols["bytes"][0].astype(np.uint64) * factor, None)
        cols["packets"] = (cols["packets"][0].astype(np.uint64) * factor, None)


def concat(parts: list[Columns]) -> Columns:
    """Join column groups (the validity mask is materialised only when some part has one)."""
    if len(parts) == 1:
        return parts[0]
    out: Columns = {}
    sizes = [len(p["bytes"][0]) for p in parts]
    for name in _NAMES:
        if all(name not in p for p in parts):
            continue  # a routing column no part has: null in ``to_batch``
        given = [p.get(name) or _null_column(name, size) for p, size in zip(parts, sizes, strict=True)]
        arrays = [values for values, _ in given]
        masks = [valid for _, valid in given]
        if isinstance(arrays[0], pa.Array):
            out[name] = (pa.concat_arrays(arrays), None)
            continue
        mask = None
        if any(m is not None for m in masks):
            filled = [m if m is not None else np.ones(len(a), bool) for a, m in zip(arrays, masks, strict=True)]
            mask = np.concatenate(filled)
        out[name] = (np.concatenate(arrays), mask)
    return out


def to_batch(cols: Columns) -> pa.RecordBatch:
    """Arrow record batch with exactly ``FLOW_SCHEMA`` (types cast, invalid values turned to nulls).

    Arrays are built from their buffers (no conversion pass in Arrow): the numpy data as is,
    the validity as a bitmap packed from the mask, only for nullable columns with a null."""
    arrays = []
    n = len(cols["bytes"][0])
    for name, type_, numpy_type, nullable in _FIELDS:
        values, valid = cols.get(name) or _null_column(name, n)
        if isinstance(values, pa.Array):  # a list column, built by its decoder
            arrays.append(values)
            continue
        if numpy_type is not None and values.dtype != numpy_type:
            values = values.astype(numpy_type)
        if not values.flags.c_contiguous:
            values = np.ascontiguousarray(values)
        bitmap = None
        if valid is not None and nullable:
            if not valid.any():
                bitmap = pa.py_buffer(constant(0, np.uint8, (len(valid) + 7) // 8))
            elif not valid.all():
                bitmap = pa.py_buffer(np.packbits(valid, bitorder="little"))
        arrays.append(pa.Array.from_buffers(type_, len(values), [bitmap, pa.py_buffer(values)]))
    return pa.RecordBatch.from_arrays(arrays, schema=FLOW_SCHEMA)
