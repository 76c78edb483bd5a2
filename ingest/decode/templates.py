"""Templates: parsing template sets, and the compiled form the vectorized decoder uses.

A template is keyed by ``(exporter, version, domain, template id)`` (``TemplateKey``) so two
exporters, or two observation domains of one exporter, that reuse a template id never collide.

Compiling a template turns its field list into a numpy structured dtype whose named fields are
the *roles* of ``fields.IE`` (``src_port``, ``bytes``, ...) at their byte offsets; every other
field is a gap. A fixed-length template's data set is then decoded by one ``np.frombuffer`` over
all its records. Variable-length templates (IPFIX length 65535, or v9 exporters that send it)
are first reduced record by record to a row of their fixed-length fields (``compact``) so the
same dtype machinery applies; the variable-length values the decoder needs (packet
sections, ``SECTION_IES``) are kept aside.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from ingest.decode.fields import IE, REVERSE_IE, REVERSE_PEN

VARLEN = 0xFFFF
TemplateKey = tuple[bytes, int, int, int]  # exporter (16 bytes), version (9/10), domain, template id
FieldSpec = tuple[int, int, int]  # (IE, length, enterprise number or 0)

# Packet section IEs (one per template is read): dataLinkFrameSection, layer2packetSectionData,
# ipHeaderPacketSection, ipPayloadPacketSection.
SECTION_IES = (315, 104, 313, 314)
_UINT_FORMATS = {1: ">u1", 2: ">u2", 4: ">u4", 8: ">u8"}


class TemplateError(ValueError):
    """A template set that cannot be parsed; its ``reason`` names the stats counter."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(eq=False)
class Template:
    """One compiled data or options template (identity-hashed: used as a group key)."""

    key: TemplateKey
    fields: tuple[FieldSpec, ...]
    scope_count: int = 0  # options templates: the first ``scope_count`` fields are scope fields
    is_options: bool = False
    last_seen_us: int = 0  # receive time of the last (re)announcement: drives expiry
    dtype: np.dtype = field(init=False)
    roles: dict[str, tuple[str, int]] = field(init=False)  # role -> (kind, byte length)
    fixed: bool = field(init=False)
    record_length: int = field(init=False)  # fixed templates: bytes per record; else minimum
    frame_section: int | None = field(init=False)  # index of the packet section field (SECTION_IES), if any
    section_ie: int | None = field(init=False)  # and its IE
    fast: bool = field(init=False)

    def __post_init__(self) -> None:
        self.fixed = all(length != VARLEN for _, length, _ in self.fields)
        self.record_length = sum(length if length != VARLEN else 1 for _, length, _ in self.fields)
        self.frame_section = next((i for i, f in enumerate(self.fields) if f[0] in SECTION_IES and not f[2]), None)
        self.section_ie = self.fields[self.frame_section][0] if self.frame_section is not None else None
        self.dtype, self.roles = _compile(self.fields)
        # Data sets can be sliced whole and viewed with one dtype (the decoder's hot path).
        self.fast = self.fixed and self.frame_section is None and not self.is_options and self.record_length > 0

    @property
    def slow(self) -> bool:
        """Whether records need the per-record path (variable length or packet sections)."""
        return not self.fixed or self.frame_section is not None

    def same_definition(self, other: Template) -> bool:
        return self.fields == other.fields and self.scope_count == other.scope_count

    def to_json(self) -> dict:
        exporter, version, domain, template_id = self.key
        return {
            "exporter": exporter.hex(),
            "version": version,
            "domain": domain,
            "template_id": template_id,
            "fields": [list(f) for f in self.fields],
            "scope_count": self.scope_count,
            "is_options": self.is_options,
            "last_seen_us": self.last_seen_us,
        }

    @classmethod
    def from_json(cls, data: dict) -> Template:
        key = (bytes.fromhex(data["exporter"]), data["version"], data["domain"], data["template_id"])
        return cls(
            key=key,
            fields=tuple(tuple(f) for f in data["fields"]),
            scope_count=data["scope_count"],
            is_options=data["is_options"],
            last_seen_us=data["last_seen_us"],
        )


def _role_of(ie: int, pen: int) -> tuple[str, str] | None:
    if pen == REVERSE_PEN:
        role = REVERSE_IE.get(ie)
        return (role, "uint") if role else None
    if pen:
        return None
    return IE.get(ie)


