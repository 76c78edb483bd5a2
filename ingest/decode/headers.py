"""One packet-header parser, vectorized over a batch of sampled packet headers.

sFlow raw-packet samples and IPFIX packet sections (IE 315 ``dataLinkFrameSection``, IE 104
``layer2packetSectionData``, IE 313 ``ipHeaderPacketSection``, IE 314
``ipPayloadPacketSection``) carry the first bytes of a sampled packet instead of flow fields.
``parse`` reads a batch of them at once: the headers are the rows of a 2-D ``uint8`` array (zero
padded, with their captured lengths beside), and every layer keeps one offset per row. A row
moves through states (Ethernet -> VLAN tags -> MPLS labels -> IP -> transport) and each round
handles all rows of one state with a handful of numpy operations, so the common case
(Ethernet, IPv4 or IPv6, TCP/UDP) costs a few passes over the batch and no Python per header.

Layers: Ethernet II, 802.1Q and QinQ tags (0x8100, 0x88A8, 0x9100), MPLS label stacks (to the
bottom-of-stack bit; after it IPv4, IPv6, or a pseudowire control word followed by an inner
Ethernet frame as EVPN and Ethernet pseudowires send), IPv4 (fragments after the first carry no
ports), IPv6 with its extension headers (hop-by-hop, routing, fragment, destination options,
AH), TCP and UDP (ports, TCP flags), SCTP ports, ICMP and ICMPv6 (type and code, as NetFlow
exporters report them: ``dst_port = type * 256 + code``), GRE (checksum, key and sequence
options; IPv4, IPv6, MPLS or transparent Ethernet inside) and VXLAN (UDP port 4789). For the two
tunnels, ``tunnel="inner"`` (the default) makes the flow the encapsulated packet's,
``"outer"`` the tunnel's own.

``ip_length`` is the layer-3 size of the sampled packet from its IP header: IPv4 total length,
IPv6 payload length + 40. A header cut short gives what it could read and is flagged in
``truncated``; a header with no IP layer is flagged in ``~is_ip``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ingest.addresses import V4_PREFIX

# Where a header starts (sFlow ``header_protocol`` values; IPFIX IEs map onto them).
ETHERNET, IPV4, IPV6, MPLS, IP_ANY, TRANSPORT = 1, 11, 12, 13, 100, 101
TUNNELS = ("inner", "outer")
VXLAN_PORT = 4789
PAD = 64  # zero columns ``frames`` must carry past the widest header: reads there need no bound check

# States of a row during the walk.
_ETH, _MPLS, _IP4, _IP6, _L4, _IPX, _DONE = 0, 1, 2, 3, 4, 5, 6
_MAX_ROUNDS = 24  # every layer takes a round; a stack deeper than this is left where it stopped


class Headers(NamedTuple):
    """Per-row results of ``parse`` (``n`` rows)."""

    src: np.ndarray  # V16, IPv4 as IPv4-mapped IPv6; zeros when no IP layer was read
    dst: np.ndarray
    protocol: np.ndarray  # uint8
    src_port: np.ndarray  # uint16
    dst_port: np.ndarray  # uint16 (ICMP: type * 256 + code)
    tcp_flags: np.ndarray  # uint16
    ip_length: np.ndarray  # int64: layer-3 bytes of the sampled packet (0 when unknown)
    is_ip: np.ndarray  # bool: an IPv4/IPv6 header was read
    truncated: np.ndarray  # bool: the header ended before a layer it announced


def frames_matrix(headers: list[bytes], width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Header byte strings -> (``(n, width + PAD)`` zero-padded ``uint8`` rows, captured lengths).

    For the per-record callers (IPFIX sections); sFlow gathers its rows straight from the buffer."""
    lengths = np.fromiter(map(len, headers), np.int64, len(headers))
    w = int(lengths.max()) if width is None and len(headers) else (width or 0)
    rows = np.zeros((len(headers), w + PAD), np.uint8)
    if len(headers):
        joined = np.frombuffer(b"".join(headers), np.uint8)
        starts = np.cumsum(lengths) - lengths
        cols = np.arange(w)
        mask = cols < lengths[:, None]
        rows[:, :w][mask] = joined[(starts[:, None] + cols)[mask]]
    return rows, lengths


