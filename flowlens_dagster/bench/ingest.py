"""``flowlens bench ingest [--json]``: highest sustained zero-loss rate, generator -> daemon -> landing.

For each landing (Kafka, then PostgreSQL in the minimal mode) the bench starts ``flowlens ingest``
(2 receiving processes on this machine) and a Python UDP sender in another process, then searches
the rate: double while a trial passes, then bisect between the last pass and the first failure.

A trial sends v9/IPFIX packets (pre-built by ``flowlens generate``'s model, 8 exporters) at a target
rate for ``--seconds`` and passes only when (as the issue defines it):

* loss < 0.1%: flows landed (Kafka delivery reports / PostgreSQL commits) against flows sent, so
  kernel socket drops, fairness drops and backpressure sampling all count as loss;
* the socket queue is almost empty when sending stops (at most 0.05 s of traffic), so a big
  receive buffer cannot hide a slow collector;
* everything received is landed within 2 s after sending stops (the daemon kept up).

The same search runs against ``nfcapd`` (nfdump's C collector, counting the flows it wrote with
``nfdump -I``) on the same stream in the same run: that is the baseline. The scaling model's 25,000 flows/s
per ingestion instance is printed beside it. Kafka trials use a throwaway topic; PostgreSQL trials
a throwaway database ``flowlens_bench`` (dropped at the end).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowlens_dagster.bench.report import report
from ingest import mmsg
from ingest.config import PROJECT_ROOT, FlowLensConfig, load_config
from ingest.metrics import udp_socket_stats
from ingest.services import require

SEED_INSTANCE_FLOWS_PER_S = 25_000
WARM_UP_RATE, WARM_UP_SECONDS = 500_000, 4.0  # flows/s and seconds sent before the first trial


# --- the sender (its own process) ------------------------------------------------------------
def _sender_main(target: tuple[str, int], versions: tuple[int, ...], pool_flows: int, conn) -> None:
    """Build a packet pool once, then serve send requests (rate, seconds) from the parent."""
    from ingest.tools.generate import Generator, Plan, Sender

    gen = Generator(Plan(flows=pool_flows, versions=versions, exporters=8, seed=42, chunk=2000))
    pool: list[tuple[str, bytes, int]] = []
    for exporter, packets, _n in gen.steps(lambda: time.time_ns() // 1000):
        flows_each = _flows_in(packets, exporter.version)
        pool += [(exporter.source, p, f) for p, f in zip(packets, flows_each, strict=True)]
    sender = Sender(target, [e.source for e in gen.exporters])
    for sock in sender.socks.values():
        sock.connect(target)  # the kernel keeps the route: cheaper sends than an address each time
    bursts = _bursts(pool, sender.socks)
    conn.send({"pool_packets": len(pool), "pool_flows": pool_flows})
    while True:
        request = conn.recv()
        if request is None:
            break
        rate, seconds = request
        conn.send(_send(bursts, rate, seconds))
    sender.close()


def _flows_in(packets: list[bytes], version: int) -> list[int]:
    """Data records per packet (v5: header count; v9/IPFIX: the encoder put one data set per packet)."""
    out = []
    for pkt in packets:
        if version == 5:
            out.append(pkt[2] << 8 | pkt[3])
        elif version == 9:
            count = pkt[2] << 8 | pkt[3]  # records incl. template records
            has_template = pkt[20] == 0 and pkt[21] == 0
            out.append(count - int(has_template))
        else:
            # IPFIX has no record count: data set length / record size, from the set headers.
            out.append(_ipfix_records(pkt))
    return out


def _ipfix_records(pkt: bytes) -> int:
    from ingest.tools.encode import IPFIX_IPV4_FIELDS

    record = sum(length for _, length in IPFIX_IPV4_FIELDS)
    pos, total = 16, 0
    while pos + 4 <= len(pkt):
        set_id, length = pkt[pos] << 8 | pkt[pos + 1], pkt[pos + 2] << 8 | pkt[pos + 3]
        if length < 4:
            break
        if set_id >= 256:
            total += (length - 4) // record
        pos += length
    return total


@dataclass
class _Burst:
    """Up to :data:`BURST` consecutive pool packets of one exporter, prepared for one sendmmsg."""

    send: Callable[[], int]
    packets: int
    flows: int


BURST = 32  # packets sent between two looks at the clock


def _bursts(pool: list[tuple[str, bytes, int]], socks: dict) -> list[_Burst]:
    """Cut the pool (runs of packets per exporter) into bursts prepared once, sent many times
    (``socks``: the exporters' sockets, connected to the collector)."""
    bursts: list[_Burst] = []
    start = 0
    while start < len(pool):
        source = pool[start][0]
        end = start + 1
        while end < len(pool) and end - start < BURST and pool[end][0] == source:
            end += 1
        chunk = pool[start:end]
        send = mmsg.prepare(socks[source], [payload for _, payload, _ in chunk], None)
        bursts.append(_Burst(send, len(chunk), sum(flows for _, _, flows in chunk)))
        start = end
    return bursts


def _send(bursts: list[_Burst], rate: float, seconds: float) -> dict[str, Any]:
    """Send the bursts in a loop at ``rate`` flows/s for ``seconds``: whenever the sender is
    ahead of schedule by more than 0.5 ms it sleeps, otherwise it sends the next burst."""
    sent_packets = sent_flows = 0
    start = time.monotonic()
    deadline = start + seconds
    i, n = 0, len(bursts)
    while True:
        now = time.monotonic()
        if now >= deadline:
            break
        ahead = sent_flows / rate - (now - start)
        if ahead > 0.0005:
            time.sleep(ahead)
            continue
        burst = bursts[i]
        i = i + 1 if i + 1 < n else 0
        burst.send()
        sent_packets += burst.packets
        sent_flows += burst.flows
    elapsed = time.monotonic() - start
    return {"packets": sent_packets, "flows": sent_flows, "seconds": elapsed, "rate": sent_flows / elapsed}


class SenderProcess:
    def __init__(self, target: tuple[str, int], versions: tuple[int, ...], pool_flows: int = 400_000):
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_sender_main, args=(target, versions, pool_flows, child), daemon=True)
        self.proc.start()
        self.info = self.conn.recv()

    def send(self, rate: float, seconds: float) -> dict[str, Any]:
        self.conn.send((rate, seconds))
        return self.conn.recv()

    def close(self) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            self.conn.send(None)
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()


