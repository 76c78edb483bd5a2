"""The stack's Kafka: one KRaft node (broker + controller) run from Maven Central jars with Java 17.

Apache Kafka is packaged neither by Debian nor by PyPI. The broker is ``kafka.Kafka`` in
``org.apache.kafka:kafka_2.13``; a generated pom plus ``mvn dependency:copy-dependencies`` gives the
classpath (cached per version under ``<state_dir>/kafka/jars-<version>``; Maven's own cache is
``~/.m2``). Kafka 4 is KRaft-only: the log directory is formatted once with
``kafka.tools.StorageTool format --standalone``. Layout under ``<state_dir>``: ``kafka/`` (pom, jars,
server.properties, log4j2.properties, cluster.id, ``data/``), ``logs/kafka.log``, ``run/kafka.pid``.
"""

from __future__ import annotations

import base64
import logging
import shutil
import subprocess
import uuid
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

from flowlens_dagster.stack import process
from flowlens_dagster.stack.settings import kafka_heap_mb, kafka_settings, kafka_topics, render
from ingest.config import FlowLensConfig

NAME = "kafka"
LOG4J_VERSION = "2.24.3"  # the log4j2 that kafka 4.1 depends on; adds its slf4j 1.x binding
POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>flowlens.local</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>{version}</version>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""
# Quiet broker: warnings and errors only, plus the one line saying the server started.
LOG4J2 = """status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = INFO
"""


class Paths:
    def __init__(self, cfg: FlowLensConfig) -> None:
        self.root = cfg.state_dir / "kafka"
        self.jars = self.root / f"jars-{cfg.kafka.version}"
        self.pom_dir = self.root / "pom"
        self.properties = self.root / "server.properties"
        self.log4j = self.root / "log4j2.properties"
        self.cluster_id = self.root / "cluster.id"
        self.data = self.root / "data"
        self.log = cfg.state_dir / "logs" / "kafka.log"
        self.pidfile = cfg.state_dir / "run" / "kafka.pid"

    @property
    def marker(self) -> str:
        # The java command line ends with this project's server.properties path.
        return str(self.properties)


def install(cfg: FlowLensConfig) -> None:
    """Java and Maven from Debian, then the broker jars from Maven Central (once per version)."""
    process.ensure_apt_packages({"java": "openjdk-17-jre-headless", "mvn": "maven"})
    paths = Paths(cfg)
    done = paths.jars / ".complete"
    if done.exists():
        return
    paths.pom_dir.mkdir(parents=True, exist_ok=True)
    (paths.pom_dir / "pom.xml").write_text(POM.format(version=cfg.kafka.version, log4j=LOG4J_VERSION))
    process.log(f"downloading org.apache.kafka:kafka_2.13:{cfg.kafka.version} and dependencies (Maven Central)")
    result = subprocess.run(
        [
            "mvn", "-q", "-B", "dependency:copy-dependencies", "-DincludeScope=runtime",
            f"-DoutputDirectory={paths.jars}",
        ],
        cwd=paths.pom_dir, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise process.StackError(
            f"mvn could not fetch the Kafka {cfg.kafka.version} jars:\n{(result.stdout + result.stderr)[-2000:]}\n"
            "Check network access to Maven Central, or set kafka.version (FLOWLENS_KAFKA__VERSION) "
            "to a published org.apache.kafka:kafka_2.13 version."
        )
    done.write_text(cfg.kafka.version + "\n")


def java_argv(
    cfg: FlowLensConfig, main_class: str, *args: str, log4j: Path | None = None, heap_mb: int | None = None
) -> list[str]:
    """The JVM command line running ``main_class`` from the installed jars (``log4j``: its log config)."""
    paths = Paths(cfg)
    heap = heap_mb or kafka_heap_mb()
    return [
        shutil.which("java") or "java",
        f"-Xms{min(512, heap)}m",
        f"-Xmx{heap}m",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j or paths.log4j}",
        "-cp",
        f"{paths.jars}/*",
        main_class,
        *args,
    ]


def _cluster_id(paths: Paths) -> str:
    # An id starting with "-" reads as an option to kafka-storage's parser, so formatting never
    # succeeded with one and it is safe to replace (Kafka's own generator avoids them likewise).
    if not paths.cluster_id.exists() or paths.cluster_id.read_text().startswith("-"):
        paths.cluster_id.write_text(new_cluster_id() + "\n")
    return paths.cluster_id.read_text().strip()


def new_cluster_id() -> str:
    """Kafka's Uuid text form (16 random bytes, URL-safe base64, no padding), never starting with "-"."""
    while True:
        raw = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not raw.startswith("-"):
            return raw


