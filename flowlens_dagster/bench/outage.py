"""``flowlens bench ingest --outage-seconds N``: a long landing outage under steady traffic.

The daemon (minimal mode, PostgreSQL landing, the configured levels and disk spool) reaches the
stack's PostgreSQL through a TCP relay run by the bench; the outage cuts every connection through
the relay and refuses new ones for ``--outage-seconds``, like a network partition, without
stopping a service anyone else uses. ``flowlens generate`` sends at ``--outage-rate`` from a few
seconds before the outage until a few seconds after it; then the bench waits until the queue and
the spool have landed and compares what was sent with what landed (rows in ``flow_raw``) and what
the daemon counted (sampled, dropped). Figures: ``outage_sent_flows``, ``outage_landed_flows``,
``outage_counted_flows``, ``outage_unaccounted_flows`` (sent - landed - counted: the target is 0),
``outage_spool_peak_bytes``; the baseline is the memory queue alone (the drop level of the
model's counts), labelled.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from flowlens_dagster.bench.ingest import DaemonRun, daemon_env, free_udp_port
from ingest.config import PROJECT_ROOT, FlowLensConfig

LEAD_SECONDS = 5.0  # traffic before and after the outage


class Relay:
    """A TCP relay to ``target`` that can cut its connections and refuse new ones (an outage)."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.down = threading.Event()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="relay-accept", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.down.is_set():
                client.close()
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(1 << 16):
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Start the outage: close every relayed connection and refuse new ones."""
        self.down.set()
        with self._lock:
            conns, self._conns = self._conns, []
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def restore(self) -> None:
        self.down.clear()

    def close(self) -> None:
        self.cut()
        self.listener.close()


def run(cfg: FlowLensConfig, workdir: Path, processes: int, outage: float, rate: float,
        log: Callable[[str], None]) -> tuple[dict, dict, dict]:  # fmt: skip
    """``cfg``: minimal mode on a throwaway database. Returns (figures, baseline, config)."""
    relay = Relay((cfg.postgres.host, cfg.postgres.port))
    relayed = cfg.model_copy(update={"postgres": cfg.postgres.model_copy(update={"port": relay.port})})
    port = free_udp_port()
    settings = {"processes": processes, "spool_dir": str(workdir / "spool")}
    daemon = DaemonRun(daemon_env(relayed, workdir, port, settings), workdir)
    peak = {"spool_bytes": 0, "queue_depth": 0}
    try:
        daemon.wait_ready(processes)
        seconds = outage + 2 * LEAD_SECONDS
        argv = [sys.executable, "-m", "flowlens_dagster.cli", "generate", "--target", f"127.0.0.1:{port}",
                "--rate", str(rate), "--duration", str(seconds), "--versions", "9,10", "--exporters", "8"]  # fmt: skip
        gen = subprocess.Popen(argv, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
        time.sleep(LEAD_SECONDS)
        log(f"outage: cutting PostgreSQL for {outage:.0f} s at {rate:,.0f} flows/s")
        relay.cut()
        _watch(daemon, outage, peak, log)
        relay.restore()
        log("outage: PostgreSQL reachable again")
        sent = json.loads(gen.communicate(timeout=seconds + 300)[0].strip().splitlines()[-1])
        back = time.monotonic()
        time.sleep(2.0)  # the last datagrams decoded and counted
        daemon.wait_for(lambda s: s.get("queue_depth") == 0 and s.get("spool_flows") == 0, 1800,
                        "queue and spool landed")  # fmt: skip
        recovery = time.monotonic() - back
        final = daemon.terminate()
    finally:
        daemon.kill()
        relay.close()
    with psycopg.connect(cfg.postgres.dsn()) as conn:
        rows = conn.execute("SELECT count(*) FROM flowlens.flow_raw").fetchone()[0]
    counted = final["sampled"] + sum(final["flows_dropped"].values())
    figures = {
        "outage_sent_flows": sent["flows"], "outage_landed_flows": rows, "outage_counted_flows": counted,
        "outage_unaccounted_flows": sent["flows"] - rows - counted, "outage_spool_peak_bytes": peak["spool_bytes"],
        "outage_queue_peak_flows": peak["queue_depth"], "outage_recovery_seconds": round(recovery, 1),
    }  # fmt: skip
    ing = cfg.backpressure.ingestion
    baseline = {"outage_counted_flows": max(sent["flows"] - ing.drop_at_queue_depth, 0)}
    config = {"outage": {"seconds": outage, "rate": rate, "sent_per_s": sent["flows_per_s"], "landing": "postgres",
                         "how": "TCP relay to PostgreSQL cut (connections closed, new ones refused)",
                         "daemon_landed": final["flows_landed"], "daemon_spooled": final["spooled"],
                         "daemon_dropped": final["flows_dropped"], "daemon_sampled": final["sampled"],
                         "spool_max_bytes": cfg.ingest.spool_max_bytes,
                         "baseline": "memory queue alone: everything past the model's drop level is lost"}}  # fmt: skip
    return figures, baseline, config


def _watch(daemon: DaemonRun, seconds: float, peak: dict[str, Any], log: Callable[[str], None]) -> None:
    """Wait out the outage, keeping the peaks of the queue and the spool; a line a minute."""
    end = time.monotonic() + seconds
    next_line = time.monotonic() + 60
    while time.monotonic() < end:
        time.sleep(1.0)
        stats = daemon.stats()
        for key in peak:
            peak[key] = max(peak[key], int(stats.get(key, 0)))
        if time.monotonic() >= next_line:
            next_line += 60
            log(f"outage: queue {stats.get('queue_depth', 0):,} flows, spool {stats.get('spool_flows', 0):,} flows "
                f"/ {stats.get('spool_bytes', 0) / 1e6:,.0f} MB, sampled {stats.get('sampled', 0):,}")  # fmt: skip
