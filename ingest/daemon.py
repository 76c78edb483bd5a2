"""``flowlens ingest``: the UDP ingest daemon (receive, decode, land), one process per core.

The parent process supervises: it starts ``ingest.processes`` receiving processes (0 = one per
core), each with its own SO_REUSEPORT socket on every listen address (see :mod:`ingest.worker`),
restarts one that dies, aggregates their counters on the Prometheus endpoint
(``ingest.metrics_port``) and, with ``--stats-file``, in a JSON file rewritten every second.

SIGTERM or SIGINT drains: the workers stop reading, decode and land everything already received
(including what waits in the kernel socket buffers), publish a final watermark, save templates
and exit; the parent exits 0 when all of them did. It never imports Dagster.

Examples::

    flowlens ingest                                  # ports 2055, 4739 and 6343, mode from config
    flowlens ingest --listen 127.0.0.1:9995 --processes 2 --mode standard
    FLOWLENS_INGEST__ALLOWED_EXPORTERS='["10.0.0.0/8"]' flowlens ingest
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import queue
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from ingest import stats_file
from ingest.backpressure import DaemonLoad
from ingest.config import ConfigError, FlowLensConfig, ListenAddress, load_config
from ingest.land import landing_name
from ingest.metrics import DaemonCollector, MetricsPortError, serve
from ingest.receive import open_udp_socket
from ingest.scaling.shared import SharedDecision
from ingest.worker import run_worker

log = logging.getLogger("flowlens.ingest")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="flowlens ingest", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="FlowLens YAML config (default: $FLOWLENS_CONFIG or ./flowlens.yaml)")
    p.add_argument("--listen", action="append", metavar="HOST:PORT", help="listen address (repeatable)")
    p.add_argument("--processes", type=int, help="receiving processes (default ingest.processes; 0 = cores)")
    p.add_argument("--mode", choices=["minimal", "standard", "full", "auto"], help="override the mode (the landing)")
    p.add_argument("--metrics-port", type=int, help="Prometheus port (0 = none)")
    p.add_argument("--instance-id", help="watermark instance name (default hostname:pid)")
    p.add_argument("--stats-file", type=Path, help="write aggregated counters as JSON here every second")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def apply_args(cfg: FlowLensConfig, args: argparse.Namespace) -> FlowLensConfig:
    """Command-line overrides on top of the config (validated like the file)."""
    data = cfg.model_dump()
    ing = data["ingest"]
    if args.listen:
        ing["listen"] = [_listen(item) for item in args.listen]
    if args.processes is not None:
        ing["processes"] = args.processes
    if args.metrics_port is not None:
        ing["metrics_port"] = args.metrics_port
    if args.instance_id:
        ing["instance_id"] = args.instance_id
    if args.mode:
        data["mode"] = args.mode
    try:
        return FlowLensConfig.model_validate(data)
    except ValueError as exc:  # pydantic's ValidationError: name the option and what is allowed
        raise ConfigError(f"invalid command-line option: {exc}") from None


def _listen(item: str) -> dict[str, Any]:
    host, _, port = item.rpartition(":")
    if not port.isdigit():
        raise ConfigError(f"--listen {item!r}: expected HOST:PORT, e.g. 0.0.0.0:2055 or [::]:4739")
    return ListenAddress(host=host.strip("[]") or "0.0.0.0", port=int(port)).model_dump()


class Supervisor:
    """Starts, watches and stops the receiving processes; aggregates their metrics."""

    def __init__(self, cfg: FlowLensConfig, stats_file: Path | None = None, log_level: str = "INFO"):
        self.cfg = cfg
        self.stats_file = stats_file
        self.log_level = log_level
        self.count = cfg.ingest.process_count
        self.instance = cfg.ingest.instance_id or f"{socket.gethostname()}:{os.getpid()}"
        self.collector = DaemonCollector([a.port for a in cfg.ingest.listen])
        self.ctx = mp.get_context("spawn")
        self.channel = self.ctx.Queue()
        self.load_slots = DaemonLoad.shared(self.count, self.ctx)  # the backpressure limits are the daemon's
        self.switch_slots = SharedDecision.shared(self.count, self.ctx)  # so is auto mode's landing
        self.procs: dict[int, mp.Process] = {}
        self.ready: set[int] = set()  # workers whose sockets are bound
        self.stopping = False

    def check_ports(self) -> None:
        """Fail fast, with a clear message, when a listen address cannot be bound."""
        for addr in self.cfg.ingest.listen:
            try:
                open_udp_socket(addr.host, addr.port, 65536).close()
            except OSError as exc:
                raise ConfigError(
                    f"cannot listen on UDP {addr.host}:{addr.port}: {exc.strerror}; pick another port with "
                    "--listen HOST:PORT or ingest.listen, or stop the program holding it"
                ) from None

    def start(self, index: int) -> None:
        instance = f"{self.instance}/w{index}"
        args = (self.cfg, index, instance, self.channel, self.log_level, self.load_slots, self.stats_file,
                self.switch_slots)  # fmt: skip
        proc = self.ctx.Process(target=run_worker, args=args, name=f"flowlens-ingest-w{index}")
        proc.start()
        self.procs[index] = proc

    def run(self) -> int:
        self.check_ports()
        try:  # before any worker starts: a daemon that cannot be monitored does not start
            serve(self.collector, self.cfg.ingest.metrics_host, self.cfg.ingest.metrics_port)
        except MetricsPortError as exc:
            raise ConfigError(str(exc)) from None
        for i in range(self.count):
            self.start(i)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        log.info("ingest %s: %d process(es), landing in %s, listening on %s", self.instance, self.count,
                 landing_name(self.cfg),
                 ", ".join(f"{a.host}:{a.port}" for a in self.cfg.ingest.listen))  # fmt: skip
        failures = 0
        next_write = 0.0
        while self.procs:
            self._drain_channel(timeout=0.2)
            for index, proc in list(self.procs.items()):
                if proc.is_alive():
                    continue
                proc.join()
                del self.procs[index]
                self.ready.discard(index)
                if not self.stopping:
                    failures += 1
                    log.error("worker %d exited with %s; restarting it", index, proc.exitcode)
                    if failures > 10 * self.count:
                        log.error("workers keep failing; giving up (see the errors above)")
                        self.stop()
                        return 1
                    time.sleep(min(failures, 5))
                    self.start(index)
            if self.stats_file and time.monotonic() >= next_write:
                self.write_stats()
                next_write = time.monotonic() + 1.0
        self._drain_channel(timeout=0.1)
        if self.stats_file:
            self.write_stats()
        totals = self.collector.totals()
        log.info("ingest stopped: %d flows landed, %d sampled, dropped %s", totals["flows_landed"],
                 totals["sampled"], dict(totals["flows_dropped"]) or "none")  # fmt: skip
        return 0

    def _on_signal(self, signum, frame) -> None:
        log.info("signal %d: draining", signum)
        self.stop()

    def stop(self) -> None:
        self.stopping = True
        for proc in self.procs.values():
            if proc.is_alive() and proc.pid:
                os.kill(proc.pid, signal.SIGTERM)

    def _drain_channel(self, timeout: float) -> None:
        try:
            msg = self.channel.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            self._handle(msg)
            try:
                msg = self.channel.get_nowait()
            except queue.Empty:
                return

    def _handle(self, msg: dict[str, Any]) -> None:
        if "snapshot" in msg:
            self.collector.update(str(msg["worker"]), msg["snapshot"], final=msg["final"])
        elif "ready" in msg:
            self.ready.add(msg["worker"])
            if len(self.ready) == self.count and self.stats_file:
                self.write_stats()
        elif "error" in msg:
            log.error("worker %s: %s", msg["worker"], msg["error"])

    def write_stats(self) -> None:
        parts = {key: stats_file.jsonable(snap) for key, snap in self.collector.parts().items()}
        alive = sum(p.is_alive() for p in self.procs.values())
        extra = {"instance": self.instance, "pid": os.getpid(), "workers_ready": len(self.ready),
                 "workers_alive": alive, "stopping": self.stopping}  # fmt: skip
        stats_file.write(self.stats_file, parts, extra)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s flowlens-ingest %(levelname)s %(message)s")
    try:
        cfg = apply_args(load_config(args.config), args)
        return Supervisor(cfg, args.stats_file, args.log_level).run()
    except ConfigError as exc:
        print(f"flowlens ingest: {exc}", file=sys.stderr)
        return 2
