"""Pure packet builders: NetFlow v5, NetFlow v9 and IPFIX export packets from flow columns.

The traffic generator, the decoder tests and the decode benchmark all build packets here, so
what the decoder reads is exactly what these functions write. Nothing here does I/O.

Flows come as a ``pa.Table`` / ``pa.RecordBatch`` with (a subset of) ``ingest.schema.FLOW_SCHEMA``
columns, or a dict of numpy arrays with the same names:

- ``src_addr`` / ``dst_addr``: 16-byte addresses (IPv4-mapped IPv6 for IPv4), as an Arrow
  ``binary(16)`` column, a numpy ``(n, 16) uint8`` array or an ``S16`` array;
- ``flow_start`` / ``flow_end``: microseconds since the Unix epoch (int64, Arrow timestamp or
  numpy ``datetime64``);
- ``src_port``, ``dst_port``, ``protocol``, ``tcp_flags``, ``bytes``, ``packets``, ``input_if``,
  ``output_if``, ``src_as``, ``dst_as``, ``direction``: integers (missing columns encode as 0).

Any template field can also be fed directly with a column named ``ie<N>`` (IANA IE N) or
``ie<PEN>.<N>`` (enterprise field): fixed-length fields take integers (or ``(n, length) uint8``
arrays), variable-length fields (length 65535) take a list of ``bytes``. That is how tests put
sampler ids, NSEL events, RFC 5103 reverse counters or IE 315 frame sections into records.

Example::

    from ingest.tools.encode import encode_v5, V9Encoder, IpfixEncoder
    packets = encode_v5(flows, sys_uptime_ms=3_600_000, unix_secs=1_700_000_000, seq=0)
    v9 = V9Encoder(template_id=256, domain=1)  # IPv4 template by default; domain = v9 source id
    packets = v9.packets(flows, export_time=1_700_000_000)  # template in packet 1, then every 20
    ipfix = IpfixEncoder(template_id=300, fields=IPFIX_IPV6_FIELDS, domain=7)
    packets = ipfix.packets(flows, export_time=1_700_000_000)

Records are encoded vectorized (one ``(n, record_length)`` byte matrix per call), so building
millions of flows per second is possible; only variable-length templates loop per record.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ingest.addresses import v4_mapped
from ingest.decode.fields import (
    IE,
    IPFIX_IPV4_FIELDS,
    IPFIX_IPV6_FIELDS,
    V9_IPV4_FIELDS,
    V9_IPV6_FIELDS,
)

__all__ = [
    "IPFIX_IPV4_FIELDS",
    "IPFIX_IPV6_FIELDS",
    "V9_IPV4_FIELDS",
    "V9_IPV6_FIELDS",
    "VARLEN",
    "IpfixEncoder",
    "V9Encoder",
    "encode_v5",
    "flow_columns",
]

VARLEN = 0xFFFF  # template length meaning "variable length" (IPFIX; some v9 exporters too)
NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900-01-01 (NTP era 0) to 1970-01-01
V5_RECORD = 48
V5_HEADER = 24
MAX_PAYLOAD = 1400  # stay below a 1500-byte MTU with IP/UDP headers

Field = tuple[int, int] | tuple[int, int, int]  # (IE, length) or (IE, length, enterprise number)
Flows = pa.Table | pa.RecordBatch | Mapping[str, Any]


# --- input normalisation ---------------------------------------------------------------------
def flow_columns(flows: Flows) -> dict[str, Any]:
    """Normalise ``flows`` to a dict of numpy arrays (addresses ``(n, 16) uint8``, times int64 µs)."""
    if isinstance(flows, pa.RecordBatch):
        flows = pa.Table.from_batches([flows])
    if isinstance(flows, pa.Table):
        flows = {name: flows.column(name).combine_chunks() for name in flows.column_names}
    out: dict[str, Any] = {}
    for name, col in flows.items():
        if isinstance(col, pa.Array | pa.ChunkedArray) and pa.types.is_list(col.type):
            continue  # the sFlow routing lists (as_path, communities): no NetFlow/IPFIX field carries them
        out[name] = _to_numpy(name, col)
    return out


def _to_numpy(name: str, col: Any) -> Any:
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if isinstance(col, pa.Array):
        if pa.types.is_fixed_size_binary(col.type):
            width = col.type.byte_width
            data = np.frombuffer(col.buffers()[1], np.uint8)
            return data[col.offset * width : (col.offset + len(col)) * width].reshape(-1, width)
        if pa.types.is_timestamp(col.type):
            col = col.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
        if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
            return col.to_pylist()
        if col.null_count:
            col = col.fill_null(0)
        return col.to_numpy(zero_copy_only=False)
    if isinstance(col, list) and col and isinstance(col[0], bytes | bytearray):
        return col
    arr = np.asarray(col)
    if arr.dtype.kind == "S":
        width = arr.dtype.itemsize
        return np.frombuffer(arr.tobytes(), np.uint8).reshape(-1, width)
    if arr.dtype.kind == "M":
        return arr.astype("datetime64[us]").astype(np.int64)
    return arr


def _row_count(cols: Mapping[str, Any]) -> int:
    for value in cols.values():
        return len(value)
    return 0


# --- record matrix ---------------------------------------------------------------------------
def _put_uint(mat: np.ndarray, offset: int, width: int, values: np.ndarray) -> None:
    """Write ``values`` big-endian into ``width`` bytes at ``offset`` of each matrix row."""
    v = np.asarray(values).astype(np.uint64, copy=False)
    for i in range(width):
        shift = np.uint64(8 * (width - 1 - i))
        mat[:, offset + i] = ((v >> shift) & np.uint64(0xFF)).astype(np.uint8)


def _ntp(us: np.ndarray, nanos: bool) -> np.ndarray:
    """Unix µs -> 64-bit NTP timestamps (RFC 7011 dateTimeMicroseconds/Nanoseconds)."""
    us = np.asarray(us, dtype=np.int64)
    secs = (us // 1_000_000 + NTP_EPOCH_OFFSET).astype(np.uint64)
    frac_us = (us % 1_000_000).astype(np.uint64)
    frac = (frac_us << np.uint64(32)) // np.uint64(1_000_000)
    if not nanos:
        frac &= np.uint64(0xFFFFF800)  # microsecond IEs leave the low 11 bits zero (RFC 7011 §6.1.9)
    return (secs << np.uint64(32)) | frac


class _Clock:
    """What a record's time fields are relative to: the header export time and exporter boot."""

    def __init__(self, export_ms: int, boot_ms: int) -> None:
        self.export_ms = export_ms
        self.boot_ms = boot_ms

    @property
    def sys_uptime(self) -> int:
        return (self.export_ms - self.boot_ms) & 0xFFFFFFFF

    def uptime(self, us: np.ndarray) -> np.ndarray:
        ms = np.asarray(us, dtype=np.int64) // 1000
        return (ms - self.boot_ms) & 0xFFFFFFFF