def configure(cfg: FlowLensConfig) -> None:
    """Write server.properties and the log4j config; format the log directory the first time."""
    paths = Paths(cfg)
    paths.data.mkdir(parents=True, exist_ok=True)
    header = "# Generated by flowlens stack up from flowlens_dagster/stack/settings.py (seed §4.4)\n"
    paths.properties.write_text(header + render(kafka_settings(cfg, str(paths.data)), sep="="))
    paths.log4j.write_text(LOG4J2)
    if (paths.data / "meta.properties").exists():
        return
    process.log(f"formatting Kafka log directory {paths.data}")
    result = subprocess.run(
        java_argv(
            cfg, "kafka.tools.StorageTool", "format", "--standalone", "-t", _cluster_id(paths),
            "-c", str(paths.properties),
        ),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise process.StackError(
            f"formatting {paths.data} failed:\n{(result.stdout + result.stderr)[-2000:]}\n"
            f"If the directory holds data from another cluster, remove {paths.data} and run stack up again."
        )


def running_pid(cfg: FlowLensConfig) -> int | None:
    paths = Paths(cfg)
    return process.running_pid(paths.pidfile, paths.marker)


QUIET = logging.getLogger("flowlens.stack.kafka.client")
QUIET.addHandler(logging.NullHandler())
QUIET.propagate = False


def admin(cfg: FlowLensConfig) -> AdminClient:
    # librdkafka prints every refused connection to stderr while the broker starts; route its log
    # to a silent logger (health answers come back as return values, not log lines).
    return AdminClient({"bootstrap.servers": cfg.kafka.bootstrap_servers, "socket.timeout.ms": 3000, "logger": QUIET})


def _broker_ready(cfg: FlowLensConfig) -> bool:
    try:
        return bool(admin(cfg).list_topics(timeout=2).brokers)
    except KafkaException:
        return False


def start(cfg: FlowLensConfig, timeout: float = 120.0) -> bool:
    paths = Paths(cfg)
    if (pid := running_pid(cfg)) is not None:
        process.wait_running(NAME, pid, paths.marker, lambda: _broker_ready(cfg), timeout, paths.log)
        return False
    host, port = cfg.kafka.servers[0]
    process.check_port_free(host, port, NAME, "kafka.bootstrap_servers")
    process.check_port_free(host, cfg.kafka.controller_port, f"{NAME} controller", "kafka.controller_port")
    process.log(f"starting {NAME} on {host}:{port} (controller {cfg.kafka.controller_port})")
    argv = java_argv(cfg, "kafka.Kafka", str(paths.properties))
    process.start_and_wait(NAME, argv, paths.log, paths.pidfile, paths.marker, lambda: _broker_ready(cfg), timeout)
    return True


def ensure_topics(cfg: FlowLensConfig, timeout: float = 30.0) -> list[str]:
    """Create the scaling model's topics if missing and (re)apply their settings. Returns the names created."""
    client = admin(cfg)
    wanted = kafka_topics(cfg)
    metadata = client.list_topics(timeout=10)
    if len(metadata.brokers) < cfg.kafka.replication:
        raise process.StackError(
            f"Kafka at {cfg.kafka.bootstrap_servers} has {len(metadata.brokers)} broker(s) up; topics need "
            f"{cfg.kafka.replication} (kafka.replication_factor): start the others or lower the replication"
        )
    existing = metadata.topics
    created = []
    new = [
        NewTopic(name, num_partitions=parts, replication_factor=cfg.kafka.replication, config=conf)
        for name, (parts, conf) in wanted.items()
        if name not in existing
    ]
    for name, future in (client.create_topics(new, operation_timeout=timeout) if new else {}).items():
        try:
            future.result()
            created.append(name)
            process.log(f"created topic {name}")
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    grow = {
        name: NewPartitions(name, parts)
        for name, (parts, _) in wanted.items()
        if name in existing and len(existing[name].partitions) < parts
    }
    for future in (client.create_partitions(list(grow.values())) if grow else {}).values():
        future.result()
    resources = [
        ConfigResource(
            ResourceType.TOPIC,
            name,
            incremental_configs=[
                ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in conf.items()
            ],
        )
        for name, (_, conf) in wanted.items()
        if name in existing
    ]
    for future in (client.incremental_alter_configs(resources) if resources else {}).values():
        future.result()
    return created


def describe_topics(cfg: FlowLensConfig) -> dict[str, dict[str, str | int]]:
    """Partition count, replicas, retention, cleanup policy and min.insync.replicas of each topic that exists."""
    client = admin(cfg)
    metadata = client.list_topics(timeout=5).topics
    names = [name for name in kafka_topics(cfg) if name in metadata]
    if not names:
        return {}
    futures = client.describe_configs([ConfigResource(ResourceType.TOPIC, n) for n in names])
    out: dict[str, dict[str, str | int]] = {}
    for resource, future in futures.items():
        entries = future.result()
        partitions = metadata[resource.name].partitions
        out[resource.name] = {
            "partitions": len(partitions),
            "replicas": min(len(p.replicas) for p in partitions.values()),
            "retention.ms": entries["retention.ms"].value,
            "cleanup.policy": entries["cleanup.policy"].value,
            "min.insync.replicas": entries["min.insync.replicas"].value,
        }
    return out


def health(cfg: FlowLensConfig) -> tuple[bool, str]:
    try:
        metadata = admin(cfg).list_topics(timeout=3)
    except KafkaException as exc:
        return False, f"cannot reach Kafka at {cfg.kafka.bootstrap_servers}: {exc}"
    if not metadata.brokers:
        return False, f"no broker answered at {cfg.kafka.bootstrap_servers}"
    missing = [name for name in kafka_topics(cfg) if name not in metadata.topics]
    note = f"; missing topics {', '.join(missing)} (run flowlens stack up)" if missing else ""
    return not missing, f"Kafka at {cfg.kafka.bootstrap_servers} ({len(metadata.topics)} topics{note})"


def up(cfg: FlowLensConfig) -> None:
    install(cfg)
    configure(cfg)
    start(cfg)
    ensure_topics(cfg)


def down(cfg: FlowLensConfig) -> bool:
    paths = Paths(cfg)
    # SIGTERM is Kafka's controlled shutdown; it can take a while to flush and close logs.
    return process.stop(paths.pidfile, paths.marker, NAME, timeout=60)


def data_dir(cfg: FlowLensConfig) -> Path:
    return Paths(cfg).data
