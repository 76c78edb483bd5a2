"""Dagster resources: connections to PostgreSQL, the Parquet lake, the landing, enrichment, Kafka, Redis.

Each resource is a ``dg.ConfigurableResource`` whose fields come from the FlowLens config
(``ingest.config.load_config``); a field whose ``FLOWLENS_*`` environment variable is set is
bound through ``dg.EnvVar`` so the Dagster UI shows where the value came from. Connections are
opened in methods, never at import or construction, so loading the code location needs no service.

Which value wins: :func:`build_resources` loads the config once (file, then ``FLOWLENS_*``
environment), when the code location loads; the landing and enrichment resources carry that whole
config as a JSON field (``settings``) and only their connection fields, which Dagster resolves
from ``dg.EnvVar`` at run time, are applied over it. Nothing reads the config again during a run.

Resource keys (fixed; assets and asset checks ask for them by name): ``postgres``, ``lake``,
``landing``, ``enrichment``, ``kafka``, ``redis``, ``pipeline``. Assets never call ``load_config()``:
what they need from the config reaches them as resource fields, set once in :func:`build_resources`.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg

from ingest.config import FlowLensConfig, PipelineConfig, load_config

POSTGRES, LAKE, LANDING, ENRICHMENT, KAFKA, REDIS = "postgres", "lake", "landing", "enrichment", "kafka", "redis"
PIPELINE = "pipeline"
ENRICHED_DIR = "enriched_flows"
STAGING_DIR = "flow_stats_staging"  # flow_stats shards staged by their steps (assets.flow_stats_shards)


class PostgresResource(dg.ConfigurableResource):
    """The FlowLens PostgreSQL database (schema ``flowlens``)."""

    host: str = "127.0.0.1"
    port: int = 55432
    database: str = "flowlens"
    user: str = "flowlens"
    password: str = "flowlens"

    def dsn(self) -> str:
        """psycopg conninfo string."""
        return f"host={self.host} port={self.port} dbname={self.database} user={self.user} password={self.password}"

    def sqlalchemy_url(self, driver: str = "postgresql+psycopg") -> str:
        """SQLAlchemy URL (Great Expectations and pandas take this form)."""
        return f"{driver}://{self.user}:{self.password}@{self.host}:{self.port}/{self.database}"

    def connect(self, **kwargs: Any) -> psycopg.Connection:
        """A new psycopg 3 connection; use it as a context manager (commits on success)."""
        return psycopg.connect(self.dsn(), **kwargs)


class LakeResource(dg.ConfigurableResource):
    """The Parquet lake: ``<root>/enriched_flows/date=YYYY-MM-DD/window=HHMM/*.parquet`` (hive-style),
    and how a window is cut on its way there (``pipeline.chunk_flows``, ``pipeline.shards``)."""

    root: str
    chunk_flows: int = 1_000_000  # flows read, enriched and written at a time: bounds a window's memory
    shards: int = 1  # window files split by hash(client_addr, server_addr); flow_stats aggregates per shard
    check_memory_mb: int = 1024  # DuckDB memory of one asset-check query; beyond it, spilled to spill_dir()

    def window_dir(self, window_start: datetime, asset: str = ENRICHED_DIR) -> Path:
        """Directory holding one window's file set."""
        ts = window_start.astimezone(UTC)
        return Path(self.root) / asset / f"date={ts:%Y-%m-%d}" / f"window={ts:%H%M}"

    def spill_dir(self) -> Path:
        """Where the checks' DuckDB queries spill what exceeds ``check_memory_mb`` (no window glob matches it)."""
        return Path(self.root) / ".spill"

    def window_glob(self, window_start: datetime | None = None, asset: str = ENRICHED_DIR) -> str:
        """Glob of one window's files, or of the whole asset when ``window_start`` is None (for DuckDB)."""
        if window_start is None:
            return str(Path(self.root) / asset / "*" / "*" / "*.parquet")
        return str(self.window_dir(window_start, asset) / "*.parquet")


class KafkaResource(dg.ConfigurableResource):
    """Kafka (standard/full modes). ``enabled`` is false in the minimal mode: producers are then None."""

    bootstrap_servers: str = "127.0.0.1:59092"
    enabled: bool = False
    raw_topic: str = "flows.raw"
    enriched_topic: str = "flows.enriched"
    changes_topic: str = "changes.detected"
    produce_enriched: bool = False  # pipeline.produce_enriched: enriched_flows also produces to enriched_topic

    def producer(self, **extra: Any):
        """A confluent-kafka Producer, or None when Kafka is not part of this mode."""
        if not self.enabled:
            return None
        from confluent_kafka import Producer

        return Producer({"bootstrap.servers": self.bootstrap_servers, "linger.ms": 5, **extra})


class RedisResource(dg.ConfigurableResource):
    """Redis (standard/full modes) for caches and the ``changes:topology`` pub/sub channel.

    In auto mode (``follow_api``) Redis runs but the pipeline publishes on it only while the query API
    uses it, by the API's run-time decision (:meth:`publishing`, ``ingest.scaling.redis_use``).
    """

    url: str = "redis://127.0.0.1:56379/0"
    enabled: bool = False
    api_cache_db: int = 2  # the query API's cache database: topology_changes bumps its generation there
    follow_api: bool = False  # auto mode: publish only while an API process uses Redis
    check_seconds: float = 10.0  # thresholds.redis.check_seconds: how often the API records its decision

    def publishing(self, postgres: PostgresResource) -> bool:
        """Whether the pipeline publishes on Redis now: the mode's choice, or in auto mode the API's."""
        if not self.enabled or not self.follow_api:
            return self.enabled
        from ingest.scaling.redis_use import api_uses_redis

        with postgres.connect() as conn:
            return api_uses_redis(conn, self.check_seconds)

    def client(self):
        """A redis-py client, or None when Redis is not part of this mode."""
        if not self.enabled:
            return None
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=5)


class PipelineResource(dg.ConfigurableResource):
    """The ``pipeline`` settings the assets and jobs act on (defaults: ``ingest.config.PipelineConfig``)."""

    dependency_gone_after_windows: int = PipelineConfig.model_fields["dependency_gone_after_windows"].default
    retention_days: int = PipelineConfig.model_fields["retention_days"].default


class LandingResource(dg.ConfigurableResource):
    """Where the ingest daemon lands flows: Kafka ``flows.raw`` (standard/full) or ``flow_raw`` (minimal)."""

    mode: str = "minimal"
    postgres: PostgresResource
    kafka: KafkaResource
    settings: str = ""  # the whole FlowLens config as JSON, set by build_resources; empty = defaults

    def flowlens_config(self) -> FlowLensConfig:
        """The FlowLens config this resource was built from, with its connection fields applied."""
        return _apply(_settings(self.settings), self.mode, self.postgres, self.kafka)

    def open(self):
        """An open ``ingest.land.base.Landing`` (close it when done)."""
        from ingest.land import open_landing

        return open_landing(self.flowlens_config())


class EnrichmentResource(dg.ConfigurableResource):
    """Builds the enrichment helper's ``Inventory`` and ``Enricher`` (GeoIP, DNS, inventory) for a run."""

    mode: str = "minimal"
    postgres: PostgresResource
    redis: RedisResource
    inventory_file: str = ""  # empty: no inventory (direction falls back to SYN and port rules)
    dns_enabled: bool = True
    settings: str = ""  # the whole FlowLens config as JSON, set by build_resources; empty = defaults

    def flowlens_config(self) -> FlowLensConfig:
        """The FlowLens config this resource was built from, with its own fields applied."""
        cfg = _apply(_settings(self.settings), self.mode, self.postgres, None)
        return cfg.model_copy(
            update={
                "dns": cfg.dns.model_copy(update={"enabled": self.dns_enabled}),
                "enrichment": cfg.enrichment.model_copy(update={"inventory_file": self.inventory_file or None}),
            }
        )

    def inventory(self, log=None):
        """The asset inventory from ``inventory_file`` (invalid rows logged and skipped), or None."""
        if not self.inventory_file:
            return None
        from assets.enrich import load_inventory

        inventory, errors = load_inventory(self.inventory_file)
        for line, message in errors:
            if log is not None:
                log.warning(f"{self.inventory_file}:{line}: {message} (row skipped)")
        return inventory

    def enricher(self, inventory=None, dns: bool = True):
        """An ``assets.enrich.Enricher`` (caches in Redis when the mode has Redis, in process otherwise);
        ``dns=False`` defers reverse DNS (catch-up runs)."""
        from assets.enrich import Enricher

        cfg = self.flowlens_config()
        if not dns:
            cfg = cfg.model_copy(update={"dns": cfg.dns.model_copy(update={"enabled": False})})
        redis_url = self.redis.url if self.redis.enabled else None
        return Enricher.from_config(cfg, redis_url=redis_url, inventory=inventory)


def _settings(text: str) -> FlowLensConfig:
    """The config a resource carries (the one ``build_resources`` loaded), never a second load."""
    return FlowLensConfig.model_validate_json(text) if text else FlowLensConfig()


def _apply(cfg: FlowLensConfig, mode: str, pg: PostgresResource | None, kafka: KafkaResource | None) -> FlowLensConfig:
    update: dict[str, Any] = {"mode": mode}
    if pg is not None:
        update["postgres"] = cfg.postgres.model_copy(
            update={"host": pg.host, "port": pg.port, "database": pg.database, "user": pg.user, "password": pg.password}
        )
    if kafka is not None:
        update["kafka"] = cfg.kafka.model_copy(
            update={"bootstrap_servers": kafka.bootstrap_servers, "raw_topic": kafka.raw_topic}
        )
    return cfg.model_copy(update=update)


def _env(name: str, value: Any) -> Any:
    """``dg.EnvVar(name)`` when the variable is set (so Dagster shows its origin), else the config value."""
    if name not in os.environ:
        return value
    return dg.EnvVar.int(name) if isinstance(value, int) and not isinstance(value, bool) else dg.EnvVar(name)


def build_resources(cfg: FlowLensConfig | None = None, use_env: bool = True) -> dict[str, dg.ConfigurableResource]:
    """Every resource, keyed as assets expect, from ``cfg`` (default: ``load_config()``)."""
    cfg = cfg or load_config()
    settings = cfg.model_dump_json()
    env = _env if use_env else (lambda _name, value: value)
    pg = PostgresResource(
        host=env("FLOWLENS_POSTGRES__HOST", cfg.postgres.host),
        port=env("FLOWLENS_POSTGRES__PORT", cfg.postgres.port),
        database=env("FLOWLENS_POSTGRES__DATABASE", cfg.postgres.database),
        user=env("FLOWLENS_POSTGRES__USER", cfg.postgres.user),
        password=env("FLOWLENS_POSTGRES__PASSWORD", cfg.postgres.password),
    )
    kafka = KafkaResource(
        bootstrap_servers=env("FLOWLENS_KAFKA__BOOTSTRAP_SERVERS", cfg.kafka.bootstrap_servers),
        enabled=cfg.uses_kafka,
        raw_topic=cfg.kafka.raw_topic,
        enriched_topic=cfg.kafka.enriched_topic,
        changes_topic=cfg.kafka.changes_topic,
        produce_enriched=cfg.pipeline.produce_enriched,
    )
    redis = RedisResource(
        url=cfg.redis.url(),
        enabled=cfg.uses_redis,
        api_cache_db=cfg.api.cache_db,
        follow_api=cfg.mode == "auto",
        check_seconds=cfg.thresholds.redis.check_seconds,
    )
    mode = env("FLOWLENS_MODE", cfg.mode)
    return {
        POSTGRES: pg,
        LAKE: LakeResource(
            root=str(cfg.lake_dir),
            chunk_flows=cfg.pipeline.chunk_flows,
            shards=cfg.pipeline.shards,
            check_memory_mb=cfg.pipeline.check_memory_mb,
        ),
        LANDING: LandingResource(mode=mode, postgres=pg, kafka=kafka, settings=settings),
        ENRICHMENT: EnrichmentResource(
            mode=mode,
            settings=settings,
            postgres=pg,
            redis=redis,
            inventory_file=str(cfg.enrichment.inventory_file or ""),
            dns_enabled=cfg.dns.enabled,
        ),
        KAFKA: kafka,
        REDIS: redis,
        PIPELINE: PipelineResource(
            dependency_gone_after_windows=env(
                "FLOWLENS_PIPELINE__DEPENDENCY_GONE_AFTER_WINDOWS", cfg.pipeline.dependency_gone_after_windows
            ),
            retention_days=env("FLOWLENS_PIPELINE__RETENTION_DAYS", cfg.pipeline.retention_days),
        ),
    }
