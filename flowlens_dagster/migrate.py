"""``flowlens migrate``: apply the numbered SQL migrations in ``sql/`` to schema ``flowlens``.

Files are named ``NNN_what.sql`` and applied in number order, each inside its own transaction, while
holding an advisory lock so two processes migrating at once take turns. Every applied file is
recorded in ``flowlens.schema_migrations`` with its SHA-256; a recorded file with the same checksum
is skipped, so running ``migrate`` twice is a no-op. Migrations are written to be idempotent
(``IF NOT EXISTS``, ``CREATE OR REPLACE``, guarded ``DO`` blocks), which is why an *edited* file is
re-applied (with a warning) rather than refused; ``--strict`` refuses instead, for production.

Numbering: 001-009 foundation (schema, roles), 010-019 pipeline, 020-029 data quality.
A file whose first line contains ``flowlens:no-transaction`` runs outside a transaction and must hold
a single statement (PostgreSQL runs ``CREATE INDEX CONCURRENTLY`` only that way).

Python API: ``migrate(cfg_or_dsn)`` returns the versions applied; used by the test fixtures and by
``flowlens run``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.resources
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg

from ingest.config import ConfigError, FlowLensConfig, load_config

SQL_DIR = Path(str(importlib.resources.files("sql")))  # package data: a checkout and a wheel alike
FILE_PATTERN = re.compile(r"^(\d{3})_([A-Za-z0-9_]+)\.sql$")
LOCK_KEY = 0x466C6F774C656E73  # "FlowLens": one advisory lock for every migrating process

BOOTSTRAP = """
CREATE SCHEMA IF NOT EXISTS flowlens;
CREATE TABLE IF NOT EXISTS flowlens.schema_migrations (
    version     integer     PRIMARY KEY,
    name        text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    duration_ms integer     NOT NULL
);
"""


class MigrationError(RuntimeError):
    """A migration could not be applied; the message names the file and the database error."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    @property
    def transactional(self) -> bool:
        first_line = self.sql.split("\n", 1)[0]
        return "flowlens:no-transaction" not in first_line


def discover(directory: Path = SQL_DIR) -> list[Migration]:
    """The migrations in ``directory`` in order; two files with one number is an error."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = FILE_PATTERN.match(path.name)
        if not match:
            raise MigrationError(f"{path}: migration files must be named NNN_name.sql (three digits, then a name)")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"{path.name} and {found[version].path.name} share number {version:03d}: renumber one")
        found[version] = Migration(version, match.group(2), path)
    return [found[v] for v in sorted(found)]


def _conninfo(target: FlowLensConfig | str | None) -> str:
    if target is None:
        target = load_config()
    return target.postgres.dsn() if isinstance(target, FlowLensConfig) else target


def applied_versions(conn: psycopg.Connection) -> dict[int, str]:
    exists = conn.execute("SELECT to_regclass('flowlens.schema_migrations')").fetchone()[0]
    if exists is None:
        return {}
    return dict(conn.execute("SELECT version, checksum FROM flowlens.schema_migrations").fetchall())


def migrate(
    target: FlowLensConfig | str | None = None,
    directory: Path = SQL_DIR,
    strict: bool = False,
    log: Callable[[str], None] = lambda message: print(message, file=sys.stderr),
) -> list[int]:
    """Apply pending (or edited) migrations to the database of ``target`` (config or conninfo).

    Returns the versions applied in this call (empty when the database was up to date).
    """
    migrations = discover(directory)
    try:
        conn = psycopg.connect(_conninfo(target), autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise MigrationError(
            f"cannot connect to PostgreSQL: {str(exc).strip()}\n"
            "Start the local stack with `flowlens stack up` or check the postgres.* settings."
        ) from None
    applied: list[int] = []
    with conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        try:
            conn.execute(BOOTSTRAP)
            done = applied_versions(conn)
            for migration in migrations:
                recorded = done.get(migration.version)
                if recorded == migration.checksum:
                    continue
                if recorded is not None:
                    if strict:
                        raise MigrationError(
                            f"{migration.path.name} changed since it was applied (checksum differs); "
                            "write a new numbered migration instead of editing an applied one."
                        )
                    log(f"migrate: {migration.path.name} changed since it was applied; re-applying (idempotent)")
                _apply(conn, migration)
                applied.append(migration.version)
                log(f"migrate: applied {migration.path.name}")
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    return applied


def _apply(conn: psycopg.Connection, migration: Migration) -> None:
    started = time.monotonic()
    record = """
        INSERT INTO flowlens.schema_migrations (version, name, checksum, duration_ms)
        VALUES (%s, %s, %s, %s)
        ON CONFLICT (version) DO UPDATE
        SET name = EXCLUDED.name, checksum = EXCLUDED.checksum,
            applied_at = now(), duration_ms = EXCLUDED.duration_ms
    """
    try:
        if migration.transactional:
            with conn.transaction():
                conn.execute(migration.sql)
                elapsed = int((time.monotonic() - started) * 1000)
                conn.execute(record, (migration.version, migration.name, migration.checksum, elapsed))
        else:
            conn.execute(migration.sql)
            elapsed = int((time.monotonic() - started) * 1000)
            conn.execute(record, (migration.version, migration.name, migration.checksum, elapsed))
    except psycopg.Error as exc:
        raise MigrationError(
            f"{migration.path.name} failed and was rolled back: {str(exc).strip()}\n"
            "Fix the file and run `flowlens migrate` again; earlier files stay applied."
        ) from None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="flowlens migrate",
        description="Apply the numbered SQL migrations in sql/ to schema flowlens (safe to run again).",
    )
    parser.add_argument("--config", help="FlowLens YAML file (default: $FLOWLENS_CONFIG or ./flowlens.yaml)")
    parser.add_argument("--dsn", help="psycopg conninfo; overrides the config's postgres.* settings")
    parser.add_argument("--database", help="database name on the configured server (e.g. flowlens_test)")
    parser.add_argument("--strict", action="store_true", help="refuse to re-apply an edited migration")
    parser.add_argument("--status", action="store_true", help="list migrations and whether each is applied")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
        target = args.dsn or cfg.postgres.dsn(args.database)
        if args.status:
            return _status(target)
        applied = migrate(target, strict=args.strict)
    except (ConfigError, MigrationError) as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"migrate: {len(applied)} applied" if applied else "migrate: up to date")
    return 0


def _status(conninfo: str) -> int:
    try:
        with psycopg.connect(conninfo, connect_timeout=10) as conn:
            done = applied_versions(conn)
    except psycopg.OperationalError as exc:
        raise MigrationError(f"cannot connect to PostgreSQL: {str(exc).strip()}") from None
    pending = 0
    for migration in discover():
        recorded = done.get(migration.version)
        state = "applied" if recorded == migration.checksum else ("changed" if recorded else "pending")
        pending += state != "applied"
        print(f"{migration.version:03d}  {state:<8} {migration.path.name}")
    return 0 if pending == 0 else 3