class _Walk:
    """Per-row state of one ``parse`` call."""

    def __init__(self, frames: np.ndarray, lengths: np.ndarray, start: np.ndarray, tunnel: str) -> None:
        n, self.width = frames.shape
        self.n = n
        self.frames = frames
        self.flat = frames.reshape(-1)
        self.base = np.arange(n, dtype=np.int64) * self.width
        self.limit = np.minimum(lengths.astype(np.int64), self.width - PAD)
        self.inner = tunnel == "inner"
        self.pos = np.zeros(n, np.int64)
        self.state = start.astype(np.int8)
        self.truncated = np.zeros(n, bool)
        self.ip_pos = np.full(n, -1, np.int64)  # offset of the flow's IP header
        self.family = np.zeros(n, np.int8)  # 4 or 6
        self.protocol = np.zeros(n, np.int64)
        self.l4_pos = np.full(n, -1, np.int64)
        self.ip_length = np.zeros(n, np.int64)
        self.l4_only = np.zeros(n, bool)  # started at the transport header (no IP layer of its own)

    # --- reads at per-row offsets (``rows`` an index array, ``at`` per row) -----------------------
    def columns(self, rows: np.ndarray, at: np.ndarray, width: int) -> np.ndarray:
        """``(len(rows), width)`` bytes from ``at`` of each row. When every row reads at the same
        offset (the common case: one layout for the whole batch) that is a column slice, else
        one gather."""
        first = int(at[0]) if len(at) else 0
        if len(at) and first == at.min() == at.max():
            first = min(first, self.width - width)
            return (
                self.frames[:, first : first + width]
                if len(rows) == self.n
                else self.frames[rows, first : first + width]
            )
        idx = (self.base[rows] + np.minimum(at, self.width - width))[:, None] + np.arange(width)
        return self.flat[idx]

    def u8(self, rows: np.ndarray, at: np.ndarray) -> np.ndarray:
        return self.columns(rows, at, 1)[:, 0].astype(np.int64)

    def u16(self, rows: np.ndarray, at: np.ndarray) -> np.ndarray:
        two = self.columns(rows, at, 2)
        return (two[:, 0].astype(np.int64) << 8) | two[:, 1]

    def fits(self, rows: slice | np.ndarray, at: np.ndarray) -> np.ndarray:
        """Whether ``at`` bytes are inside each row's captured header."""
        return at <= self.limit[rows]

    def stop(self, rows: np.ndarray, short: np.ndarray) -> None:
        """Rows whose next layer does not fit: truncated, walk over."""
        cut = rows[short]
        self.truncated[cut] = True
        self.state[cut] = _DONE


def parse(
    frames: np.ndarray,
    lengths: np.ndarray,
    start: int | np.ndarray = ETHERNET,
    tunnel: str = "inner",
    protocol: np.ndarray | None = None,
) -> Headers:
    """Parse ``frames`` (``(n, w + PAD)`` uint8; row ``i`` holds ``lengths[i]`` captured bytes,
    what follows them is never taken as data) from layer ``start`` (per row or for all:
    ``ETHERNET``, ``IPV4``, ``IPV6``, ``IP_ANY``, ``MPLS``, or ``TRANSPORT`` for a header that
    starts at the transport layer, whose IP ``protocol`` the caller knows from elsewhere)."""
    n = len(frames)
    if frames.shape[1] < PAD or tunnel not in TUNNELS:
        raise ValueError(f"frames need {PAD} zero columns past the data; tunnel is one of {TUNNELS}")
    first = np.broadcast_to(np.asarray(start, np.int64), (n,))
    walk = _Walk(np.ascontiguousarray(frames), lengths, _initial_state(first), tunnel)
    walk.l4_only = first == TRANSPORT
    if protocol is not None:
        walk.protocol[walk.l4_only] = np.broadcast_to(np.asarray(protocol, np.int64), (n,))[walk.l4_only]
    steps = {_ETH: _ethernet, _MPLS: _mpls, _IP4: _ipv4, _IP6: _ipv6, _IPX: _ip_any, _L4: _transport}
    for _ in range(_MAX_ROUNDS):
        state = walk.state
        live = state != _DONE
        if not live.any():
            break
        for code, step in steps.items():
            rows = np.flatnonzero(state == code)
            if len(rows):
                step(walk, rows)
    walk.state[:] = _DONE
    return _results(walk)


def _initial_state(first: np.ndarray) -> np.ndarray:
    state = np.full(len(first), _DONE, np.int8)
    state[first == ETHERNET] = _ETH
    state[first == MPLS] = _MPLS
    state[first == IPV4] = _IP4
    state[first == IPV6] = _IP6
    state[first == IP_ANY] = _IPX
    state[first == TRANSPORT] = _L4
    return state


def _ip_any(walk: _Walk, rows: np.ndarray) -> None:
    """Rows whose next header is IPv4 or IPv6, told by the version nibble."""
    version = walk.u8(rows, walk.pos[rows]) >> 4
    walk.state[rows] = np.where(version == 4, _IP4, np.where(version == 6, _IP6, _DONE))
    short = ~walk.fits(rows, walk.pos[rows] + 1)
    walk.stop(rows, short)


