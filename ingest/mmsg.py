"""Many UDP datagrams per system call: Linux ``recvmmsg(2)`` and ``sendmmsg(2)`` through ctypes.

At a million flows per second the receive thread and the bench sender spend most of their time in
the per-datagram cost of Python's ``recvfrom``/``sendto`` (a system call, a bytes object, an
address tuple and a few attribute lookups each). These calls move a whole batch instead:

* :class:`MmsgReceiver` owns preallocated buffers for one socket (N slots of up to 64 KiB, their
  iovecs, an ``mmsghdr`` array and address buffers sized for ``sockaddr_in6``); :meth:`read` makes
  ONE non-blocking ``recvmmsg`` and returns ``(payloads, sources)``. Lengths, flags and addresses
  are decoded with numpy views over the C arrays, not field by field in Python.
* :class:`SendBatch` is a prepared ``sendmmsg`` (iovecs pointing into the payload bytes objects,
  all aimed at one target); :func:`send_many` sends any list of payloads in chunks of 64.

Only Linux with glibc/musl has these calls. :func:`available` says whether they work here; when
it is false callers keep their ``recvfrom``/``sendto`` loop, which gives the same results.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import mmap
import os
import socket
import struct
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np

from ingest.addresses import V4_PREFIX

MSG_DONTWAIT = 0x40
MSG_TRUNC = 0x20
SLOT_BYTES = 65_536  # one slot per datagram: the largest UDP payload (65,527 over IPv6) fits
SEND_CHUNK = 64  # datagrams per sendmmsg call (UIO_MAXIOV caps it at 1024)
SOCKADDR_BYTES = 28  # sizeof(struct sockaddr_in6), also holds a sockaddr_in
_AF_INET, _AF_INET6 = int(socket.AF_INET), int(socket.AF_INET6)  # plain ints: numpy compares enums slowly
_MAPPED_WORD = int(np.frombuffer(V4_PREFIX[8:], dtype=np.uint32)[0])  # bytes 00 00 ff ff, native order


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


def _load_libc():
    """libc's recvmmsg/sendmmsg with their prototypes, or None where they do not exist."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        recv, send = libc.recvmmsg, libc.sendmmsg
    except (OSError, AttributeError):
        return None
    recv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    send.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    recv.restype = send.restype = ctypes.c_int
    return recv, send


def _bytes_data_offset() -> int | None:
    """Where a bytes object's data starts relative to ``id()`` (CPython only; None elsewhere).

    Pointing an iovec at a payload this way costs an addition instead of a ctypes object per
    datagram. The offset is measured, not assumed, and checked against a second object.
    """
    if sys.implementation.name != "cpython":
        return None
    offsets = set()
    for probe in (b"flowlens-probe", b"\x00" * 100):
        offsets.add(ctypes.cast(ctypes.c_char_p(probe), ctypes.c_void_p).value - id(probe))
    return offsets.pop() if len(offsets) == 1 else None


_LIBC = _load_libc()
_BYTES_OFFSET = _bytes_data_offset()
# FL_NO_MMSG=1 forces the portable path (to compare the two, or sidestep a bad libc). Not a FLOWLENS_
# variable: those are configuration keys, and the config loader refuses unknown ones.
_FORCE_FALLBACK = os.environ.get("FL_NO_MMSG") == "1"


def available() -> bool:
    """True when recvmmsg/sendmmsg can be used here (Linux, CPython, not disabled)."""
    pointers_64 = ctypes.sizeof(ctypes.c_void_p) == 8  # the numpy views below assume 64-bit pointers
    return _LIBC is not None and _BYTES_OFFSET is not None and pointers_64 and not _FORCE_FALLBACK


def _strided(buffer, dtype, offset: int, stride: int, count: int) -> np.ndarray:
    """A numpy view of one field of a C struct array (``count`` structs of ``stride`` bytes)."""
    return np.ndarray((count,), dtype=dtype, buffer=buffer, offset=offset, strides=(stride,))


