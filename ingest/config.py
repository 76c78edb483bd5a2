"""FlowLens configuration: one YAML file shaped like the scaling model's §7.2, plus connections.

Resolution order (later wins): built-in defaults, the YAML file (``--config``, ``$FLOWLENS_CONFIG``
or ``flowlens.yaml`` in the working directory when present), then environment variables named
``FLOWLENS_`` + the key path in upper case joined by ``__``, for example::

    FLOWLENS_MODE=standard
    FLOWLENS_POSTGRES__PORT=55432
    FLOWLENS_BACKPRESSURE__INGESTION__SAMPLE_RATE=5
    FLOWLENS_INGEST__ALLOWED_EXPORTERS='["10.0.0.0/8", "127.0.0.1"]'   # lists/maps as JSON or YAML

Invalid configuration raises :class:`ConfigError` whose message names each bad key, the value
given and what is allowed. ``flowlens.example.yaml`` at the project root documents every key.

This module lives in ``ingest/`` because the ingest daemon (which never imports Dagster) needs it
first; the pipeline and the CLI import it from here.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ingest.window import WINDOW_MINUTES

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIX = "FLOWLENS_"
NON_CONFIG_ENV_PREFIX = "FLOWLENS_TEST_"  # test-harness switches, not configuration keys
Mode = Literal["minimal", "standard", "full", "auto"]


class ConfigError(ValueError):
    """Configuration that cannot be used; the message says which key, which value, what is allowed."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --- §7.2 thresholds -------------------------------------------------------------------------
class KafkaThresholds(_Section):
    enable_at_flows_per_sec: int = Field(10_000, ge=0)
    disable_at_flows_per_sec: int = Field(5_000, ge=0)  # hysteresis
    burst_threshold_flows_per_sec: int = Field(30_000, ge=0)
    burst_duration_trigger_seconds: int = Field(30, ge=1)
    # auto mode (not in §7.2): the rate compared with enable/disable is averaged over this many
    # seconds, and a landing is kept at least min_dwell_seconds before switching back (a burst
    # switches to Kafka at once, whatever the dwell).
    rate_window_seconds: int = Field(60, ge=1)
    min_dwell_seconds: int = Field(120, ge=0)

    @model_validator(mode="after")
    def _hysteresis(self) -> KafkaThresholds:
        if self.disable_at_flows_per_sec > self.enable_at_flows_per_sec:
            raise ValueError(
                f"disable_at_flows_per_sec ({self.disable_at_flows_per_sec}) must not exceed "
                f"enable_at_flows_per_sec ({self.enable_at_flows_per_sec})"
            )
        if self.burst_threshold_flows_per_sec < self.enable_at_flows_per_sec:
            raise ValueError(
                f"burst_threshold_flows_per_sec ({self.burst_threshold_flows_per_sec}) is below "
                f"enable_at_flows_per_sec ({self.enable_at_flows_per_sec}): a burst is a rate above the enable rate"
            )
        return self


class RedisThresholds(_Section):
    enable_at_flows_per_sec: int = Field(10_000, ge=0)
    enable_at_concurrent_users: int = Field(20, ge=0)
    enable_at_api_p99_ms: int = Field(200, ge=1)
    enable_for_websocket: bool = True
    # auto mode (not in §7.2): Redis is left only after no trigger held this long; the API checks every
    # check_seconds (ingest/scaling/redis_rule.py)
    min_dwell_seconds: int = Field(120, ge=0)
    check_seconds: float = Field(10.0, gt=0)


class PostgresThresholds(_Section):
    enable_async_commit_at_flows_per_sec: int = Field(5_000, ge=0)
    enable_batching_at_flows_per_sec: int = Field(1_000, ge=0)
    batch_size_low: int = Field(100, ge=1)
    batch_size_high: int = Field(1_000, ge=1)
    batch_timeout_ms: int = Field(100, ge=1)


class Thresholds(_Section):
    kafka: KafkaThresholds = KafkaThresholds()
    redis: RedisThresholds = RedisThresholds()
    postgresql: PostgresThresholds = PostgresThresholds()