def _after_ethertype(walk: _Walk, rows: np.ndarray, ethertype: np.ndarray) -> None:
    """The state that follows an EtherType (or a GRE protocol type)."""
    walk.state[rows] = np.select(
        [ethertype == 0x0800, ethertype == 0x86DD, (ethertype == 0x8847) | (ethertype == 0x8848),
         ethertype == 0x6558],
        [_IP4, _IP6, _MPLS, _ETH], _DONE,
    )  # fmt: skip


def _ethernet(walk: _Walk, rows: np.ndarray) -> None:
    pos = walk.pos[rows]
    short = ~walk.fits(rows, pos + 14)
    ethertype = walk.u16(rows, pos + 12)
    pos = pos + 14
    for _ in range(2):  # 802.1Q, or QinQ's outer and inner tags
        tagged = (ethertype == 0x8100) | (ethertype == 0x88A8) | (ethertype == 0x9100)
        if not tagged.any():
            break
        short |= tagged & ~walk.fits(rows, pos + 4)
        ethertype = np.where(tagged, walk.u16(rows, pos + 2), ethertype)
        pos = pos + 4 * tagged
    walk.pos[rows] = pos
    _after_ethertype(walk, rows, ethertype)
    walk.stop(rows, short)


def _mpls(walk: _Walk, rows: np.ndarray) -> None:
    """One label per round until the bottom of stack; then IP, or control word + inner Ethernet."""
    pos = walk.pos[rows]
    short = ~walk.fits(rows, pos + 4)
    bottom = (walk.u8(rows, pos + 2) & 1).astype(bool)
    pos = pos + 4
    walk.pos[rows] = pos
    done = rows[bottom & ~short]
    if len(done):
        at = walk.pos[done]
        nibble = walk.u8(done, at) >> 4
        # First nibble 0: a pseudowire control word (RFC 4385), then the Ethernet frame (EVPN).
        walk.pos[done] = at + 4 * (nibble == 0)
        walk.state[done] = np.select([nibble == 4, nibble == 6, nibble == 0], [_IP4, _IP6, _ETH], _DONE)
        walk.stop(done, ~walk.fits(done, at + 1))
    walk.stop(rows, short)


def _ipv4(walk: _Walk, rows: np.ndarray) -> None:
    pos = walk.pos[rows]
    first = walk.u8(rows, pos)
    short = ~walk.fits(rows, pos + 20)
    not_v4 = (first >> 4) != 4
    walk.state[rows[not_v4 & ~short]] = _DONE
    ok = ~short & ~not_v4
    take = rows[ok]
    pos = pos[ok]
    _set_ip(walk, take, pos, 4, walk.u16(take, pos + 2), walk.u8(take, pos + 9))
    fragment = walk.u16(take, pos + 6) & 0x1FFF
    ihl = (walk.u8(take, pos) & 0x0F) * 4
    walk.pos[take] = pos + ihl
    # Later fragments carry no transport header; a header length under 20 is garbage.
    walk.state[take] = np.where((fragment == 0) & (ihl >= 20), _L4, _DONE)
    walk.stop(rows, short)


def _ipv6(walk: _Walk, rows: np.ndarray) -> None:
    pos = walk.pos[rows]
    short = ~walk.fits(rows, pos + 40)
    not_v6 = (walk.u8(rows, pos) >> 4) != 6
    walk.state[rows[not_v6 & ~short]] = _DONE
    ok = ~short & ~not_v6
    take, pos = rows[ok], pos[ok]
    nxt = walk.u8(take, pos + 6)
    pos = pos + 40
    fragment_later = np.zeros(len(take), bool)
    for _ in range(4):  # extension headers, then the transport header
        ext = (nxt == 0) | (nxt == 43) | (nxt == 44) | (nxt == 51) | (nxt == 60)  # extension headers
        if not ext.any():
            break
        fits = walk.fits(take, pos + 8)
        walk.truncated[take[ext & ~fits]] = True
        ext &= fits
        units = walk.u8(take, pos + 1)
        size = np.select([nxt == 44, nxt == 51], [8, (units + 2) * 4], (units + 1) * 8)
        fragment_later |= ext & (nxt == 44) & ((walk.u16(take, pos + 2) & 0xFFF8) != 0)
        nxt = np.where(ext, walk.u8(take, pos), nxt)
        pos = np.where(ext, pos + size, pos)
    _set_ip(walk, take, walk.pos[take], 6, walk.u16(take, walk.pos[take] + 4) + 40, nxt)
    walk.pos[take] = pos
    walk.state[take] = np.where(fragment_later | walk.truncated[take], _DONE, _L4)
    walk.stop(rows, short)