def _raise_errno(what: str) -> None:
    code = ctypes.get_errno()
    raise OSError(code, f"{what}: {os.strerror(code)}")


class MmsgReceiver:
    """Reads up to ``slots`` datagrams from one socket per :meth:`read` (one ``recvmmsg`` call).

    The payload buffer is an anonymous mmap: the kernel only backs the pages datagrams touch, so
    64 KiB slots cost little memory, and slicing it returns ``bytes`` in one copy.
    """

    def __init__(self, sock: socket.socket, slots: int = 256, slot_bytes: int = SLOT_BYTES):
        if not available():
            raise OSError(errno.ENOSYS, "recvmmsg is not available here")
        self.sock = sock
        self.slots = slots
        self.slot_bytes = slot_bytes
        self.truncated = 0  # datagrams longer than a slot: dropped, counted here
        self._data = mmap.mmap(-1, slots * slot_bytes)
        self._names = mmap.mmap(-1, slots * SOCKADDR_BYTES)
        data_at = ctypes.addressof(ctypes.c_char.from_buffer(self._data))
        names_at = ctypes.addressof(ctypes.c_char.from_buffer(self._names))
        self._iovecs = (_Iovec * slots)()
        self._hdrs = (_Mmsghdr * slots)()
        for i in range(slots):
            self._iovecs[i].iov_base = data_at + i * slot_bytes
            self._iovecs[i].iov_len = slot_bytes
            hdr = self._hdrs[i].msg_hdr
            hdr.msg_name = names_at + i * SOCKADDR_BYTES
            hdr.msg_namelen = SOCKADDR_BYTES
            hdr.msg_iov = ctypes.addressof(self._iovecs[i])
            hdr.msg_iovlen = 1
        size = ctypes.sizeof(_Mmsghdr)
        flags_at = _Mmsghdr.msg_hdr.offset + _Msghdr.msg_flags.offset
        namelen_at = _Mmsghdr.msg_hdr.offset + _Msghdr.msg_namelen.offset
        self._len = _strided(self._hdrs, np.uint32, _Mmsghdr.msg_len.offset, size, slots)
        self._flags = _strided(self._hdrs, np.int32, flags_at, size, slots)
        self._namelen = _strided(self._hdrs, np.uint32, namelen_at, size, slots)
        self._family = _strided(self._names, np.uint16, 0, SOCKADDR_BYTES, slots)
        self._v4 = _strided(self._names, np.uint32, 4, SOCKADDR_BYTES, slots)  # sin_addr, as stored
        # sin6_addr as four words: ::ffff:a.b.c.d is 0, 0, _MAPPED_WORD, then the IPv4 address
        self._w8, self._w12, self._w16, self._w20 = (
            _strided(self._names, np.uint32, at, SOCKADDR_BYTES, slots) for at in (8, 12, 16, 20)
        )
        self._hosts: dict[int | bytes, str] = {}  # raw address -> text, bounded below
        self._recv = _LIBC[0]
        self._starts = list(range(0, slots * slot_bytes, slot_bytes))

    def read(self, max_packets: int) -> tuple[list[bytes], list[str]]:
        """Datagrams waiting now (at most ``max_packets``): payloads and sender addresses as text.

        Empty lists when nothing waits. IPv4 and IPv4-mapped senders read "192.0.2.1", IPv6 ones
        their usual text. Datagrams longer than a slot are dropped and added to :attr:`truncated`.
        """
        want = min(max_packets, self.slots)
        fd = self.sock.fileno()
        while True:
            got = self._recv(fd, self._hdrs, want, MSG_DONTWAIT, None)
            if got >= 0:
                break
            code = ctypes.get_errno()
            if code in (errno.EAGAIN, errno.EWOULDBLOCK):
                return [], []
            if code != errno.EINTR:
                _raise_errno("recvmmsg")
        if not got:
            return [], []
        data = self._data
        payloads = [data[s : s + n] for s, n in zip(self._starts, self._len[:got].tolist(), strict=False)]
        sources = self._sources(got)
        self._namelen[:got] = SOCKADDR_BYTES  # the kernel wrote back each name's length
        if (self._flags[:got] & MSG_TRUNC).any():
            keep = ((self._flags[:got] & MSG_TRUNC) == 0).tolist()
            self.truncated += keep.count(False)
            payloads = [p for p, k in zip(payloads, keep, strict=True) if k]
            sources = [s for s, k in zip(sources, keep, strict=True) if k]
        return payloads, sources

    def _sources(self, count: int) -> list[str]:
        """Sender addresses of the first ``count`` slots, through a cache of address -> text.

        The cache key is the IPv4 address as a native int (for IPv4 and IPv4-mapped senders alike,
        found with whole-array comparisons) or the address and scope bytes of a real IPv6 sender.
        """
        families = self._family[:count]
        if (families == _AF_INET).all():
            raw = self._v4[:count].tolist()
        else:
            v6 = families == _AF_INET6
            mapped = v6 & (self._w8[:count] == 0) & (self._w12[:count] == 0) & (self._w16[:count] == _MAPPED_WORD)
            raw = np.where(mapped, self._w20[:count], self._v4[:count]).tolist()
            for i in np.flatnonzero(v6 & ~mapped).tolist():  # sin6_addr and sin6_scope_id
                raw[i] = self._names[i * SOCKADDR_BYTES + 8 : i * SOCKADDR_BYTES + 28]
        hosts = self._hosts
        try:
            return [hosts[key] for key in raw]
        except KeyError:
            return [hosts.get(key) or self._learn(key) for key in raw]

    def _learn(self, key: int | bytes) -> str:
        if isinstance(key, int):
            text = socket.inet_ntop(socket.AF_INET, struct.pack("=I", key))
        else:  # as recvfrom writes it: link-local addresses carry their interface ("fe80::1%eth0")
            text = socket.inet_ntop(socket.AF_INET6, key[:16])
            scope = struct.unpack("=I", key[16:])[0]
            if scope:
                text += "%" + _interface_name(scope)
        if len(self._hosts) >= 100_000:  # a spoofed-source flood must not grow memory forever
            self._hosts.clear()
        self._hosts[key] = text
        return text


