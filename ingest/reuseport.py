"""Spread exporters over the receiving processes by source address (Linux SO_REUSEPORT + cBPF).

Every receiving process binds its own socket to the listening port with ``SO_REUSEPORT``; by
default the kernel picks the socket for a datagram by a hash of the source and destination
address *and port*. Two things follow from that: an exporter that changes its source port (a
reboot, a NAT rebinding, some exporters rotate ports) may move to another process, which has
never seen its v9/IPFIX templates; and a handful of exporters can split unevenly (with 8
exporters and 2 processes, 5/3 or 6/2 splits are common), so one process saturates first.

:func:`balance_by_exporter` attaches a classic BPF program to the socket group that returns
``source address mod processes`` as the socket index: an exporter always lands in the same
process whatever its port, and consecutive exporter addresses (the usual numbering of router
loopbacks) spread exactly evenly. IPv4 datagrams (also on dual-stack sockets) use the IPv4
source; IPv6 ones the last 32 bits of the IPv6 source.
"""

from __future__ import annotations

import ctypes
import logging
import socket
import struct

log = logging.getLogger(__name__)

SO_ATTACH_REUSEPORT_CBPF = 51
SKF_NET_OFF = -0x100000  # loads relative to the network (IP) header, not the UDP payload
# classic BPF opcodes (linux/filter.h)
LDB_ABS, LDW_ABS, RSH_K, JEQ_K, JA, MOD_K, RET_A = 0x30, 0x20, 0x74, 0x15, 0x05, 0x94, 0x16


def _insn(code: int, k: int = 0, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k & 0xFFFFFFFF)


def exporter_program(processes: int) -> bytes:
    """The cBPF program: socket index = last 32 bits of the source address mod ``processes``."""
    net = SKF_NET_OFF
    return b"".join(
        [
            _insn(LDB_ABS, net + 0),  # version / IHL byte
            _insn(RSH_K, 4),
            _insn(JEQ_K, 4, jt=0, jf=2),
            _insn(LDW_ABS, net + 12),  # IPv4 source
            _insn(JA, 1),
            _insn(LDW_ABS, net + 20),  # IPv6 source, last word
            _insn(MOD_K, processes),
            _insn(RET_A),
        ]
    )


def balance_by_exporter(sock: socket.socket, processes: int) -> bool:
    """Attach :func:`exporter_program` to ``sock``'s reuseport group; False (logged) if refused.

    Any socket of the group may attach it; the last attach wins, so every process attaching the
    same program is harmless. Without it the kernel's default hash applies.
    """
    if processes < 2:
        return False
    program = exporter_program(processes)
    code = ctypes.create_string_buffer(program, len(program))
    fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(code))  # struct sock_fprog
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
    except OSError as exc:
        log.warning("cannot pin exporters to receiving processes (%s): the kernel's port hash applies", exc)
        return False
    return True
