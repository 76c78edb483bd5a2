"""What the per-packet path gathers during one ``decode_many`` call, for the vectorized finish."""

from __future__ import annotations

import numpy as np

from ingest.decode.templates import Template


class Group:
    """Record bytes of one template gathered by the per-packet path during a call."""

    __slots__ = ("bodies", "chunks", "heads", "recvs")

    def __init__(self) -> None:
        # Fixed-length templates, one entry per data set: whole records only (the record count is
        # len // record length), the receive time and the first 24 bytes of its packet. Kept per
        # group, not per call: the exporter, version and domain are the template's.
        self.chunks: list[bytes] = []
        self.recvs: list[int] = []
        self.heads: list[bytes] = []
        self.bodies: list[tuple[bytes, int, int, int]] = []  # slow path: (payload, start, end, pidx)


class Call:
    """Accumulators of the per-packet path (``Decoder._packet``) during one ``decode_many`` call."""

    def __init__(self) -> None:
        # per packet: receive µs, exporter, first 24 bytes (headers are decoded vectorized later);
        # three lists rather than one list of tuples: cheaper to append and to turn into arrays
        self.recvs: list[int] = []
        self.exps: list[bytes] = []
        self.heads: list[bytes] = []
        self.groups: dict[Template, Group] = {}
        self.v5_chunks: list[bytes] = []
        self.v5_pidx: list[int] = []
        # Data sets of fixed-length templates in packets of the front end's batch: read from its
        # buffer with the front end's groups, (template, batch row, start in payload, records).
        self.row: int | None = None  # the batch row ``_packet`` is walking (None: not from a batch)
        self.in_batch: list[tuple[Template, int, int, int]] = []
        # sFlow datagrams: rows of the front end's batch, or (exporter, payload, receive µs)
        # items met by the per-packet path; decoded together at the end of the call.
        self.sflow_rows: np.ndarray | None = None
        self.sflow_items: list[tuple[bytes, bytes, int]] = []

    def add(self, receive_us: int, exp: bytes, head: bytes) -> int:
        """Record one packet's context; returns its index."""
        self.recvs.append(receive_us)
        self.exps.append(exp)
        self.heads.append(head)
        return len(self.recvs) - 1

    def context(self, pidx: int) -> tuple[int, bytes, bytes]:
        return self.recvs[pidx], self.exps[pidx], self.heads[pidx]
