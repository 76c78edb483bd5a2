"""Migrations against real PostgreSQL databases created for each test, dropped afterwards."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from flowlens_dagster.migrate import MigrationError, discover, migrate
from flowlens_dagster.stack import postgres
from ingest.config import FlowLensConfig


def _quiet(_message: str) -> None:
    pass


@pytest.fixture
def scratch_db(flowlens_config: FlowLensConfig) -> Iterator[Callable[[], str]]:
    """Factory of empty databases on the test server; returns each one's conninfo."""
    made: list[str] = []

    def make() -> str:
        name = f"flowlens_mig_{uuid.uuid4().hex[:10]}"
        postgres.ensure_database(flowlens_config, name)
        made.append(name)
        return flowlens_config.postgres.dsn(name)

    yield make
    for name in made:
        postgres.drop_database(flowlens_config, name)


def _write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def _recorded(dsn: str) -> dict[int, str]:
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute("SELECT version, checksum FROM flowlens.schema_migrations").fetchall())


# --- pure: discovery --------------------------------------------------------------------------


def test_discover_orders_by_number(tmp_path: Path) -> None:
    _write(tmp_path, {"010_b.sql": "", "002_a.sql": "", "001_z.sql": ""})
    assert [(m.version, m.name) for m in discover(tmp_path)] == [(1, "z"), (2, "a"), (10, "b")]


def test_discover_rejects_duplicate_numbers(tmp_path: Path) -> None:
    _write(tmp_path, {"003_one.sql": "", "003_two.sql": ""})
    with pytest.raises(MigrationError, match=r"share number 003"):
        discover(tmp_path)


def test_discover_rejects_badly_named_files(tmp_path: Path) -> None:
    _write(tmp_path, {"3_short.sql": ""})
    with pytest.raises(MigrationError, match=r"NNN_name\.sql"):
        discover(tmp_path)


def test_project_migrations_keep_their_number_ranges() -> None:
    versions = [m.version for m in discover()]
    assert versions[:2] == [1, 2]
    assert all(v < 100 for v in versions)


# --- real databases ---------------------------------------------------------------------------


@pytest.mark.integration
def test_migrate_twice_applies_once(scratch_db: Callable[[], str]) -> None:
    dsn = scratch_db()
    expected = [m.version for m in discover()]
    assert migrate(dsn, log=_quiet) == expected
    assert migrate(dsn, log=_quiet) == []
    assert _recorded(dsn) == {m.version: m.checksum for m in discover()}


@pytest.mark.integration
def test_cli_migrate_twice_succeeds(flowlens_config: FlowLensConfig, scratch_db: Callable[[], str]) -> None:
    dsn = scratch_db()
    database = dsn.split("dbname=")[1].split()[0]
    command = [sys.executable, "-m", "flowlens_dagster.cli", "migrate", "--database", database]
    first = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    second = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "applied 001_core_schema.sql" in first.stderr
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "migrate: up to date"


@pytest.mark.integration
def test_concurrent_migrations_take_turns(scratch_db: Callable[[], str]) -> None:
    dsn = scratch_db()
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda _i: migrate(dsn, log=_quiet), range(3)))
    applied = sorted(v for result in results for v in result)
    assert applied == [m.version for m in discover()]


@pytest.mark.integration
def test_schema_matches_the_description(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'flowlens' AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
            )
        }
        partitioned = dict(
            conn.execute(
                "SELECT c.relname, pg_get_partkeydef(c.oid) FROM pg_partitioned_table p "
                "JOIN pg_class c ON c.oid = p.partrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'flowlens' AND c.relname IN ('flow_raw', 'flow_stats')"
            ).fetchall()
        )
        stats_pk = [
            row[0]
            for row in conn.execute(
                "SELECT a.attname FROM pg_index i "
                "JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, ord) ON true "
                "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
                "WHERE i.indrelid = 'flowlens.flow_stats'::regclass AND i.indisprimary ORDER BY k.ord"
            )
        ]
    assert {"flow_raw", "flow_stats", "assets", "dependencies", "changes", "window_loads",
            "ingest_watermarks", "inventory", "schema_migrations"} <= tables  # fmt: skip
    assert partitioned == {"flow_raw": "RANGE (receive_time)", "flow_stats": "RANGE (window_start)"}
    assert stats_pk == ["client_addr", "server_addr", "server_port", "protocol", "window_start"]  # sql/044