# --- §7.2 backpressure -----------------------------------------------------------------------
class IngestionBackpressure(_Section):
    max_queue_depth: int = Field(100_000, ge=1)
    sample_at_queue_depth: int = Field(50_000, ge=1)
    sample_rate: int = Field(10, ge=1)  # keep 1 flow in N while sampling
    drop_at_queue_depth: int = Field(100_000, ge=1)
    # FlowLens additions: the limits also follow the daemon's measured rate (README "Backpressure"):
    # sample/drop once the queue holds this many seconds of traffic, with the counts above as floors.
    # 0 = the counts alone. The model's counts are 2 s and 4 s of its 25,000 flows/s instance.
    sample_at_queue_seconds: float = Field(2.0, ge=0)
    drop_at_queue_seconds: float = Field(4.0, ge=0)
    queue_ceiling_flows: int = Field(4_000_000, ge=1)  # memory bound on the rate-following limits

    @model_validator(mode="after")
    def _ordered(self) -> IngestionBackpressure:
        if not self.sample_at_queue_depth <= self.drop_at_queue_depth <= self.max_queue_depth:
            raise ValueError(
                "need sample_at_queue_depth <= drop_at_queue_depth <= max_queue_depth, got "
                f"{self.sample_at_queue_depth} / {self.drop_at_queue_depth} / {self.max_queue_depth}"
            )
        if self.sample_at_queue_seconds > self.drop_at_queue_seconds:
            raise ValueError("need sample_at_queue_seconds <= drop_at_queue_seconds")
        return self


