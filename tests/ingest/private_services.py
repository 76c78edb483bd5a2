"""Throwaway service instances for tests that stop a service (never the shared stack's)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivatePostgres:
    """A PostgreSQL cluster in a temporary directory on a free port, started and stopped at will."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="flowlens-ingest-pg-"))
        self.data = self.root / "data"
        self.port = free_tcp_port()
        self.user = "postgres" if os.geteuid() == 0 else None  # initdb refuses to run as root
        try:
            if self.user:
                shutil.chown(self.root, self.user)
            self._run([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-locale"])
        except Exception:
            shutil.rmtree(self.root, ignore_errors=True)
            raise

    def _run(self, argv: list[str]) -> None:
        result = subprocess.run(argv, user=self.user, capture_output=True, text=True, check=False, cwd=self.root)
        if result.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {result.stderr[-1500:]}")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.root / "log"),
                   "-w", "start"])  # fmt: skip

    def stop(self) -> None:
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])

    def create_database(self, user: str, password: str, database: str) -> None:
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as c:
            c.execute(f"CREATE ROLE {user} LOGIN SUPERUSER PASSWORD '{password}'")
            c.execute(f"CREATE DATABASE {database} OWNER {user}")

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"], user=self.user,
                           capture_output=True, check=False)  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)


class PrivateKafka:
    """A one-node KRaft broker from the stack's jars, on free ports, in a temporary directory."""

    def __init__(self, cfg) -> None:
        from flowlens_dagster.stack.settings import kafka_settings, render

        self.root = Path(tempfile.mkdtemp(prefix="flowlens-ingest-kafka-"))
        self.jars = cfg.state_dir / "kafka" / f"jars-{cfg.kafka.version}"
        if not (self.jars / ".complete").exists():
            raise RuntimeError(f"Kafka jars missing in {self.jars}: run `flowlens stack up --mode full` once")
        self.port, controller = free_tcp_port(), free_tcp_port()
        kafka = cfg.kafka.model_copy(
            update={"bootstrap_servers": f"127.0.0.1:{self.port}", "controller_port": controller}
        )
        self.cfg = cfg.model_copy(update={"kafka": kafka})
        self.properties = self.root / "server.properties"
        self.properties.write_text(render(kafka_settings(self.cfg, str(self.root / "data"), cores=2), sep="="))
        self.proc: subprocess.Popen | None = None
        cluster = "flowlens" + uuid.uuid4().hex[:14]
        try:
            self._java("kafka.tools.StorageTool", "format", "--standalone", "-t", cluster, "-c", str(self.properties))
        except Exception:
            shutil.rmtree(self.root, ignore_errors=True)
            raise

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _argv(self, main: str, *args: str) -> list[str]:
        return [shutil.which("java") or "java", "-Xmx512m", "-cp", f"{self.jars}/*", main, *args]

    def _java(self, main: str, *args: str) -> None:
        result = subprocess.run(self._argv(main, *args), capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{main} failed: {(result.stdout + result.stderr)[-1500:]}")

    def start(self, timeout: float = 90) -> None:
        from confluent_kafka.admin import AdminClient

        log = (self.root / "broker.log").open("a")
        self.proc = subprocess.Popen(self._argv("kafka.Kafka", str(self.properties)), stdout=log, stderr=log)
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                admin.list_topics(timeout=2)
                return
            except Exception:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.5)
        raise RuntimeError(f"private Kafka did not start; see {self.root / 'broker.log'}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def create_topic(self, name: str, partitions: int) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        admin.create_topics([NewTopic(name, partitions, 1)])[name].result(30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            topic = admin.list_topics(name, timeout=5).topics.get(name)
            if topic and not topic.error and all(p.leader >= 0 for p in topic.partitions.values()):
                return
            time.sleep(0.2)

    def destroy(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)