def _interface_name(index: int) -> str:
    try:
        return socket.if_indextoname(index)
    except OSError:  # the interface went away since the datagram arrived
        return str(index)


@functools.lru_cache(maxsize=64)
def _sockaddr(family: int, target: tuple) -> bytes:
    """The C ``sockaddr_in``/``sockaddr_in6`` for ``target`` (host text or name, port)."""
    info = socket.getaddrinfo(target[0], target[1], family, socket.SOCK_DGRAM)[0][4]
    if family == socket.AF_INET:
        return struct.pack("=H", family) + struct.pack("!H4s", info[1], socket.inet_pton(family, info[0])) + bytes(8)
    packed = socket.inet_pton(family, info[0].split("%", 1)[0])
    return struct.pack("=H", family) + struct.pack("!HI16s", info[1], info[2], packed) + struct.pack("=I", info[3])


class SendBatch:
    """Up to 1024 payloads prepared for ``sendmmsg`` to one target; :meth:`send` may be repeated.

    The iovecs point straight into the payload bytes objects, which the batch keeps alive.
    Preparing costs about as much as sending once, so a sender that repeats the same packets (the
    bench's pool) prepares its batches once. ``target`` None sends to a connected socket's peer
    (no address per datagram: the kernel reuses the route it cached at ``connect``).
    """

    def __init__(self, payloads: Sequence[bytes], target: tuple | None, family: int = socket.AF_INET):
        if not available():
            raise OSError(errno.ENOSYS, "sendmmsg is not available here")
        count = len(payloads)
        self.payloads = [bytes(p) for p in payloads]  # keeps the buffers alive while pointed at
        self.count = count
        self.bytes = sum(map(len, self.payloads))
        self._iovecs = (_Iovec * count)()
        self._hdrs = (_Mmsghdr * count)()
        if count:
            iov = np.frombuffer(self._iovecs, dtype=np.uint64).reshape(count, 2)
            iov[:, 0] = [id(p) + _BYTES_OFFSET for p in self.payloads]
            iov[:, 1] = [len(p) for p in self.payloads]
        size, hdr_at = ctypes.sizeof(_Mmsghdr), _Mmsghdr.msg_hdr.offset

        def field(name: str, dtype) -> np.ndarray:
            return _strided(self._hdrs, dtype, hdr_at + getattr(_Msghdr, name).offset, size, count)

        if target is not None:
            self._name = ctypes.create_string_buffer(_sockaddr(family, target), SOCKADDR_BYTES)
            field("msg_name", np.uint64)[:] = ctypes.addressof(self._name)
            field("msg_namelen", np.uint32)[:] = 16 if family == socket.AF_INET else SOCKADDR_BYTES
        steps = np.arange(count, dtype=np.uint64) * np.uint64(ctypes.sizeof(_Iovec))
        field("msg_iov", np.uint64)[:] = ctypes.addressof(self._iovecs) + steps
        field("msg_iovlen", np.uint64)[:] = 1
        self._hdrs_at = ctypes.addressof(self._hdrs)

    def send(self, sock: socket.socket) -> int:
        """Send every payload from ``sock``; returns the bytes sent.

        A partial send continues where the kernel stopped. A full send buffer (EAGAIN on a
        non-blocking socket) waits 0.1 ms and retries, like the ``sendto`` loops did.
        """
        fd, send, size = sock.fileno(), _LIBC[1], ctypes.sizeof(_Mmsghdr)
        done = 0
        while done < self.count:
            got = send(fd, self._hdrs_at + done * size, self.count - done, 0)
            if got > 0:
                done += got
                continue
            code = ctypes.get_errno() if got < 0 else errno.EAGAIN
            if code in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS):
                time.sleep(0.0001)
            elif code not in (errno.EINTR, errno.ECONNREFUSED):
                # ECONNREFUSED (connected sockets only): an earlier datagram met a closed port;
                # reporting it consumed the error and this datagram was not sent, so retry it.
                _raise_errno("sendmmsg")
        return self.bytes


