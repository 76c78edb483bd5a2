"""Big-endian reads at arrays of byte offsets into one buffer of sFlow datagrams (XDR).

Every field of a well-formed sFlow datagram is 4-byte aligned when the datagram starts at a
multiple of 4 (``sflow.decode`` realigns the others), so a 32-bit field is one gather from a
word view of the buffer: the word at offset ``4k`` is word ``k`` (``at >> 2``).

Gathers go through ``np.take`` on a contiguous 4-byte void (``V4``) view, then one byte swap:
``np.take`` skips the checks of fancy indexing, and with ``mode="clip"`` an offset past the
buffer (a walk stepping over garbage) reads the last word instead of raising.
"""

from __future__ import annotations

import numpy as np

from ingest.decode import columns


class Buffer:
    """Reads at arrays of offsets into ``buffer``, which is zero padded past its last datagram
    (reads at a bad datagram's offsets land in the padding or in other datagrams)."""

    def __init__(self, buffer: bytes) -> None:
        self.raw = buffer
        self.v0 = np.ndarray((len(buffer) // 4,), "V4", buffer, 0)  # word k: bytes 4k .. 4k + 3

    def u32(self, at: np.ndarray) -> np.ndarray:
        """The 32-bit word at each offset (multiples of 4) as int64."""
        return np.take(self.v0, at >> 2).view(">u4").astype(np.int64)

    def u32s(self, at: np.ndarray, count: int) -> np.ndarray:
        """``count`` consecutive words at each offset: ``(len(at), count)`` (one row copy each)."""
        return self.rows(at, 4 * count).view(">u4").astype(np.int64)

    def bytes16(self, at: np.ndarray, v4: np.ndarray) -> np.ndarray:
        """Addresses at ``at`` (multiples of 4): 16 bytes, or IPv4-mapped from 4 bytes where ``v4``."""
        if v4.all():  # one gather of the 4 bytes, no 16-byte rows
            return columns.mapped(np.take(self.v0, at >> 2).view("=u4"))
        # Fancy indexing, not ``np.take``: take copies a non-contiguous source (this sliding
        # view, 16 times the buffer) before gathering.
        out = np.ndarray((max(len(self.raw) - 15, 0),), "V16", self.raw, 0, (1,))[at]
        if v4.any():
            out[v4] = columns.mapped(np.take(self.v0, at[v4] >> 2).view("=u4"))
        return out

    def rows(self, at: np.ndarray, width: int) -> np.ndarray:
        """``(len(at), width)`` bytes starting at each offset (one row copy each, no index matrix).

        The rows are gathered as ``width``-byte void items of a sliding view, each one copy:
        about twice as fast for narrow rows (a few words) as indexing a 2-D byte view."""
        if width <= 0:
            return np.zeros((len(at), 0), np.uint8)
        view = np.ndarray((len(self.raw) - width + 1,), f"V{width}", self.raw, 0, (1,))
        return view[at].view(np.uint8).reshape(-1, width)
