"""One receiving process of the ingest daemon: receive thread, decode thread, landing loop.

::

    sockets --Receiver--> FairQueue --decode thread--> FlowQueue (backpressure) --landing loop--> Landing
              (allow-list,  (per-exporter   (Decoder.decode_many,   (sample 1:N / drop)   (batches per window,
               stamping)     round-robin)    split by window)                             retry + backoff,
                                                                                          heartbeats)

Receiving never waits: when decoding or landing falls behind, the fair queue sheds the flooding
exporter's packets and the flow queue samples then drops, each counted. A flow leaves the flow
queue's depth only once the landing confirmed it (Kafka delivery report or PostgreSQL commit), so
the depth is exactly "accepted and not yet durable", and the watermark is derived from it.
"""

from __future__ import annotations

import ctypes
import ipaddress
import itertools
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from ingest import interface_metrics, stats_file
from ingest.addresses import addresses
from ingest.backpressure import DaemonLoad, FlowQueue
from ingest.config import FlowLensConfig
from ingest.land import backend_for, open_landing
from ingest.landing_loop import LandingLoop
from ingest.metrics import PROTOCOLS, WorkerStats
from ingest.receive import BUSY, AllowList, FairQueue, Receiver, export_time_us, name_this_thread, open_udp_socket
from ingest.reuseport import balance_by_exporter
from ingest.scaling.shared import SharedDecision
from ingest.schema import receive_times_us
from ingest.spool import Spool
from ingest.window import WINDOW_US

log = logging.getLogger(__name__)
# decoder reasons for data that waited for a template -> flowlens_template_pending_dropped_total{reason}
PENDING_DROPS = {"no_template_dropped": "limit", "no_template_expired": "expired"}
# export mode: an exporter silent this long (wall clock) stops holding the process's watermark back
EXPORTER_IDLE_SECONDS = 10.0


def split_windows(batch: pa.RecordBatch) -> list[pa.RecordBatch]:
    """Split a batch so that no piece straddles a 5-minute receive_time boundary."""
    if batch.num_rows == 0:
        return []
    windows = receive_times_us(batch) // WINDOW_US
    if windows[0] == windows[-1] and (windows == windows[0]).all():
        return [batch]
    order = np.argsort(windows, kind="stable")
    bounds = np.flatnonzero(np.diff(windows[order])) + 1
    taken = batch.take(pa.array(order))
    edges = [0, *bounds.tolist(), len(order)]
    return [taken.slice(a, b - a) for a, b in itertools.pairwise(edges)]


def count_by_exporter(batch: pa.RecordBatch) -> dict[tuple[bytes, int], int]:
    """Flows per (16-byte exporter, flow version), counted over runs of equal rows.

    The decoder emits records grouped by template, so a batch holds a few long runs of one
    exporter and version: comparing neighbours is a few vectorized passes, where a hash
    group-by (Arrow's Acero) costs as much as decoding the batch.
    """
    n = batch.num_rows
    if n == 0:
        return {}
    words = addresses(batch.column("exporter")).view("<u8")  # (n, 2): one compare per half
    version = batch.column("flow_version").to_numpy(zero_copy_only=False)
    changed = (words[1:] != words[:-1]).any(axis=1) | (version[1:] != version[:-1])
    starts = np.concatenate(([0], np.flatnonzero(changed) + 1))
    ends = np.append(starts[1:], n)
    counts: dict[tuple[bytes, int], int] = {}
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        key = (words[start].tobytes(), int(version[start]))
        counts[key] = counts.get(key, 0) + end - start
    return counts


class ExporterNames:
    """16-byte exporter address -> text for metric labels (cached, bounded)."""

    def __init__(self) -> None:
        self._cache: dict[bytes, str] = {}

    def __call__(self, raw: bytes) -> str:
        name = self._cache.get(raw)
        if name is None:
            ip = ipaddress.IPv6Address(raw)
            name = str(ip.ipv4_mapped or ip)
            if len(self._cache) < 10_000:
                self._cache[raw] = name
        return name