class KafkaBackpressure(_Section):
    max_acceptable_lag_seconds: int = Field(300, ge=1)  # resume below this
    pause_at_lag_seconds: int = Field(600, ge=1)
    alert_at_lag_seconds: int = Field(180, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> KafkaBackpressure:
        if not self.alert_at_lag_seconds <= self.pause_at_lag_seconds:
            raise ValueError("alert_at_lag_seconds must be <= pause_at_lag_seconds")
        if not self.max_acceptable_lag_seconds <= self.pause_at_lag_seconds:
            raise ValueError("max_acceptable_lag_seconds must be <= pause_at_lag_seconds")
        return self


class PostgresPool(_Section):
    pool_size: int = Field(50, ge=1)
    pool_overflow: int = Field(20, ge=0)
    pool_timeout_seconds: float = Field(30, gt=0)


class Backpressure(_Section):
    ingestion: IngestionBackpressure = IngestionBackpressure()
    kafka: KafkaBackpressure = KafkaBackpressure()
    postgresql: PostgresPool = PostgresPool()


# --- §7.2 autoscaling (read by the future mode switcher / capacity planner) ------------------
class ScaleRule(_Section):
    min_instances: int = Field(2, ge=1)
    max_instances: int = Field(16, ge=1)
    scale_up_at_cpu_percent: int | None = Field(None, ge=1, le=100)
    scale_down_at_cpu_percent: int | None = Field(None, ge=0, le=100)
    scale_up_at_lag_seconds: int | None = Field(None, ge=1)
    scale_down_at_lag_seconds: int | None = Field(None, ge=0)
    scale_up_at_latency_p99_ms: int | None = Field(None, ge=1)
    scale_down_at_latency_p99_ms: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> ScaleRule:
        if self.min_instances > self.max_instances:
            raise ValueError(f"min_instances ({self.min_instances}) > max_instances ({self.max_instances})")
        return self


class Autoscaling(_Section):
    ingestion: ScaleRule = ScaleRule(scale_up_at_cpu_percent=70, scale_down_at_cpu_percent=30)
    enrichment: ScaleRule = ScaleRule(scale_up_at_lag_seconds=60, scale_down_at_lag_seconds=10)
    api: ScaleRule = ScaleRule(max_instances=8, scale_up_at_latency_p99_ms=500, scale_down_at_latency_p99_ms=100)


# --- connections -----------------------------------------------------------------------------
class PostgresConn(_Section):
    host: str = "127.0.0.1"
    port: int = Field(55432, ge=1, le=65535)  # not 5432: never collide with a system PostgreSQL
    database: str = "flowlens"
    user: str = "flowlens"
    password: str = "flowlens"

    def dsn(self, database: str | None = None) -> str:
        return (
            f"host={self.host} port={self.port} dbname={database or self.database} "
            f"user={self.user} password={self.password}"
        )

    def url(self, driver: str = "postgresql+psycopg", database: str | None = None) -> str:
        return f"{driver}://{self.user}:{self.password}@{self.host}:{self.port}/{database or self.database}"


class KafkaConn(_Section):
    bootstrap_servers: str = "127.0.0.1:59092"  # host:port of every broker, comma-separated
    controller_port: int = Field(59093, ge=1, le=65535)
    version: str = "4.1.1"  # org.apache.kafka:kafka_2.13 on Maven Central
    raw_topic: str = "flows.raw"
    enriched_topic: str = "flows.enriched"
    changes_topic: str = "changes.detected"
    raw_partitions: int = Field(6, ge=1)
    # Brokers of the cluster; the local stack starts one KRaft node per bootstrap address (README "Kafka cluster").
    brokers: int = Field(1, ge=1)
    replication_factor: int = Field(0, ge=0)  # replicas per partition; 0 = min(3, brokers)
    min_insync_replicas: int = Field(0, ge=0)  # replicas acks=all waits for; 0 = 2 with replication >= 3, else 1

    @property
    def servers(self) -> list[tuple[str, int]]:
        """The bootstrap addresses as (host, port), in the order given."""
        out = []
        for item in self.bootstrap_servers.split(","):
            host, _, port = item.strip().rpartition(":")
            out.append((host.strip("[]"), int(port)))
        return out

    @property
    def replication(self) -> int:
        return self.replication_factor or min(3, self.brokers)

    @property
    def min_isr(self) -> int:
        return self.min_insync_replicas or (2 if self.replication >= 3 else 1)

    @field_validator("bootstrap_servers")
    @classmethod
    def _addresses(cls, value: str) -> str:
        for item in value.split(","):
            host, _, port = item.strip().rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{item.strip()!r} is not host:port (list brokers as host:port,host:port,...)")
        return value

    @model_validator(mode="after")
    def _replicas(self) -> KafkaConn:
        if self.replication > self.brokers:
            raise ValueError(
                f"kafka.replication_factor ({self.replication}) is more than kafka.brokers ({self.brokers}): "
                "a partition cannot have more replicas than the cluster has brokers; lower the one or raise the other"
            )
        if self.min_isr > self.replication:
            raise ValueError(
                f"kafka.min_insync_replicas ({self.min_isr}) is more than "
                f"kafka.replication_factor ({self.replication}): no write with acks=all could ever succeed"
            )
        return self


class RedisConn(_Section):
    host: str = "127.0.0.1"
    port: int = Field(56379, ge=1, le=65535)
    db: int = Field(0, ge=0, le=15)  # §5.2 database 0: enrichment cache
    maxmemory: str = "auto"  # 'auto' = a fraction of RAM chosen by the stack; or e.g. '4gb'

    def url(self, db: int | None = None) -> str:
        return f"redis://{self.host}:{self.port}/{self.db if db is None else db}"


class GeoIPConfig(_Section):
    city_db: Path | None = None  # GeoLite2/GeoIP2 City .mmdb
    asn_db: Path | None = None  # GeoLite2/GeoIP2 ASN .mmdb


class DNSConfig(_Section):
    enabled: bool = True
    nameservers: list[str] = []  # empty = /etc/resolv.conf
    port: int = Field(53, ge=1, le=65535)
    timeout_seconds: float = Field(1.0, gt=0)
    concurrency: int = Field(64, ge=1)
    lookups_per_second: int = Field(500, ge=1)  # budget for cache misses (the scaling model: ~500/s)
    positive_ttl_seconds: int = Field(3600, ge=1)
    negative_ttl_seconds: int = Field(300, ge=1)
    # a window stops starting lookups after this long; the rest wait for later windows (counted)
    max_seconds_per_window: float = Field(5.0, gt=0)
    lookup_scopes: list[str] = ["private", "shared", "public"]  # address scopes worth a PTR query


class EnrichmentConfig(_Section):
    inventory_file: Path | None = None  # CSV or YAML describing the estate
    geo_ttl_seconds: int = Field(86_400, ge=1)
    asset_ttl_seconds: int = Field(300, ge=1)
    redis_retry_seconds: float = Field(30.0, gt=0)  # after a Redis failure, use memory this long


class ListenAddress(_Section):
    host: str = "0.0.0.0"
    port: int = Field(ge=1, le=65535)


class IngestConfig(_Section):
    listen: list[ListenAddress] = [ListenAddress(port=2055), ListenAddress(port=4739), ListenAddress(port=6343)]
    processes: int = Field(0, ge=0)  # receiving processes per port (SO_REUSEPORT); 0 = one per core
    socket_receive_buffer_bytes: int = Field(64 * 1024 * 1024, ge=65536)
    allowed_exporters: list[str] = ["0.0.0.0/0", "::/0"]  # addresses or CIDRs
    default_sampling_rate: int = Field(1, ge=1)
    sampling_rate_overrides: dict[str, int] = {}  # exporter address/CIDR -> rate when none is exported
    timestamp_source: Literal["receive", "export"] = "receive"  # which clock assigns the window
    tunnel_flow: Literal["inner", "outer"] = "inner"  # VXLAN/GRE in sampled headers: which packet is the flow
    batch_max_flows: int = Field(65_536, ge=1)
    batch_max_seconds: float = Field(1.0, gt=0)
    heartbeat_seconds: float = Field(5.0, gt=0)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(9109, ge=0, le=65535)  # 0 = no metrics endpoint
    instance_id: str = ""  # empty = hostname:pid
    # Daemon internals: receive queue, landing, shutdown (README "Ingest").
    max_datagram_bytes: int = Field(9_216, ge=512, le=65_535)  # longer datagrams: counted as oversized
    receive_queue_packets: int = Field(50_000, ge=16)  # fair per-exporter packet queue bound
    decode_batch_packets: int = Field(2048, ge=1)  # packets per decode_many call (at most; linger bounds the wait)
    decode_linger_ms: float = Field(20.0, ge=0)  # wait this long for a fuller decode batch
    receive_coalesce_ms: float = Field(2.0, ge=0, le=50)  # pause after a small drain: fewer wakeups
    kafka_message_max_flows: int = Field(4096, ge=1)  # flows per flows.raw message (broker limit 1 MB)
    kafka_read_slack_seconds: float = Field(60.0, ge=0)  # read_window looks this far past the window end
    landing_backoff_max_seconds: float = Field(30.0, gt=0)  # exponential backoff cap (the scaling model §8.3)
    drain_timeout_seconds: float = Field(120.0, gt=0)  # SIGTERM: how long to try landing what is queued
    landing_writers: int = Field(2, ge=1)  # concurrent PostgreSQL COPYs per receiving process
    # Disk spool for what the memory queue cannot hold (an outage longer than it covers); 0 = none.
    # Per receiving process; about 40-80 bytes a flow (LZ4 Arrow), so 4 GiB is 10 min at 50k flows/s.
    spool_max_bytes: int = Field(4 << 30, ge=0)
    spool_dir: Path | None = None  # default: <state_dir>/ingest/spool (one subdirectory per process)
    template_wait_seconds: float = Field(300.0, gt=0)  # data waiting longer for its template is dropped (counted)
    template_state_file: str = "templates-{worker}.state"  # under state_dir/ingest; {worker} = process index

    @property
    def process_count(self) -> int:
        """Receiving processes the daemon runs: ``processes``, or one per core when 0."""
        return self.processes or os.cpu_count() or 1

    @field_validator("allowed_exporters", mode="before")
    @classmethod
    def _cidrs(cls, value: Any) -> Any:
        for item in value or []:
            try:
                ipaddress.ip_network(str(item), strict=False)
            except ValueError as exc:
                raise ValueError(f"{item!r} is not an IP address or CIDR") from exc
        return value

    @field_validator("sampling_rate_overrides", mode="before")
    @classmethod
    def _override_keys(cls, value: Any) -> Any:
        for key in value or {}:
            try:
                ipaddress.ip_network(str(key), strict=False)
            except ValueError as exc:
                raise ValueError(f"{key!r} is not an IP address or CIDR") from exc
        return value


class PipelineConfig(_Section):
    partition_start: str = ""  # ISO date/time of the first 5-minute partition; empty = chosen once, persisted
    partition_lookback_days: int = Field(7, ge=1)  # the persisted start's distance back (flows.raw keeps 7 days)
    window_minutes: Literal[WINDOW_MINUTES] = WINDOW_MINUTES  # fixed: ingest.window
    grace_seconds: int = Field(30, ge=0)
    instance_timeout_seconds: int = Field(120, ge=1)  # a silent ingest instance stops holding windows
    max_runs_per_tick: int = Field(12, ge=1)
    dependency_gone_after_windows: int = Field(12, ge=1)
    lake_dir: Path | None = None  # default: <state_dir>/lake
    retention_days: int = Field(30, ge=1)
    produce_enriched: bool = False  # also produce enriched flows to flows.enriched (Kafka modes)
    # A window is read, enriched and written to the lake this many flows at a time: its memory
    # is bounded by this, not by the window (README "Scaling out").
    chunk_flows: int = Field(1_000_000, ge=1)
    shards: int = Field(1, ge=1, le=1024)  # lake files split by hash(client, server); flow_stats per shard
    # 1: a window run's steps run in its one process; N > 1: Dagster's multiprocess executor runs up
    # to N steps at once, e.g. flow_stats' shard steps side by side (README "Dagster across workers")
    step_processes: int = Field(1, ge=1, le=256)
    # DuckDB memory of one asset-check query over the lake: beyond it DuckDB spills to
    # <lake_dir>/.spill, so the checks' memory does not grow with the window (README "Data quality").
    check_memory_mb: int = Field(1024, ge=64)
    sensor_interval_seconds: int = Field(30, ge=5)  # how often the watermark sensor ticks
    sensor_lookback_minutes: int = Field(180, ge=5)  # automatic catch-up reaches back this far; older = backfill
    # lag above backpressure.kafka.pause_at_lag_seconds: catch-up runs of up to this many windows,
    # DNS lookups and flows.enriched deferred, until lag is below max_acceptable_lag_seconds
    catch_up_windows_per_run: int = Field(36, ge=1)
    window_retries: int = Field(2, ge=0)  # a failed window step is retried in its run (RetryPolicy)
    window_retry_delay_seconds: float = Field(5.0, ge=0)  # first retry delay, doubled each time
    window_max_attempts: int = Field(3, ge=1)  # runs of a failed window the sensor requests, then alerts


class DagsterConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(53000, ge=1, le=65535)


class MonitoringConfig(_Section):
    """Prometheus, Alertmanager and the pipeline's metrics exporter of the local stack (full mode)."""

    host: str = "127.0.0.1"
    prometheus_port: int = Field(59090, ge=1, le=65535)
    alertmanager_port: int = Field(59094, ge=1, le=65535)
    exporter_port: int = Field(9110, ge=1, le=65535)  # `flowlens metrics`: the pipeline's /metrics
    scrape_interval_seconds: float = Field(15.0, gt=0)
    evaluation_interval_seconds: float = Field(15.0, gt=0)
    retention: str = "15d"  # Prometheus --storage.tsdb.retention.time
    alert_webhook_url: str = ""  # Alertmanager sends alerts here (webhook); empty = shown in its UI only


class ApiConfig(_Section):
    """The query API (``flowlens api``): listen address, Redis databases and limits (scaling model §5.2, §7.1)."""

    host: str = "127.0.0.1"
    port: int = Field(58080, ge=1, le=65535)
    workers: int = Field(2, ge=1, le=64)  # uvicorn worker processes
    cache_db: int = Field(2, ge=0, le=15)  # §5.2 database 2: API cache
    session_db: int = Field(3, ge=0, le=15)  # §5.2 database 3: sessions and rate limits
    topology_ttl_seconds: int = Field(300, ge=1)  # topology:full, topology:<group>|<filters>
    search_ttl_seconds: int = Field(60, ge=1)  # search:<q>
    impact_ttl_seconds: int = Field(300, ge=1)  # impact:<id>:depth-<n>
    asset_ttl_seconds: int = Field(60, ge=1)  # asset:<addr> (asset detail; not a key of the model)
    session_ttl_seconds: int = Field(86_400, ge=60)  # session:<token>
    rate_limit_window_seconds: int = Field(60, ge=1)  # ratelimit:user:<id>, ratelimit:ip:<addr>
    rate_limit_per_user: int = Field(1_200, ge=1)  # requests per window
    rate_limit_per_address: int = Field(2_400, ge=1)
    login_failures_allowed: int = Field(5, ge=1)  # then each further failure waits longer
    login_lockout_seconds: int = Field(900, ge=1)  # how long failures are remembered
    max_page: int = Field(5_000, ge=1)  # largest `limit` a list accepts
    impact_max_nodes: int = Field(10_000, ge=1)  # fan-out limit of an impact query
    full_topology_prefix_v4: int = Field(24, ge=8, le=32)  # the full map groups addresses by subnet
    full_topology_prefix_v6: int = Field(64, ge=16, le=128)
    pg_pool_size: int = Field(8, ge=1)  # connections per worker process


class FlowLensConfig(_Section):
    mode: Mode = "minimal"
    state_dir: Path = PROJECT_ROOT / ".flowlens"
    thresholds: Thresholds = Thresholds()
    backpressure: Backpressure = Backpressure()
    autoscaling: Autoscaling = Autoscaling()
    postgres: PostgresConn = PostgresConn()
    kafka: KafkaConn = KafkaConn()
    redis: RedisConn = RedisConn()
    geoip: GeoIPConfig = GeoIPConfig()
    dns: DNSConfig = DNSConfig()
    enrichment: EnrichmentConfig = EnrichmentConfig()
    ingest: IngestConfig = IngestConfig()
    pipeline: PipelineConfig = PipelineConfig()
    dagster: DagsterConfig = DagsterConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    api: ApiConfig = ApiConfig()

    @property
    def uses_kafka(self) -> bool:
        """Kafka is part of the mode: always (standard, full) or when the rate calls for it (auto)."""
        return self.mode in ("standard", "full", "auto")

    @property
    def uses_redis(self) -> bool:
        """Redis is part of the mode; auto mode may need it, so it runs (caches fall back to memory)."""
        return self.mode in ("standard", "full", "auto")

    @property
    def lake_dir(self) -> Path:
        return self.pipeline.lake_dir or self.state_dir / "lake"


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """FLOWLENS_A__B=v -> {"a": {"b": v}}; values are parsed as YAML so numbers, bools, lists work."""
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == "FLOWLENS_CONFIG" or name.startswith(NON_CONFIG_ENV_PREFIX):
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return tree


def _describe(exc: ValidationError, origin: str) -> str:
    lines = [f"invalid FlowLens configuration ({origin}):"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        value = err.get("input")
        shown = "(missing)" if err["type"] == "missing" else repr(value)
        if isinstance(value, dict):
            shown = "{...}"
        allowed = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            allowed = "unknown key; see flowlens.example.yaml for the keys that exist"
        env = _env_name(err["loc"])
        lines.append(f"  {key} = {shown}: {allowed} (file key flowlens.{key}, or env {env})")
    return "\n".join(lines)


def _env_name(loc: tuple) -> str:
    """The variable that overrides the key at ``loc``; inside a list, the whole list (as JSON)."""
    path = []
    for part in loc:
        if isinstance(part, int):
            return ENV_PREFIX + "__".join(path) + "='[...]' (the whole list, as JSON)"
        path.append(str(part).upper())
    return ENV_PREFIX + "__".join(path)


def default_config_path(environ: dict[str, str] | None = None) -> Path | None:
    explicit = (os.environ if environ is None else environ).get("FLOWLENS_CONFIG")
    if explicit:
        return Path(explicit)
    local = Path.cwd() / "flowlens.yaml"
    return local if local.exists() else None


def load_config(path: str | Path | None = None, environ: dict[str, str] | None = None) -> FlowLensConfig:
    """Load, merge and validate the configuration; raise ConfigError with an actionable message."""
    environ = dict(os.environ if environ is None else environ)
    file_path = Path(path) if path else default_config_path(environ)
    data: dict[str, Any] = {}
    if file_path is not None:
        if not file_path.exists():
            raise ConfigError(f"config file {file_path} does not exist (given by --config or FLOWLENS_CONFIG)")
        try:
            loaded = yaml.safe_load(file_path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {file_path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict) or not isinstance(loaded.get("flowlens", {}), dict):
            raise ConfigError(f"config file {file_path} must hold a mapping under the top-level key 'flowlens'")
        data = loaded.get("flowlens", {}) or {}
    data = _deep_merge(data, _env_overrides(environ))
    try:
        return FlowLensConfig.model_validate(data)
    except ValidationError as exc:
        origin = f"{file_path} + environment" if file_path else "defaults + environment"
        raise ConfigError(_describe(exc, origin)) from None