def send_many(sock: socket.socket, payloads: Sequence[bytes], target: tuple) -> int:
    """Send ``payloads`` from ``sock`` to ``target`` with ``sendmmsg``, :data:`SEND_CHUNK` at a time.

    Returns the bytes sent. Only call when :func:`available`; :func:`send_all` picks for you.
    """
    sent = 0
    for start in range(0, len(payloads), SEND_CHUNK):
        sent += SendBatch(payloads[start : start + SEND_CHUNK], target, sock.family).send(sock)
    return sent


def send_all(sock: socket.socket, payloads: Sequence[bytes], target: tuple) -> int:
    """Send ``payloads`` to ``target``: ``sendmmsg`` where available, else a ``sendto`` loop."""
    if available():
        return send_many(sock, payloads, target)
    return send_each(sock, payloads, target)


def prepare(sock: socket.socket, payloads: Sequence[bytes], target: tuple | None) -> Callable[[], int]:
    """A ready-to-repeat send of ``payloads`` (at most 1024) from ``sock``: call it to send them all
    again (returns the bytes sent). A :class:`SendBatch` where available, else a ``sendto`` loop.
    ``target`` None: ``sock`` is connected to the collector."""
    if available():
        batch = SendBatch(payloads, target, sock.family)
        return functools.partial(batch.send, sock)
    return functools.partial(send_each, sock, list(payloads), target)


def send_each(sock: socket.socket, payloads: Sequence[bytes], target: tuple | None) -> int:
    """The portable path: one ``sendto`` (``send`` when connected) per payload, retrying after
    0.1 ms on a full buffer."""
    sent = 0
    for payload in payloads:
        while True:
            try:
                sock.send(payload) if target is None else sock.sendto(payload, target)
                break
            except BlockingIOError:  # send buffer full: the local kernel pushes back, retry
                time.sleep(0.0001)
            except ConnectionRefusedError:  # connected: an earlier datagram met a closed port
                pass
        sent += len(payload)
    return sent