class Worker:
    """Everything one receiving process runs; :meth:`run` returns when drained after :meth:`stop`."""

    def __init__(self, cfg: FlowLensConfig, index: int, instance: str, report=None, load_slots=None,
                 switch_slots=None):  # fmt: skip
        self.cfg = cfg
        self.index = index
        self.instance = instance
        self.report = report  # callable(snapshot: dict, final: bool) towards the parent
        self.stats = WorkerStats()
        ing = cfg.ingest
        self.backend = backend_for(cfg)
        self.sockets = [open_udp_socket(a.host, a.port, ing.socket_receive_buffer_bytes) for a in ing.listen]
        for sock in self.sockets:  # one exporter, one process: its templates are all in one place
            balance_by_exporter(sock, ing.process_count)
        self.fairq = FairQueue(ing.receive_queue_packets)
        # the daemon's limits: every process's depth and rate in shared memory (a private array alone)
        load = DaemonLoad(load_slots, index if load_slots is not None else 0)
        self.flowq = FlowQueue(cfg.backpressure.ingestion, load, self._open_spool())
        self.receiver = Receiver(
            self.sockets,
            self.fairq,
            AllowList(ing.allowed_exporters),
            self.stats,
            ing.timestamp_source == "export",
            ing.receive_coalesce_ms / 1000,
            ing.max_datagram_bytes,
        )
        # auto mode: the daemon's one landing decision, in shared memory (None: this process decides alone)
        decision = SharedDecision(switch_slots, index) if switch_slots is not None else None
        self.landing = open_landing(cfg, stats=self.stats, decision=decision)
        self.loop = LandingLoop(cfg, index, self.landing, self.backend, self.flowq, self.stats)
        self.stopping = threading.Event()
        self._decode_done = threading.Event()
        self._exporter_names = ExporterNames()
        self._landed_through_us = 0
        # export mode: exporter -> (newest export time decoded, monotonic time it was seen)
        self._exporter_clock: dict[str, tuple[int, float]] = {}
        self._clock_lock = threading.Lock()
        self.late_packets_clamped = 0
        self._late_logged = 0.0
        self._drain_deadline: float | None = None
        self._finished = threading.Event()  # the landing loop ended: no more periodic reports
        self.state_dir = cfg.state_dir / "ingest"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.decoder = self._make_decoder()

    def _open_spool(self) -> Spool | None:
        """This process's disk spool (files a previous run left are landed first); None when off."""
        ing = self.cfg.ingest
        if not ing.spool_max_bytes:
            return None
        return Spool((ing.spool_dir or self.cfg.state_dir / "ingest" / "spool") / f"w{self.index}", ing.spool_max_bytes)

    # --- decoder and templates ----------------------------------------------------------------
    def _make_decoder(self):
        from ingest.decode import Decoder

        dec = Decoder(
            default_sampling_rate=self.cfg.ingest.default_sampling_rate,
            sampling_overrides=self.cfg.ingest.sampling_rate_overrides,
            tunnel=self.cfg.ingest.tunnel_flow,
        )
        # Every process loads every saved file: after a restart an exporter may hash to another process.
        for path in sorted(self.state_dir.glob(self.cfg.ingest.template_state_file.format(worker="*"))):
            try:
                loaded = dec.load_state(path)
                log.info("worker %d: %d templates from %s", self.index, loaded, path)
            except (OSError, ValueError, KeyError) as exc:
                log.warning("worker %d: template state %s unusable (%s); it will be relearned", self.index, path, exc)
        return dec

    def save_templates(self) -> None:
        path = self.state_dir / self.cfg.ingest.template_state_file.format(worker=self.index)
        try:
            self.decoder.save_state(path)
        except OSError as exc:
            log.warning("could not save templates to %s: %s", path, exc)

    # --- decode thread ------------------------------------------------------------------------
    def decode_loop(self) -> None:
        batch_packets = self.cfg.ingest.decode_batch_packets
        linger = self.cfg.ingest.decode_linger_ms / 1000
        name_this_thread("flowlens-decode")
        errors_seen: dict[str, int] = {}
        templates_seen = -1
        last_save = time.monotonic()
        while True:
            packets = self.fairq.take(batch_packets, timeout=0.1, linger=0.0 if self.stopping.is_set() else linger)
            if not packets:
                if self.stopping.is_set() and not self.receiver.is_alive() and self.fairq.size == 0:
                    break
                continue
            try:
                if self.receiver.use_export_time:
                    packets = self._follow_export_clock(packets)
                batch = self.decoder.decode_many(packets)
                self._count_received(batch)
                for piece in split_windows(batch):
                    admitted = self.flowq.admit(piece)
                    self.stats.spooled += admitted.spooled
                    self.stats.sampled += admitted.sampled
                    self.stats.flows_dropped["backpressure"] += admitted.dropped
            except Exception:  # a bug must not stop the process from receiving: count it, go on
                log.exception("worker %d: decoding %d packets failed", self.index, len(packets))
                self.stats.packets_dropped["internal_error"] += len(packets)
            finally:
                self.fairq.release()
            self._expire_pending()
            self._count_decode_errors(errors_seen)
            events = sum(self.decoder.stats.events.values())
            if events != templates_seen and time.monotonic() - last_save > 1.0:
                templates_seen, last_save = events, time.monotonic()
                self.save_templates()
        self.save_templates()
        # Templates are saved, data waiting for one is not: what still waits is lost, and counted.
        self.stats.template_pending_dropped["shutdown"] += self.decoder.stats.pending
        self._decode_done.set()

    def _follow_export_clock(self, packets: list) -> list:
        """Track each exporter's clock and move late packets up to the published watermark.

        With ``timestamp_source: export`` a packet's window comes from its exporter's clock, which
        can run behind the watermark this process already published (a skewed or restarted
        exporter, a packet delayed on the network). Landing it in its own window could add flows to
        a window the pipeline already closed, so its window time is raised to the watermark: the
        flow lands in the oldest window still open instead of being lost to processing.
        """
        floor = self._landed_through_us
        newest: dict[str, int] = {}
        out = []
        late = 0
        for exporter, payload, stamp in packets:
            if stamp < floor:
                stamp, late = floor, late + 1
            # a packet without an export time was stamped with the wall clock: not the exporter's clock
            if stamp > newest.get(exporter, 0) and export_time_us(payload) is not None:
                newest[exporter] = stamp
            out.append((exporter, payload, stamp))
        now = time.monotonic()
        with self._clock_lock:
            for exporter, stamp in newest.items():
                before = self._exporter_clock.get(exporter, (0, 0.0))[0]
                self._exporter_clock[exporter] = (max(before, stamp), now)
        if late:
            self.late_packets_clamped += late
            if now - self._late_logged >= 60:  # a skewed exporter would repeat this every batch
                self._late_logged = now
                log.warning("worker %d: %d packet(s) so far exported behind the watermark were moved up to it; "
                            "check the exporters' clocks (NTP)", self.index, self.late_packets_clamped)  # fmt: skip
        return out

    def _export_clock_us(self) -> int | None:
        """Where the exporters' clock is for this process: the slowest exporter still sending.

        Exporters silent for longer than :data:`EXPORTER_IDLE_SECONDS` no longer count, so a
        stopped exporter never holds the watermark back; with none sending, None (no position).
        """
        idle = max(EXPORTER_IDLE_SECONDS, 2 * self.cfg.ingest.heartbeat_seconds)
        now = time.monotonic()
        with self._clock_lock:
            # forgetting quiet exporters also bounds the map (spoofed sources, renumbered exporters)
            self._exporter_clock = {e: c for e, c in self._exporter_clock.items() if now - c[1] <= idle}
            active = [stamp for stamp, _ in self._exporter_clock.values()]
        return min(active) if active else None

    def _count_received(self, batch: pa.RecordBatch) -> None:
        for (exporter, version), flows in count_by_exporter(batch).items():
            key = (self._exporter_names(exporter), PROTOCOLS.get(version, str(version)))
            self.stats.received[key] += flows

    def _count_decode_errors(self, seen: dict[str, int]) -> None:
        for reason, count in self.decoder.stats.errors.items():
            if count != seen.get(reason, 0):
                pending_reason = PENDING_DROPS.get(reason)
                if pending_reason:  # data that waited for a template: not malformed, and not a packet
                    self.stats.template_pending_dropped[pending_reason] += count - seen.get(reason, 0)
                else:
                    self.stats.packets_dropped[f"malformed:{reason}"] += count - seen.get(reason, 0)
                seen[reason] = count

    def _expire_pending(self) -> None:
        """Data sets that waited longer than ``ingest.template_wait_seconds`` for their template
        go (counted); the clock is the packets' own (receive or export time, as they were stamped)."""
        newest = self.receiver.max_stamp
        if newest and self.decoder.stats.pending:
            self.decoder.pending.expire(newest - int(self.cfg.ingest.template_wait_seconds * 1e6))

    # --- main thread: the landing loop -----------------------------------------------------
    def run(self) -> None:
        name_this_thread(f"flowlens-w{self.index}")
        self.receiver.start()
        decode_thread = threading.Thread(target=self.decode_loop, name="flowlens-decode", daemon=True)
        decode_thread.start()
        log.info("worker %d (%s) receiving on %s, landing in %s", self.index, self.instance,
                 ", ".join(f"{a.host}:{a.port}" for a in self.cfg.ingest.listen), self.backend)  # fmt: skip
        reporter = threading.Thread(target=self._report_every_second, name="flowlens-report", daemon=True)
        reporter.start()
        ing = self.cfg.ingest
        next_heartbeat = time.monotonic()
        graceful = True
        while True:
            draining = self.stopping.is_set()
            if draining and self._drain_deadline is None:
                self._drain_deadline = time.monotonic() + ing.drain_timeout_seconds
                self._stop_receiving()
            self.loop.step(timeout=0.02, draining=draining)
            now = time.monotonic()
            if now >= next_heartbeat:
                self._heartbeat()
                next_heartbeat = now + ing.heartbeat_seconds
            if draining and self._decode_done.is_set() and self.loop.idle:
                break
            if draining and now > self._drain_deadline:
                log.error(
                    "worker %d: drain timeout with %d flows not landed (landing down?)", self.index, self.flowq.depth
                )
                self.stats.flows_dropped["shutdown_unlanded"] += self.flowq.depth
                graceful = False
                break
        self._finished.set()
        if graceful:  # a landing that is down gets no last word: the deadline is the supervisor's promise
            self.loop.final_heartbeat(self.instance, self.landed_through_us)
        decode_thread.join(timeout=5)
        self.loop.close(graceful)
        for sock in self.sockets:
            sock.close()
        reporter.join(timeout=2)
        self._report(final=True)

    def _report_every_second(self) -> None:
        """Counters towards the parent from their own thread: a stuck landing never freezes the metrics."""
        while not self._finished.wait(1.0):
            self._report(final=False)

    def stop(self) -> None:
        self.stopping.set()

    def _stop_receiving(self) -> None:
        self.receiver.stopping.set()
        self.receiver.join(timeout=5)
        self.receiver.drain_all()  # what the kernel already accepted for us is accepted too

    # --- watermarks ---------------------------------------------------------------------------
    def landed_through_us(self) -> int | None:
        """Every flow with a window time before this is durable (never goes backwards); None: no position.

        ``timestamp_source: receive``: the wall clock, held back by whatever is still queued, so an
        idle process keeps advancing and never blocks a window.

        ``timestamp_source: export``: the clock is the exporters'. A process has a position on it
        only while some exporter sends to it (the slowest one sending, see
        :meth:`_export_clock_us`) or flows are still queued. A process that never received a packet
        (another SO_REUSEPORT process got the traffic) or whose exporters went quiet returns None
        and publishes no heartbeat: after ``pipeline.instance_timeout_seconds`` it is not live, so
        it neither holds windows open nor claims windows complete on the wall clock.
        """
        use_export = self.cfg.ingest.timestamp_source == "export"
        for _ in range(200):
            mark = self._export_clock_us() if use_export else time.time_ns() // 1000
            if self.receiver.pending == BUSY and self.receiver.is_alive():
                time.sleep(0.001)
                continue
            # Upstream stages first: a batch moving downstream is always visible in one of them
            # (the spool comes before the queue: a spooled batch is queued, then leaves the spool).
            stages = (self.fairq.oldest_stamp(), self._spool_oldest_us(), self.flowq.oldest_us())
            oldest = [s for s in stages if s is not None]
            candidates = [s for s in (mark, *oldest) if s is not None]
            if not candidates:
                return None
            self._landed_through_us = max(self._landed_through_us, min(candidates))
            break
        return self._landed_through_us or None

    def _spool_oldest_us(self) -> int | None:
        return self.flowq.spool.oldest_us() if self.flowq.spool is not None else None

    def _heartbeat(self) -> None:
        self.loop.heartbeat(self.instance, self.landed_through_us)

    def _report(self, final: bool) -> None:
        self.stats.queue_depth = self.flowq.depth
        self.stats.interfaces = interface_metrics.snapshot(self.decoder.interface_counters.latest)
        self.stats.sample_level, self.stats.drop_level = self.flowq.levels()
        pending = self.decoder.stats
        self.stats.template_pending_sets, self.stats.template_pending_bytes = pending.pending, pending.pending_bytes
        if self.flowq.spool is not None:
            self.stats.spool_flows, self.stats.spool_bytes = self.flowq.spool.flows, self.flowq.spool.bytes
        if self.report is not None:
            self.report(self.stats.snapshot(), final)