def _compile(fields: tuple[FieldSpec, ...]) -> tuple[np.dtype, dict[str, tuple[str, int]]]:
    """Structured dtype over the fixed-length fields (compacted: variable ones take no room)."""
    names, formats, offsets, roles = [], [], [], {}
    offset = 0
    for ie, length, pen in fields:
        if length == VARLEN:
            continue
        found = _role_of(ie, pen)
        if found and found[0] not in roles and length > 0:
            role, kind = found
            fmt = _field_format(kind, length)
            if fmt is not None:
                names.append(role)
                formats.append(fmt)
                offsets.append(offset)
                roles[role] = (kind, length)
        offset += length
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": max(offset, 1)})
    return dtype, roles


def _field_format(kind: str, length: int) -> str | tuple | None:
    if kind == "addr4":  # raw bytes: only moved around, never read as numbers
        return "=u4" if length == 4 else None
    if kind == "addr6":
        return "V16" if length == 16 else None
    if kind == "ntp":
        return ">u8" if length == 8 else None
    if kind == "uint" and length <= 8:
        return _UINT_FORMATS.get(length, ("u1", (length,)))
    return None


def parse_template_set(
    body: bytes, pos: int, end: int, *, ipfix: bool, options: bool, max_fields: int
) -> list[tuple[int, tuple[FieldSpec, ...], int]]:
    """Template records of one (options) template set: ``(template id, fields, scope count)``.

    A record with no fields is an IPFIX withdrawal (returned with empty fields). Trailing bytes
    too short for a record header are padding. Raises ``TemplateError`` on a malformed set.
    """
    out = []
    header = 6 if options else 4
    while end - pos >= header:
        if options and not ipfix:
            template_id, scope_len, option_len = struct.unpack_from("!HHH", body, pos)
            if scope_len % 4 or option_len % 4:
                raise TemplateError("malformed", f"v9 options template {template_id}: lengths not multiples of 4")
            count, scope_count = (scope_len + option_len) // 4, scope_len // 4
        elif options:
            template_id, count, scope_count = struct.unpack_from("!HHH", body, pos)
        else:
            (template_id, count), scope_count = struct.unpack_from("!HH", body, pos), 0
        pos += header
        if template_id == 0 and count == 0 and not ipfix:
            break  # v9 zero padding after the last template
        if count > max_fields:
            raise TemplateError("template_too_large", f"template {template_id} has {count} fields")
        if scope_count > count or (options and ipfix and count and scope_count == 0):
            raise TemplateError("malformed", f"options template {template_id}: bad scope count {scope_count}")
        fields, pos = _parse_fields(body, pos, end, count, ipfix)
        if template_id < 256 and not (ipfix and count == 0 and template_id in (2, 3)):
            raise TemplateError("malformed", f"template id {template_id} is reserved (must be >= 256)")
        out.append((template_id, fields, scope_count))
    return out


def _parse_fields(body: bytes, pos: int, end: int, count: int, ipfix: bool) -> tuple[tuple[FieldSpec, ...], int]:
    fields = []
    for _ in range(count):
        if pos + 4 > end:
            raise TemplateError("truncated", "template record runs past the end of its set")
        ie, length = struct.unpack_from("!HH", body, pos)
        pos += 4
        pen = 0
        if ipfix and ie & 0x8000:
            if pos + 4 > end:
                raise TemplateError("truncated", "enterprise field runs past the end of its set")
            (pen,) = struct.unpack_from("!I", body, pos)
            ie &= 0x7FFF
            pos += 4
        fields.append((ie, length, pen))
    return tuple(fields), pos


def split_varlen_records(tmpl: Template, body: bytes, start: int, end: int) -> tuple[list[bytes], list[bytes]]:
    """Walk variable-length records: (compact fixed-field rows, packet sections) for each record.

    Stops at the first record that does not fit (the rest of the set is padding). Length 65535
    uses the RFC 7011 encoding: one length byte, or 255 followed by a two-byte length.
    """
    rows, sections = [], []
    if tmpl.record_length == 0:
        return rows, sections  # only zero-length fields: nothing to read, and no progress possible
    fields = tmpl.fields
    frame_index = tmpl.frame_section
    pos = start
    while pos < end:
        parts, section, ok = [], b"", True
        for i, (_, length, _) in enumerate(fields):
            if length == VARLEN:
                if pos >= end:
                    ok = False
                    break
                length = body[pos]
                pos += 1
                if length == 255:
                    if pos + 2 > end:
                        ok = False
                        break
                    (length,) = struct.unpack_from("!H", body, pos)
                    pos += 2
                if i == frame_index:
                    section = body[pos : pos + length]
                pos += length
            else:
                if i == frame_index:
                    section = body[pos : pos + length]
                parts.append(body[pos : pos + length])
                pos += length
            if pos > end:
                ok = False
                break
        if not ok:
            break
        rows.append(b"".join(parts) or b"\x00")  # an all-variable template still has a 1-byte row
        sections.append(section)
    return rows, sections
