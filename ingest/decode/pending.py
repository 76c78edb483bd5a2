"""Data sets that arrived before their template: held in a bounded buffer, released in order.

The buffer is bounded by ``DecoderLimits.max_pending_sets`` and ``max_pending_bytes``; when it is
full the oldest set is dropped (counted as ``no_template_dropped``); sets older than the caller's
limit go with :meth:`PendingBuffer.expire` (``no_template_expired``). Each held set keeps its own
packet context, so it decodes later exactly as it would have on arrival.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

from ingest.decode.limits import DecoderLimits, DecoderStats
from ingest.decode.templates import TemplateKey


class PendingBuffer:
    """Data set bodies per template key, oldest first (``stats.pending*`` kept exact)."""

    def __init__(self, limits: DecoderLimits, stats: DecoderStats) -> None:
        self.limits, self.stats = limits, stats
        self.held: OrderedDict[int, tuple[TemplateKey, bytes, tuple]] = OrderedDict()
        self._by_key: dict[TemplateKey, list[int]] = {}
        self._seq = 0

    def hold(self, key: TemplateKey, body: bytes, ctx: tuple) -> None:
        """Keep ``body`` (with its packet context ``ctx``) until ``key``'s template arrives."""
        limits = self.limits
        if len(body) > limits.max_pending_bytes:
            self.stats.errors["no_template_dropped"] += 1
            return
        while self.held and (
            self.stats.pending >= limits.max_pending_sets
            or self.stats.pending_bytes + len(body) > limits.max_pending_bytes
        ):
            self._drop_oldest()
        seq = self._seq = self._seq + 1
        self.held[seq] = (key, body, ctx)
        self._by_key.setdefault(key, []).append(seq)
        self.stats.pending += 1
        self.stats.pending_bytes += len(body)

    def release(self, key: TemplateKey) -> Iterator[tuple[bytes, tuple]]:
        """The bodies and contexts that waited for ``key``, oldest first (removed from the buffer)."""
        for seq in self._by_key.pop(key, []):
            _, body, ctx = self.held.pop(seq)
            self.stats.pending -= 1
            self.stats.pending_bytes -= len(body)
            yield body, ctx

    def expire(self, before_us: int) -> int:
        """Drop the sets waiting since before ``before_us`` (their receive time), counted as
        ``no_template_expired``; returns how many."""
        expired = 0
        while self.held and next(iter(self.held.values()))[2][0] < before_us:
            self._drop_oldest("no_template_expired")
            expired += 1
        return expired

    def _drop_oldest(self, reason: str = "no_template_dropped") -> None:
        seq, (key, body, _) = self.held.popitem(last=False)
        waiting = self._by_key.get(key)
        if waiting:
            waiting.remove(seq)
            if not waiting:
                del self._by_key[key]
        self.stats.pending -= 1
        self.stats.pending_bytes -= len(body)
        self.stats.errors[reason] += 1