def run_worker(cfg: FlowLensConfig, index: int, instance: str, channel, log_level: str, load_slots=None,
               stats_path: Path | None = None, switch_slots=None) -> None:  # fmt: skip
    """Entry point of a receiving process (multiprocessing target)."""
    logging.basicConfig(level=log_level, format=f"%(asctime)s flowlens-ingest[w{index}] %(levelname)s %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent turns Ctrl-C into an orderly stop
    _drain_when_parent_dies()
    # The receive thread shares the GIL with decoding: a shorter switch interval lets it drain the
    # socket promptly instead of waiting up to 5 ms behind a decode call.
    sys.setswitchinterval(0.0005)

    parent = os.getppid()

    def report(snapshot: dict, final: bool) -> None:
        channel.put({"worker": index, "snapshot": snapshot, "final": final})
        if final and stats_path is not None and os.getppid() != parent:  # the supervisor is gone
            stats_file.replace_part(stats_path, str(index), snapshot)

    try:
        worker = Worker(cfg, index, instance, report, load_slots, switch_slots)
    except Exception as exc:
        log.error("worker %d cannot start: %s", index, exc)
        channel.put({"worker": index, "error": str(exc)})
        raise SystemExit(3) from exc
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    channel.put({"worker": index, "ready": True, "pid": os.getpid()})
    worker.run()
    # Writer threads may still wait on a dead landing (a pool timeout): the final report is all the
    # parent needs, so deliver it and leave without joining them.
    channel.close()
    channel.join_thread()
    logging.shutdown()
    os._exit(0)


def _drain_when_parent_dies() -> None:
    """Linux: get SIGTERM (an orderly drain) if the supervising parent is killed outright."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