@pytest.mark.integration
def test_day_partitions_are_created_once(clean_pg: str) -> None:
    with psycopg.connect(clean_pg, autocommit=True) as conn:
        first = conn.execute("SELECT flowlens.ensure_day_partitions('flowlens.flow_stats', '2031-01-01', 2)")
        again = conn.execute("SELECT flowlens.ensure_day_partitions('flowlens.flow_stats', '2031-01-01', 3)")
        counts = (first.fetchone()[0], again.fetchone()[0])
        conn.execute(
            "INSERT INTO flowlens.flow_stats VALUES ('2031-01-02 10:05Z', '10.0.0.1', '10.0.0.2', 443, 6, "
            "100, 2, 1, '2031-01-02 10:05Z', '2031-01-02 10:06Z')"
        )
        part = conn.execute(
            "SELECT c.relname FROM flowlens.flow_stats s JOIN pg_class c ON c.oid = s.tableoid"
        ).fetchone()[0]
        for day in ("20310101", "20310102", "20310103"):
            conn.execute(f"DROP TABLE flowlens.flow_stats_{day}")
    assert counts == (2, 1)
    assert part == "flow_stats_20310102"


@pytest.mark.integration
def test_edited_migration_is_reapplied_unless_strict(scratch_db: Callable[[], str], tmp_path: Path) -> None:
    dsn = scratch_db()
    folder = _write(tmp_path, {"001_t.sql": "CREATE TABLE IF NOT EXISTS flowlens.t (a int);"})
    assert migrate(dsn, directory=folder, log=_quiet) == [1]
    _write(folder, {"001_t.sql": "CREATE TABLE IF NOT EXISTS flowlens.t (a int);\nALTER TABLE flowlens.t "
                                 "ADD COLUMN IF NOT EXISTS b int;"})  # fmt: skip
    with pytest.raises(MigrationError, match="changed since it was applied"):
        migrate(dsn, directory=folder, strict=True, log=_quiet)
    notes: list[str] = []
    assert migrate(dsn, directory=folder, log=notes.append) == [1]
    assert any("re-applying" in note for note in notes)
    with psycopg.connect(dsn) as conn:
        columns = [r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns "
                                              "WHERE table_name = 't' ORDER BY ordinal_position")]  # fmt: skip
    assert columns == ["a", "b"]


@pytest.mark.integration
def test_failing_migration_is_rolled_back_and_not_recorded(scratch_db: Callable[[], str], tmp_path: Path) -> None:
    dsn = scratch_db()
    folder = _write(
        tmp_path,
        {
            "001_ok.sql": "CREATE TABLE flowlens.ok (a int);",
            "002_bad.sql": "CREATE TABLE flowlens.half (a int);\nSELECT 1/0;",
        },
    )
    with pytest.raises(MigrationError, match=r"002_bad\.sql failed and was rolled back"):
        migrate(dsn, directory=folder, log=_quiet)
    with psycopg.connect(dsn) as conn:
        half = conn.execute("SELECT to_regclass('flowlens.half')").fetchone()[0]
    assert half is None
    assert set(_recorded(dsn)) == {1}


@pytest.mark.integration
def test_unreachable_database_says_what_to_do() -> None:
    with pytest.raises(MigrationError, match="flowlens stack up"):
        migrate("host=127.0.0.1 port=1 dbname=x user=x password=x connect_timeout=2", log=_quiet)


@pytest.fixture
def login_roles(flowlens_config: FlowLensConfig) -> Iterator[dict[str, str]]:
    """Two throwaway login roles: one in flowlens_writer, one in flowlens_analyst."""
    suffix = uuid.uuid4().hex[:8]
    roles = {"writer": f"t_writer_{suffix}", "analyst": f"t_analyst_{suffix}"}
    admin = flowlens_config.postgres.dsn("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        for group, role in roles.items():
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'pw' IN ROLE {}").format(
                    sql.Identifier(role), sql.Identifier(f"flowlens_{group}")
                )
            )
    yield roles
    with psycopg.connect(admin, autocommit=True) as conn:
        for role in roles.values():
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.mark.integration
def test_roles_writer_writes_analyst_only_reads(
    flowlens_config: FlowLensConfig, scratch_db: Callable[[], str], login_roles: dict[str, str]
) -> None:
    dsn = scratch_db()
    migrate(dsn, log=_quiet)
    pg = flowlens_config.postgres
    database = dsn.split("dbname=")[1].split()[0]

    def as_role(role: str) -> str:
        return f"host={pg.host} port={pg.port} dbname={database} user={role} password=pw"

    insert = (
        "INSERT INTO flowlens.flow_stats VALUES ('2031-02-01 00:00Z', '10.0.0.1', '10.0.0.2', 53, 17, "
        "1, 1, 1, '2031-02-01 00:00Z', '2031-02-01 00:00Z')"
    )
    with psycopg.connect(as_role(login_roles["writer"]), autocommit=True) as conn:
        created = conn.execute("SELECT flowlens.ensure_day_partitions('flowlens.flow_stats', '2031-02-01', 1)")
        assert created.fetchone()[0] == 1
        conn.execute(insert)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE flowlens.writer_made (a int)")
    with psycopg.connect(as_role(login_roles["analyst"]), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM flowlens.flow_stats").fetchone()[0] == 1
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(insert)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT flowlens.ensure_day_partitions('flowlens.flow_stats', '2031-02-02', 1)")