def _set_ip(walk: _Walk, rows: np.ndarray, pos: np.ndarray, family: int, length: np.ndarray, proto: np.ndarray) -> None:
    """Record an IP layer: with ``tunnel="outer"`` only the first one found is kept."""
    if not walk.inner:
        fresh = walk.ip_pos[rows] < 0
        rows, pos, length, proto = rows[fresh], pos[fresh], length[fresh], proto[fresh]
    walk.ip_pos[rows] = pos
    walk.family[rows] = family
    walk.ip_length[rows] = length
    walk.protocol[rows] = proto
    walk.l4_pos[rows] = -1


def _transport(walk: _Walk, rows: np.ndarray) -> None:
    """Note where the transport header is; follow GRE and VXLAN when the flow is the inner packet."""
    pos = walk.pos[rows]
    proto = walk.protocol[rows]
    own = (walk.ip_pos[rows] >= 0) | walk.l4_only[rows]
    if not walk.inner:  # the flow is the outer packet: the first transport header is its own
        own &= walk.l4_pos[rows] < 0
    walk.l4_pos[rows[own]] = pos[own]
    walk.state[rows] = _DONE
    if not walk.inner:
        return
    gre = rows[proto == 47]
    if len(gre):
        _gre(walk, gre)
    udp = (proto == 17) & walk.fits(rows, pos + 16)
    vxlan = udp & (walk.u16(rows, pos + 2) == VXLAN_PORT)
    vx = rows[vxlan]
    if len(vx):
        walk.pos[vx] += 16  # UDP header + VXLAN header, then the inner Ethernet frame
        walk.state[vx] = _ETH


def _gre(walk: _Walk, rows: np.ndarray) -> None:
    pos = walk.pos[rows]
    flags = walk.u16(rows, pos)
    size = 4 + 4 * ((flags >> 15) & 1) + 4 * ((flags >> 13) & 1) + 4 * ((flags >> 12) & 1)
    short = ~walk.fits(rows, pos + size)
    ethertype = walk.u16(rows, pos + 2)
    walk.pos[rows] = pos + size
    _after_ethertype(walk, rows, ethertype)
    walk.stop(rows, short)


def _results(walk: _Walk) -> Headers:
    n = len(walk.pos)
    is_ip = walk.ip_pos >= 0
    src = np.zeros((n, 16), np.uint8)
    dst = np.zeros((n, 16), np.uint8)
    for family, (a, width) in ((4, (12, 4)), (6, (8, 16))):
        rows = np.flatnonzero(is_ip & (walk.family == family))
        if not len(rows):
            continue
        both = walk.columns(rows, walk.ip_pos[rows] + a, 2 * width)
        src[rows, 16 - width :] = both[:, :width]
        dst[rows, 16 - width :] = both[:, width:]
        if family == 4:
            src[rows, :12] = dst[rows, :12] = np.frombuffer(V4_PREFIX, np.uint8)
    src_port = np.zeros(n, np.int64)
    dst_port = np.zeros(n, np.int64)
    flags = np.zeros(n, np.int64)
    l4 = walk.l4_pos
    proto = walk.protocol
    ported = np.flatnonzero((l4 >= 0) & ((proto == 6) | (proto == 17) | (proto == 132)))
    cut = ~walk.fits(ported, l4[ported] + 4)
    walk.truncated[ported[cut]] = True
    ported = ported[~cut]
    src_port[ported] = walk.u16(ported, l4[ported])
    dst_port[ported] = walk.u16(ported, l4[ported] + 2)
    tcp = ported[proto[ported] == 6]
    whole = walk.fits(tcp, l4[tcp] + 14)
    walk.truncated[tcp[~whole]] = True
    tcp = tcp[whole]
    flags[tcp] = walk.u8(tcp, l4[tcp] + 13)
    icmp = np.flatnonzero((l4 >= 0) & ((proto == 1) | (proto == 58)))
    whole = walk.fits(icmp, l4[icmp] + 2)
    walk.truncated[icmp[~whole]] = True
    icmp = icmp[whole]
    dst_port[icmp] = (walk.u8(icmp, l4[icmp]) << 8) | walk.u8(icmp, l4[icmp] + 1)
    return Headers(
        src.view("V16").reshape(-1), dst.view("V16").reshape(-1), proto.astype(np.uint8),
        src_port.astype(np.uint16), dst_port.astype(np.uint16), flags.astype(np.uint16),
        walk.ip_length, is_ip, walk.truncated,
    )  # fmt: skip