def _field_values(ie: int, length: int, pen: int, cols: Mapping[str, Any], n: int, clock: _Clock) -> Any:
    """The column feeding one template field (see module docstring for the ``ie<N>`` override)."""
    key = f"ie{pen}.{ie}" if pen else f"ie{ie}"
    if key in cols:
        return cols[key]
    if pen:
        return np.zeros(n, np.uint64)
    role = IE.get(ie, ("", ""))[0]
    start, end = cols.get("flow_start"), cols.get("flow_end")
    if role in ("src_addr4", "src_addr6", "dst_addr4", "dst_addr6"):
        addr = cols[role[:3] + "_addr"]
        return addr[:, 12:16] if role.endswith("4") else addr
    timed = {
        "start_uptime": (start, clock.uptime),
        "end_uptime": (end, clock.uptime),
        "start_s": (start, lambda t: t // 1_000_000),
        "end_s": (end, lambda t: t // 1_000_000),
        "start_ms": (start, lambda t: t // 1000),
        "end_ms": (end, lambda t: t // 1000),
        "start_us": (start, lambda t: _ntp(t, False)),
        "end_us": (end, lambda t: _ntp(t, False)),
        "start_ns": (start, lambda t: _ntp(t, True)),
        "end_ns": (end, lambda t: _ntp(t, True)),
    }
    if role in timed:
        times, convert = timed[role]
        return convert(np.asarray(times, dtype=np.int64)) if times is not None else np.zeros(n, np.uint64)
    aliases = {
        "total_bytes": "bytes",
        "initiator_bytes": "bytes",
        "total_packets": "packets",
        "initiator_packets": "packets",
        "udp_src_port": "src_port",
        "tcp_src_port": "src_port",
        "udp_dst_port": "dst_port",
        "tcp_dst_port": "dst_port",
    }
    column = aliases.get(role, role)
    return cols.get(column, np.zeros(n, np.uint64))


def _record_matrix(fields: Sequence[Field], cols: Mapping[str, Any], n: int, clock: _Clock) -> np.ndarray:
    """All fixed-length fields of ``n`` records as one ``(n, record_length)`` byte matrix."""
    widths = [f[1] for f in fields if f[1] != VARLEN]
    mat = np.zeros((n, sum(widths)), np.uint8)
    offset = 0
    for f in fields:
        ie, length, pen = f[0], f[1], (f[2] if len(f) > 2 else 0)
        if length == VARLEN:
            continue
        values = _field_values(ie, length, pen, cols, n, clock)
        if isinstance(values, np.ndarray) and values.ndim == 2:
            width = min(length, values.shape[1])
            mat[:, offset : offset + width] = values[:, :width]
        elif length:
            _put_uint(mat, offset, length, values)
        offset += length
    return mat


def _varlen(value: bytes) -> bytes:
    if len(value) < 255:
        return bytes([len(value)]) + value
    return b"\xff" + struct.pack("!H", len(value)) + value


def _records(fields: Sequence[Field], cols: Mapping[str, Any], n: int, clock: _Clock) -> list[bytes]:
    """Encoded records, one ``bytes`` each (variable-length fields interleaved in template order)."""
    mat = _record_matrix(fields, cols, n, clock)
    if all(f[1] != VARLEN for f in fields):
        flat = mat.tobytes()
        width = mat.shape[1]
        return [flat[i * width : (i + 1) * width] for i in range(n)]
    varlen_values = {}
    for i, f in enumerate(fields):
        if f[1] == VARLEN:
            values = _field_values(f[0], f[1], f[2] if len(f) > 2 else 0, cols, n, clock)
            varlen_values[i] = values if isinstance(values, list) else [b""] * n
    records = []
    for row in range(n):
        parts, offset = [], 0
        fixed = mat[row].tobytes()
        for i, f in enumerate(fields):
            if f[1] == VARLEN:
                parts.append(_varlen(bytes(varlen_values[i][row])))
            else:
                parts.append(fixed[offset : offset + f[1]])
                offset += f[1]
        records.append(b"".join(parts))
    return records


def _pad4(data: bytes) -> bytes:
    return data + b"\x00" * (-len(data) % 4)


# --- NetFlow v5 ------------------------------------------------------------------------------
_V5_LAYOUT = (  # (column role, offset, width) inside the 48-byte record
    ("src_addr4", 0, 4),
    ("dst_addr4", 4, 4),
    ("input_if", 12, 2),
    ("output_if", 14, 2),
    ("packets", 16, 4),
    ("bytes", 20, 4),
    ("start_uptime", 24, 4),
    ("end_uptime", 28, 4),
    ("src_port", 32, 2),
    ("dst_port", 34, 2),
    ("tcp_flags", 37, 1),
    ("protocol", 38, 1),
    ("src_as", 40, 2),
    ("dst_as", 42, 2),
)
_ROLE_IE = {role: ie for ie, (role, _) in IE.items() if ie < 1000}


def encode_v5(
    flows: Flows,
    *,
    sys_uptime_ms: int,
    unix_secs: int,
    unix_nsecs: int = 0,
    seq: int = 0,
    engine_type: int = 0,
    engine_id: int = 0,
    sampling_interval: int = 0,
    sampling_mode: int = 0,
    flows_per_packet: int = 30,
) -> list[bytes]:
    """NetFlow v5 packets (at most 30 records each) for IPv4 ``flows``.

    ``sys_uptime_ms``/``unix_secs``/``unix_nsecs`` fill every header and define the clock the
    records' First/Last uptimes are computed against (flows must start after exporter boot,
    i.e. within ``sys_uptime_ms`` of the export time, modulo 2^32). ``seq`` is the
    flow_sequence of the first packet (the count of flows exported before); it advances by the
    records in each packet. IPv6 flows cannot be expressed in v5: a ``ValueError`` says so.
    """
    cols = flow_columns(flows)
    n = _row_count(cols)
    if not 1 <= flows_per_packet <= 30:
        raise ValueError(f"flows_per_packet must be 1..30 for NetFlow v5, got {flows_per_packet}")
    for name in ("src_addr", "dst_addr"):
        if name in cols and n and not _all_ipv4_mapped(cols[name]):
            raise ValueError(f"{name} holds IPv6 addresses: NetFlow v5 carries IPv4 only; use V9Encoder/IpfixEncoder")
    export_ms = unix_secs * 1000 + unix_nsecs // 1_000_000
    clock = _Clock(export_ms, export_ms - sys_uptime_ms)
    mat = np.zeros((n, V5_RECORD), np.uint8)
    for role, offset, width in _V5_LAYOUT:
        values = _field_values(_ROLE_IE[role], width, 0, cols, n, clock)
        if isinstance(values, np.ndarray) and values.ndim == 2:
            mat[:, offset : offset + width] = values
        else:
            _put_uint(mat, offset, width, values)
    flat = mat.tobytes()
    sampling = ((sampling_mode & 0x3) << 14) | (sampling_interval & 0x3FFF)
    packets = []
    for first in range(0, n, flows_per_packet):
        count = min(flows_per_packet, n - first)
        header = struct.pack(
            "!HHIIIIBBH", 5, count, sys_uptime_ms & 0xFFFFFFFF, unix_secs, unix_nsecs,
            (seq + first) & 0xFFFFFFFF, engine_type, engine_id, sampling,
        )  # fmt: skip
        packets.append(header + flat[first * V5_RECORD : (first + count) * V5_RECORD])
    return packets


def _all_ipv4_mapped(addr: np.ndarray) -> bool:
    return bool(v4_mapped(addr).all())


# --- NetFlow v9 and IPFIX --------------------------------------------------------------------
class _TemplateEncoder:
    """Shared machinery: a template, its periodic re-sending, records packed into packets."""

    version = 0
    header_len = 0
    template_set_id = 0
    options_set_id = 0

    def __init__(
        self,
        template_id: int = 256,
        fields: Sequence[Field] | None = None,
        domain: int = 0,
        *,
        template_every: int = 20,
        max_payload: int = MAX_PAYLOAD,
        flows_per_packet: int | None = None,
        pad: bool = True,
        boot_unix_ms: int | None = None,
    ) -> None:
        if not 256 <= template_id <= 0xFFFF:
            raise ValueError(f"template_id must be 256..65535, got {template_id}")
        self.template_id = template_id
        self.fields: list[Field] = list(fields or self.default_fields)
        self.domain = domain
        self.template_every = max(1, template_every)
        self.max_payload = max_payload
        self.flows_per_packet = flows_per_packet
        self.pad = pad
        self.boot_unix_ms = boot_unix_ms
        self.sequence = 0  # v9: packets sent; IPFIX: data records sent
        self.packets_sent = 0
        self._template_due = True

    default_fields: Sequence[Field] = ()

    # - public -
    def force_template(self) -> None:
        """Send the template again with the next packet (as an exporter does after a timeout)."""
        self._template_due = True

    def template_set(self) -> bytes:
        """The template set announcing this encoder's template."""
        return self._set(self.template_set_id, self._template_record(self.template_id, self.fields))

    def packets(self, flows: Flows, export_time: float) -> list[bytes]:
        """Export packets holding every flow; the template rides in the first packet and every
        ``template_every`` packets after. ``export_time`` is Unix seconds (the header's time)."""
        cols = flow_columns(flows)
        n = _row_count(cols)
        clock = self._clock(export_time)
        records = _records(self.fields, cols, n, clock)
        packets, start = [], 0
        while start < n:
            with_template = self._template_due or self.packets_sent % self.template_every == 0
            template = self.template_set() if with_template else b""
            count = self._fit(records, start, len(template))
            data = self._set(self.template_id, b"".join(records[start : start + count]))
            packets.append(self._message([template, data], clock, int(with_template) + count, count))
            self._template_due = False
            start += count
        return packets

    def options_packet(
        self,
        template_id: int,
        scope_fields: Sequence[Field],
        option_fields: Sequence[Field],
        rows: Flows,
        export_time: float,
    ) -> bytes:
        """One packet with an options template and its options data (e.g. sampler id -> rate).

        ``rows`` holds one ``ie<N>`` column per scope and option field (v9 scope fields use the
        RFC 3954 scope types: 1 system, 2 interface, 3 line card, 4 cache, 5 template)."""
        cols = flow_columns(rows)
        clock = self._clock(export_time)
        template = self._set(self.options_set_id, self._options_record(template_id, scope_fields, option_fields))
        records = _records(list(scope_fields) + list(option_fields), cols, _row_count(cols), clock)
        data = self._set(template_id, b"".join(records))
        return self._message([template, data], clock, 1 + len(records), 0)

    def withdrawal_packet(self, export_time: float, template_id: int | None = None) -> bytes:
        """IPFIX template withdrawal (a template record with no fields); v9 has none."""
        record = struct.pack("!HH", template_id or self.template_id, 0)
        return self._message([self._set(self.template_set_id, record)], self._clock(export_time), 1, 0)

    # - internals -
    def _clock(self, export_time: float) -> _Clock:
        export_ms = int(export_time) * 1000  # headers carry whole seconds: times are relative to them
        if self.boot_unix_ms is None:
            self.boot_unix_ms = export_ms - 3_600_000
        return _Clock(export_ms, self.boot_unix_ms)

    def _fit(self, records: list[bytes], start: int, used: int) -> int:
        if self.flows_per_packet:
            return min(self.flows_per_packet, len(records) - start)
        room = self.max_payload - self.header_len - used - 8
        count, size, total = 0, 0, len(records)
        while start + count < total:
            size += len(records[start + count])
            if size > room and count:
                break
            count += 1
        return count

    def _set(self, set_id: int, body: bytes) -> bytes:
        length = 4 + len(body)
        if self.pad:
            length += -length % 4
        return struct.pack("!HH", set_id, length) + body + b"\x00" * (length - 4 - len(body))

    @staticmethod
    def _field_spec(field: Field) -> bytes:
        ie, length = field[0], field[1]
        pen = field[2] if len(field) > 2 else 0
        if pen:
            return struct.pack("!HHI", ie | 0x8000, length, pen)
        return struct.pack("!HH", ie, length)

    def _template_record(self, template_id: int, fields: Sequence[Field]) -> bytes:
        return struct.pack("!HH", template_id, len(fields)) + b"".join(self._field_spec(f) for f in fields)

    def _options_record(self, template_id: int, scope: Sequence[Field], options: Sequence[Field]) -> bytes:
        raise NotImplementedError

    def _message(self, sets: Iterable[bytes], clock: _Clock, record_count: int, data_count: int) -> bytes:
        raise NotImplementedError


class V9Encoder(_TemplateEncoder):
    """NetFlow v9 (RFC 3954) packets for one template and source id.

    ``boot_unix_ms`` is the exporter's boot time (Unix ms): record First/Last fields are
    sysUptime-relative to it, wrapping at 2^32 ms (~49.7 days): set it far in the past to export
    from an exporter that has been up longer than that. By default it is one hour before the
    first export. ``sequence`` counts export packets, as RFC 3954 says.
    """

    version = 9
    header_len = 20
    template_set_id = 0
    options_set_id = 1
    default_fields = V9_IPV4_FIELDS

    def _options_record(self, template_id: int, scope: Sequence[Field], options: Sequence[Field]) -> bytes:
        body = b"".join(self._field_spec(f) for f in list(scope) + list(options))
        return struct.pack("!HHH", template_id, 4 * len(scope), 4 * len(options)) + body

    def withdrawal_packet(self, export_time: float, template_id: int | None = None) -> bytes:
        raise ValueError("NetFlow v9 has no template withdrawal; templates expire on the collector")

    def _message(self, sets: Iterable[bytes], clock: _Clock, record_count: int, data_count: int) -> bytes:
        header = struct.pack(
            "!HHIIII", 9, record_count, clock.sys_uptime, clock.export_ms // 1000,
            self.sequence & 0xFFFFFFFF, self.domain,
        )  # fmt: skip
        self.sequence += 1
        self.packets_sent += 1
        return header + b"".join(sets)


class IpfixEncoder(_TemplateEncoder):
    """IPFIX (RFC 7011) messages for one template and observation domain.

    ``sequence`` counts data records sent before each message, as RFC 7011 says. Sets are padded
    to 4 bytes unless ``pad=False``. Variable-length fields (length 65535) use the 1-byte length
    form below 255 bytes and the 3-byte form from 255 on.
    """

    version = 10
    header_len = 16
    template_set_id = 2
    options_set_id = 3
    default_fields = IPFIX_IPV4_FIELDS

    def _options_record(self, template_id: int, scope: Sequence[Field], options: Sequence[Field]) -> bytes:
        body = b"".join(self._field_spec(f) for f in list(scope) + list(options))
        return struct.pack("!HHH", template_id, len(scope) + len(options), len(scope)) + body

    def _message(self, sets: Iterable[bytes], clock: _Clock, record_count: int, data_count: int) -> bytes:
        body = b"".join(sets)
        header = struct.pack(
            "!HHIII", 10, 16 + len(body), clock.export_ms // 1000, self.sequence & 0xFFFFFFFF, self.domain
        )
        self.sequence += data_count
        self.packets_sent += 1
        return header + body
