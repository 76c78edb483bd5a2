"""The disk spool: flows the memory queue cannot hold while the landing is down or behind.

When admitting a batch would take the flow queue past its sampling level, the part beyond it is
written here instead (one LZ4-compressed Arrow IPC file per batch, in arrival order) as long as the
spool stays under ``ingest.spool_max_bytes``; only a full spool falls back to sampling and drops.
While the spool holds anything, new flows queue behind it on disk, so flows land in the order they
were received. The landing loop moves the oldest file back into the memory queue whenever the
queue has room, and deletes it then.

Files are named ``<sequence>-<oldest receive_time µs>-<flows>.arrow``, written to a temporary
name and renamed, so a process that starts finds the spool its predecessor left (a crash, or a
drain deadline during an outage) and replays it first.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

log = logging.getLogger(__name__)
SUFFIX = ".arrow"
_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")


@dataclass(frozen=True)
class Segment:
    path: Path
    oldest_us: int
    flows: int
    size: int


class Spool:
    """A FIFO of flow batches in files under ``directory``, at most ``max_bytes`` on disk."""

    def __init__(self, directory: Path, max_bytes: int):
        self.directory = directory
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._segments: deque[Segment] = deque()
        self.bytes = 0
        self.flows = 0
        self._seq = 0
        directory.mkdir(parents=True, exist_ok=True)
        self._recover()

    def _recover(self) -> None:
        """Pick up the files a previous process left, oldest first; drop half-written ones."""
        for tmp in self.directory.glob("*.tmp"):
            tmp.unlink(missing_ok=True)
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            try:
                seq, oldest, flows = (int(part) for part in path.stem.split("-"))
            except ValueError:
                log.warning("spool: ignoring unknown file %s", path)
                continue
            self._append(Segment(path, oldest, flows, path.stat().st_size))
            self._seq = max(self._seq, seq)
        if self._segments:
            log.info("spool %s: %d flows left by a previous run will be landed first", self.directory, self.flows)

    def _append(self, segment: Segment) -> None:
        self._segments.append(segment)
        self.bytes += segment.size
        self.flows += segment.flows

    def put(self, batch: pa.RecordBatch, oldest_us: int) -> bool:
        """Write ``batch`` behind the others; False (nothing written) when it would not fit."""
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema, options=_OPTIONS) as writer:
            writer.write_batch(batch)
        data = sink.getvalue()
        with self._lock:
            if self.bytes + data.size > self.max_bytes:
                return False
            self._seq += 1
            path = self.directory / f"{self._seq:012d}-{oldest_us}-{batch.num_rows}{SUFFIX}"
            tmp = path.with_suffix(".tmp")
            try:
                with tmp.open("wb") as out:
                    out.write(data)
                tmp.rename(path)
            except OSError as exc:  # disk full or gone: the caller samples and drops as without a spool
                log.warning("spool: cannot write %s (%s)", path, exc)
                tmp.unlink(missing_ok=True)
                return False
            self._append(Segment(path, oldest_us, batch.num_rows, data.size))
            return True

    def oldest(self) -> Segment | None:
        """The oldest spooled file, left in place (read it with :func:`read`, then :meth:`discard`)."""
        with self._lock:
            return self._segments[0] if self._segments else None

    def discard(self, segment: Segment) -> None:
        """Forget the oldest file and delete it: its flows are back in memory (or unreadable)."""
        with self._lock:
            if self._segments and self._segments[0] is segment:
                self._segments.popleft()
                self.bytes -= segment.size
                self.flows -= segment.flows
        segment.path.unlink(missing_ok=True)

    def oldest_us(self) -> int | None:
        with self._lock:
            return self._segments[0].oldest_us if self._segments else None


def read(segment: Segment) -> pa.RecordBatch | None:
    """The batch of a spooled file; None when the file is unreadable (logged)."""
    try:
        with pa.ipc.open_stream(pa.memory_map(str(segment.path))) as reader:
            table = reader.read_all()
        return table.combine_chunks().to_batches()[0]
    except (OSError, pa.ArrowInvalid, IndexError) as exc:
        log.error("spool: %s unreadable (%s); its %d flows are lost", segment.path, exc, segment.flows)
        return None