# --- collectors under test -------------------------------------------------------------------
@dataclass
class Trial:
    rate: float
    sent: int
    landed: int
    queue_at_stop: int
    drain_seconds: float
    achieved_rate: float
    passed: bool = False

    @property
    def loss(self) -> float:
        return max(self.sent - self.landed, 0) / self.sent if self.sent else 0.0


def judge(trial: Trial, bytes_per_flow: float, drain_limit: float = 2.0) -> Trial:
    queue_limit = max(256 * 1024, trial.rate * bytes_per_flow * 0.05)
    trial.passed = trial.loss < 0.001 and trial.queue_at_stop <= queue_limit and trial.drain_seconds <= drain_limit
    return trial


def free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DaemonRun:
    """``flowlens ingest`` as a subprocess with a stats file (also used by the tests)."""

    def __init__(self, env: dict[str, str], workdir: Path, extra_args: list[str] | None = None):
        workdir.mkdir(parents=True, exist_ok=True)
        stamp = time.monotonic_ns()
        self.stats_file = workdir / f"stats-{stamp}.json"
        self.log_file = workdir / f"daemon-{stamp}.log"
        self._log = self.log_file.open("w")
        argv = [sys.executable, "-m", "flowlens_dagster.cli", "ingest", "--stats-file", str(self.stats_file)]
        self.proc = subprocess.Popen([*argv, *(extra_args or [])], env=env, cwd=PROJECT_ROOT, stdout=self._log,
                                     stderr=subprocess.STDOUT)  # fmt: skip

    def stats(self) -> dict[str, Any]:
        try:
            return json.loads(self.stats_file.read_text())
        except (OSError, ValueError):
            return {}

    def wait_for(self, predicate: Callable[[dict], bool], timeout: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stats = self.stats()
            if stats and predicate(stats):
                return stats
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"ingest daemon: {what} not reached within {timeout:.0f}s; log:\n{self.log()}")

    def wait_ready(self, processes: int, timeout: float = 60) -> None:
        self.wait_for(lambda s: s.get("workers_ready") == processes, timeout, "all receiving processes ready")

    def terminate(self, timeout: float = 120) -> dict[str, Any]:
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise RuntimeError(f"ingest daemon ignored SIGTERM for {timeout:.0f}s; log:\n{self.log()}") from None
        if code != 0:
            raise RuntimeError(f"ingest daemon exited {code}; log:\n{self.log()}")
        return self.stats()

    def log(self) -> str:
        self._log.flush()
        return self.log_file.read_text()[-6000:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


def daemon_env(cfg: FlowLensConfig, state_dir: Path, port: int, settings: dict[str, Any]) -> dict[str, str]:
    """Environment running the daemon on ``cfg`` (its mode, services, topic) with ingest overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLENS_")}
    pg, bp = cfg.postgres, cfg.backpressure
    env.update(
        {
            "FLOWLENS_MODE": cfg.mode,
            "FLOWLENS_STATE_DIR": str(state_dir),
            "FLOWLENS_POSTGRES__HOST": pg.host,
            "FLOWLENS_POSTGRES__PORT": str(pg.port),
            "FLOWLENS_POSTGRES__DATABASE": pg.database,
            "FLOWLENS_POSTGRES__USER": pg.user,
            "FLOWLENS_POSTGRES__PASSWORD": pg.password,
            "FLOWLENS_KAFKA__BOOTSTRAP_SERVERS": cfg.kafka.bootstrap_servers,
            "FLOWLENS_KAFKA__RAW_TOPIC": cfg.kafka.raw_topic,
            "FLOWLENS_BACKPRESSURE__POSTGRESQL__POOL_TIMEOUT_SECONDS": str(bp.postgresql.pool_timeout_seconds),
            "FLOWLENS_BACKPRESSURE__INGESTION__SAMPLE_AT_QUEUE_DEPTH": str(bp.ingestion.sample_at_queue_depth),
            "FLOWLENS_BACKPRESSURE__INGESTION__DROP_AT_QUEUE_DEPTH": str(bp.ingestion.drop_at_queue_depth),
            "FLOWLENS_BACKPRESSURE__INGESTION__MAX_QUEUE_DEPTH": str(bp.ingestion.max_queue_depth),
            "FLOWLENS_BACKPRESSURE__INGESTION__SAMPLE_RATE": str(bp.ingestion.sample_rate),
            "FLOWLENS_BACKPRESSURE__INGESTION__SAMPLE_AT_QUEUE_SECONDS": str(bp.ingestion.sample_at_queue_seconds),
            "FLOWLENS_BACKPRESSURE__INGESTION__DROP_AT_QUEUE_SECONDS": str(bp.ingestion.drop_at_queue_seconds),
            "FLOWLENS_BACKPRESSURE__INGESTION__QUEUE_CEILING_FLOWS": str(bp.ingestion.queue_ceiling_flows),
        }
    )
    settings = {"listen": [{"host": "127.0.0.1", "port": port}], "metrics_port": 0, **settings}
    for key, value in settings.items():
        env[f"FLOWLENS_INGEST__{key.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return env


def _landed(stats: dict[str, Any]) -> int:
    return int(stats.get("flows_landed", 0))


def _received(stats: dict[str, Any]) -> int:
    return sum(stats.get("received", {}).values())


class DaemonCollector:
    """Trials against ``flowlens ingest`` (kept running across the trials of one backend)."""

    def __init__(self, cfg: FlowLensConfig, workdir: Path, processes: int):
        self.port = free_udp_port()
        settings = {"processes": processes, "heartbeat_seconds": 1.0, "batch_max_seconds": 0.2,
                    "socket_receive_buffer_bytes": 64 << 20}  # fmt: skip
        self.daemon = DaemonRun(daemon_env(cfg, workdir, self.port, settings), workdir)
        self.daemon.wait_ready(processes)

    def warm_up(self, sender: SenderProcess) -> None:
        """Bring the daemon and the broker to the state of a collector that has been running.

        Templates reach the daemon first; then a few seconds of real traffic (not counted) let
        Kafka's JIT compile its hot paths and fill the producer's and the database's pools.
        Without it the first trial measures start-up, not the sustained rate.
        """
        sender.send(20_000, 1.0)
        time.sleep(1.0)
        sender.send(WARM_UP_RATE, WARM_UP_SECONDS)
        self.daemon.wait_for(lambda s: s.get("queue_depth", 1) == 0, 30, "the warm-up traffic landed")
        time.sleep(1.0)

    def trial(self, sender: SenderProcess, rate: float, seconds: float) -> Trial:
        before = self.daemon.wait_for(lambda s: True, 10, "stats")
        sent = sender.send(rate, seconds)
        queued = udp_socket_stats([self.port])[self.port]["rx_queue"]
        stop = time.monotonic()
        last, stable_since = before, time.monotonic()
        while time.monotonic() - stop < 15:
            time.sleep(0.1)
            now = self.daemon.stats()
            settled = now.get("queue_depth", 1) == 0 and udp_socket_stats([self.port])[self.port]["rx_queue"] == 0
            if _landed(now) != _landed(last) or _received(now) != _received(last):
                last, stable_since = now, time.monotonic()
            elif settled and time.monotonic() - stable_since > 1.2:  # stats are written every second
                break
        drain = max(stable_since - stop - 1.0, 0.0)
        return Trial(rate, sent["flows"], _landed(last) - _landed(before), queued, drain, sent["rate"])

    def close(self) -> dict[str, Any]:
        try:
            return self.daemon.terminate()
        finally:
            self.daemon.kill()


class NfcapdCollector:
    """Trials against nfcapd (restarted per trial so its file holds exactly that trial's flows)."""

    def __init__(self, workdir: Path):
        self.port = free_udp_port()
        self.workdir = workdir

    def warm_up(self, sender: SenderProcess) -> None:
        pass

    def trial(self, sender: SenderProcess, rate: float, seconds: float) -> Trial:
        flowdir = Path(tempfile.mkdtemp(dir=self.workdir, prefix="nfcapd-"))
        proc = subprocess.Popen(
            ["nfcapd", "-w", str(flowdir), "-p", str(self.port), "-b", "127.0.0.1", "-B", str(64 << 20), "-t", "3600"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 10
            while not udp_socket_stats([self.port])[self.port]["sockets"] and time.monotonic() < deadline:
                time.sleep(0.05)
            warm = sender.send(2_000, 0.5)["flows"]  # templates first, as from a running exporter
            time.sleep(0.3)
            sent = sender.send(rate, seconds)
            queued = udp_socket_stats([self.port])[self.port]["rx_queue"]
            stop = time.monotonic()
            while udp_socket_stats([self.port])[self.port]["rx_queue"] and time.monotonic() - stop < 15:
                time.sleep(0.05)
            drain = time.monotonic() - stop
            counted = self._count(proc, flowdir)
        finally:
            if proc.poll() is None:
                proc.kill()
            shutil.rmtree(flowdir, ignore_errors=True)
        return Trial(rate, sent["flows"], counted - warm, queued, drain, sent["rate"])

    @staticmethod
    def _count(proc: subprocess.Popen, flowdir: Path) -> int:
        """Stop nfcapd (it writes its file) and count the flows in it."""
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        out = subprocess.run(["nfdump", "-R", str(flowdir), "-I"], capture_output=True, text=True, check=False)
        match = re.search(r"^Flows:\s+(\d+)", out.stdout, re.MULTILINE)
        return int(match.group(1)) if match else 0


def search(collector, sender: SenderProcess, start: float, limit: float, seconds: float, bytes_per_flow: float,
           log: Callable[[str], None], label: str) -> tuple[Trial | None, list[Trial]]:  # fmt: skip
    """Double the rate while trials pass, then bisect twice; return the best passing trial."""
    trials: list[Trial] = []
    best: Trial | None = None
    low, high, rate = 0.0, None, start
    while len(trials) < 8:
        trial = judge(collector.trial(sender, rate, seconds), bytes_per_flow)
        trials.append(trial)
        log(f"{label}: target {rate:,.0f}/s sent {trial.achieved_rate:,.0f}/s loss {trial.loss:.4%} "
            f"queue@stop {trial.queue_at_stop:,} B drain {trial.drain_seconds:.1f}s -> "
            f"{'pass' if trial.passed else 'FAIL'}")  # fmt: skip
        sender_limited = trial.achieved_rate < 0.95 * rate
        if trial.passed:
            low = trial.achieved_rate
            if best is None or trial.achieved_rate > best.achieved_rate:
                best = trial
            if sender_limited:
                log(
                    f"{label}: the sender reached only {trial.achieved_rate:,.0f} flows/s (CPU shared with the "
                    "collector): the highest rate measurable here, not the collector's limit"
                )
                break
        else:
            high = min(high or rate, rate)
        if high is None:
            if rate >= limit:
                break
            rate = min(rate * 2, limit)
        else:
            if high - low <= 0.1 * high or len([t for t in trials if not t.passed]) >= 3:
                break
            rate = (low + high) / 2 if low else high / 4
    return best, trials


# --- main ------------------------------------------------------------------------------------
def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="flowlens bench ingest", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--seconds", type=float, default=4.0, help="sending time per trial")
    p.add_argument("--start-rate", type=float, default=100_000)
    p.add_argument("--max-rate", type=float, default=4_000_000)
    p.add_argument("--versions", default="9,10", help="NetFlow versions of the exporters (5, 9, 10)")
    p.add_argument("--processes", type=int, default=0, help="receiving processes (0 = one per core)")
    p.add_argument("--backends", default="kafka,postgres,nfcapd", help="what to measure, comma-separated")
    p.add_argument("--config", help="FlowLens config (services)")
    p.add_argument("--cold-start-repeats", type=int, default=5, help="cold-start scenario repeats (0 = skip it)")
    p.add_argument("--cold-start-rate", type=float, default=300_000, help="cold-start sending rate (flows/s)")
    p.add_argument("--cold-start-seconds", type=float, default=8.0, help="cold-start sending time")
    p.add_argument("--outage-seconds", type=float, default=0, help="landing outage scenario length (0 = skip it)")
    p.add_argument("--outage-rate", type=float, default=50_000, help="sending rate during the outage scenario")
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    versions = tuple(int(v) for v in args.versions.split(","))
    processes = args.processes or os.cpu_count() or 1
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    require(cfg, [b for b in backends if b in ("kafka", "postgres")], "flowlens bench ingest")
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if args.json else (lambda m: print(m, flush=True))
    workdir = Path(tempfile.mkdtemp(prefix="flowlens-bench-ingest-"))
    cold: tuple[dict, dict, dict] = ({}, {}, {})
    if args.cold_start_repeats > 0:  # first, with the configured levels (the sustained search raises them)
        cold = _cold_start(cfg, workdir, processes, args, log)
    if args.outage_seconds > 0:
        outage = _outage(cfg, workdir, processes, args, log)
        cold = tuple({**a, **b} for a, b in zip(cold, outage, strict=True))
    # Seconds of traffic, not the scaling model's 50k flows: at millions of flows/s the scaling model's queue is 25 ms.
    ingestion = cfg.backpressure.ingestion.model_copy(
        update={"sample_at_queue_depth": 2_000_000, "drop_at_queue_depth": 4_000_000, "max_queue_depth": 4_000_000}
    )
    cfg = cfg.model_copy(update={"backpressure": cfg.backpressure.model_copy(update={"ingestion": ingestion})})
    results: dict[str, tuple[Trial | None, list[Trial]]] = {}
    try:
        for backend in backends:
            results[backend] = _measure(backend, cfg, workdir, versions, processes, args, log)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    figures, baseline, extra = _figures(results)
    figures.update(cold[0])
    baseline.update(cold[1])
    extra.update(cold[2])
    config = {
        "seconds_per_trial": args.seconds, "versions": list(versions), "receiving_processes": processes,
        "cores": os.cpu_count(), "exporters": 8, "sender": "Python sendmmsg loop, separate process, same cores",
        "pass_rule": "loss < 0.1%, socket queue at stop <= 0.05 s of traffic, landed within 2 s",
        "baseline": "nfcapd (nfdump 1.7.1, C) on the same stream in the same run",
        "seed_instance_flows_per_s": SEED_INSTANCE_FLOWS_PER_S, **extra,
    }  # fmt: skip
    report("ingest", figures, baseline, config, args.json)
    return 0


def _cold_start(cfg: FlowLensConfig, workdir: Path, processes: int, args, log) -> tuple[dict, dict, dict]:
    from flowlens_dagster.bench.coldstart import figures

    return _on_backend(cfg, "kafka", lambda kafka_cfg: figures(
        kafka_cfg, workdir / "cold", processes, args.cold_start_repeats, args.cold_start_rate,
        args.cold_start_seconds, log))  # fmt: skip


def _outage(cfg: FlowLensConfig, workdir: Path, processes: int, args, log) -> tuple[dict, dict, dict]:
    from flowlens_dagster.bench.outage import run

    return _on_backend(cfg, "postgres", lambda pg_cfg: run(
        pg_cfg, workdir / "outage", processes, args.outage_seconds, args.outage_rate, log))  # fmt: skip


def _on_backend(cfg: FlowLensConfig, backend: str, scenario: Callable[[FlowLensConfig], Any]) -> Any:
    """Run ``scenario`` on a throwaway topic or database of ``backend``, removed afterwards."""
    cleanup: list[Callable[[], None]] = []
    try:
        return scenario(_backend_config(cfg, backend, cleanup))
    finally:
        for step in cleanup:
            with contextlib.suppress(Exception):
                step()


def _measure(backend, cfg, workdir, versions, processes, args, log):
    port_holder: dict[str, Any] = {}
    cleanup: list[Callable[[], None]] = []
    try:
        if backend == "nfcapd":
            if not shutil.which("nfcapd"):
                log("nfcapd is not installed (apt-get install nfdump): no baseline")
                return None, []
            collector = NfcapdCollector(workdir)
        else:
            bench_cfg = _backend_config(cfg, backend, cleanup)
            collector = DaemonCollector(bench_cfg, workdir / backend, processes)
            cleanup.insert(0, lambda: port_holder.setdefault("final", collector.close()))
        sender = SenderProcess(("127.0.0.1", collector.port), versions)
        cleanup.insert(0, sender.close)
        bytes_per_flow = 1400 / 25
        collector.warm_up(sender)
        return search(collector, sender, args.start_rate, args.max_rate, args.seconds, bytes_per_flow, log, backend)
    finally:
        for step in cleanup:
            with contextlib.suppress(Exception):
                step()


def _backend_config(cfg: FlowLensConfig, backend: str, cleanup: list) -> FlowLensConfig:
    """A throwaway Kafka topic or PostgreSQL database for the trials (removed by ``cleanup``)."""
    if backend == "kafka":
        from confluent_kafka.admin import AdminClient, NewTopic

        topic = f"flows.raw.bench-{uuid.uuid4().hex[:8]}"
        admin = AdminClient({"bootstrap.servers": cfg.kafka.bootstrap_servers})
        admin.create_topics([NewTopic(topic, cfg.kafka.raw_partitions, 1)])[topic].result(30)
        time.sleep(1.0)  # partition leaders
        cleanup.append(
            lambda: [
                f.result(30) for f in admin.delete_topics([topic, f"{topic}.watermarks", f"{topic}.landed"]).values()
            ]
        )
        return cfg.model_copy(update={"mode": "standard", "kafka": cfg.kafka.model_copy(update={"raw_topic": topic})})
    import psycopg

    from flowlens_dagster.migrate import migrate
    from flowlens_dagster.stack.postgres import drop_database

    database = "flowlens_bench"
    drop_database(cfg, database)
    with psycopg.connect(cfg.postgres.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {database}")
    pg = cfg.postgres.model_copy(update={"database": database})
    bench_cfg = cfg.model_copy(update={"mode": "minimal", "postgres": pg})
    migrate(bench_cfg, log=lambda _m: None)

    cleanup.append(lambda: drop_database(cfg, database))
    return bench_cfg


def _figures(results) -> tuple[dict, dict, dict]:
    figures: dict[str, Any] = {}
    baseline: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    nfcapd = results.get("nfcapd", (None, []))[0]
    for backend, name in (("kafka", "kafka_flows_per_s"), ("postgres", "postgres_flows_per_s")):
        if backend not in results:
            continue
        best, trials = results[backend]
        figures[name] = round(best.achieved_rate) if best else 0
        figures[f"{backend}_loss_ratio"] = round(best.loss, 6) if best else None
        figures[f"{backend}_vs_seed_instance"] = round(figures[name] / SEED_INSTANCE_FLOWS_PER_S, 1)
        if nfcapd:
            baseline[name] = round(nfcapd.achieved_rate)
        extra[f"{backend}_trials"] = [
            {"target": round(t.rate), "sent_per_s": round(t.achieved_rate), "loss": round(t.loss, 6),
             "queue_at_stop": t.queue_at_stop, "drain_s": round(t.drain_seconds, 2), "pass": t.passed}
            for t in trials
        ]  # fmt: skip
    if "kafka_loss_ratio" in figures or "postgres_loss_ratio" in figures:
        figures["loss_ratio"] = max(v for k, v in figures.items() if k.endswith("_loss_ratio") and v is not None)
    if nfcapd:
        extra["nfcapd_flows_per_s"] = round(nfcapd.achieved_rate)
        extra["nfcapd_trials"] = [
            {"target": round(t.rate), "sent_per_s": round(t.achieved_rate), "loss": round(t.loss, 6), "pass": t.passed}
            for t in results["nfcapd"][1]
        ]
    return figures, baseline, extra
