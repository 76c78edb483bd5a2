"""The Dagster instance: generated dagster.yaml, PostgreSQL storage that works, SIGTERM that stops."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import yaml

from flowlens_dagster.instance import WORKSPACE, dagster_database, instance_settings, write_instance
from flowlens_dagster.run import ui_answers
from ingest.config import PROJECT_ROOT, FlowLensConfig

DAGSTER = str(Path(sys.executable).parent / "dagster")
PROBE = """
import dagster as dg


@dg.asset
def probe() -> int:
    return 41 + 1


defs = dg.Definitions(assets=[probe])
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "DAGSTER_HOME": str(home), "GX_ANALYTICS_ENABLED": "false"}


def test_minimal_mode_uses_sqlite_under_the_state_dir(tmp_path: Path) -> None:
    cfg = FlowLensConfig(state_dir=tmp_path)
    path = write_instance(cfg, "minimal")
    content = yaml.safe_load(path.read_text())
    assert path == tmp_path / "dagster" / "dagster.yaml"
    assert content["storage"] == {"sqlite": {"base_dir": str(tmp_path / "dagster" / "storage")}}
    assert content["telemetry"] == {"enabled": False}


def test_kafka_modes_use_postgres_with_the_psycopg2_scheme() -> None:
    cfg = FlowLensConfig(postgres={"database": "x", "port": 6000})
    for mode in ("standard", "full", "auto"):
        db = instance_settings(cfg, mode)["storage"]["postgres"]["postgres_db"]
        assert (db["db_name"], db["port"], db["scheme"]) == ("x_dagster", 6000, "postgresql+psycopg2")


@pytest.mark.integration
def test_postgres_storage_records_a_real_run(flowlens_config: FlowLensConfig, tmp_path: Path) -> None:
    cfg = flowlens_config.model_copy(update={"state_dir": tmp_path})
    write_instance(cfg, "full")
    (tmp_path / "probe.py").write_text(PROBE)
    result = subprocess.run(
        [DAGSTER, "asset", "materialize", "-f", str(tmp_path / "probe.py"), "--select", "probe"],
        env=_env(tmp_path / "dagster"), cwd=tmp_path, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    with psycopg.connect(cfg.postgres.dsn(dagster_database(cfg))) as conn:
        statuses = [r[0] for r in conn.execute("SELECT status FROM runs ORDER BY create_timestamp DESC LIMIT 1")]
    assert statuses == ["SUCCESS"]


@pytest.mark.integration
def test_project_definitions_validate(tmp_path: Path) -> None:
    if not (PROJECT_ROOT / "flowlens_dagster" / "definitions.py").exists():
        pytest.skip("flowlens_dagster/definitions.py does not exist yet")
    write_instance(FlowLensConfig(state_dir=tmp_path), "minimal")
    result = subprocess.run(
        [DAGSTER, "definitions", "validate", "-w", str(WORKSPACE)],
        env=_env(tmp_path / "dagster"), cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "All code locations passed validation" in result.stdout + result.stderr


def _group_alive(pgid: int) -> list[int]:
    alive = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[2]) == pgid and stat[0] != "Z":
                alive.append(int(entry.name))
    return alive


@pytest.mark.integration
@pytest.mark.slow
def test_dagster_dev_started_in_the_background_stops_on_sigterm(tmp_path: Path) -> None:
    """Launched like a shell script would (SIGTERM/SIGINT ignored), it still stops on SIGTERM."""
    (tmp_path / "probe.py").write_text(PROBE)
    (tmp_path / "workspace.yaml").write_text(
        "load_from:\n  - python_file:\n      relative_path: probe.py\n      location_name: probe\n"
    )
    port = _free_port()
    env = {**os.environ, "FLOWLENS_STATE_DIR": str(tmp_path / "state"), "FLOWLENS_DAGSTER__PORT": str(port)}
    env.pop("FLOWLENS_CONFIG", None)
    command = f"trap '' TERM INT; exec {sys.executable} -m flowlens_dagster.cli dagster --mode minimal " \
              f"--workspace {tmp_path / 'workspace.yaml'}"  # fmt: skip
    with open(tmp_path / "dagster.log", "wb") as log:
        proc = subprocess.Popen(["bash", "-c", command], env=env, cwd=tmp_path, stdout=log, stderr=log,
                                start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not ui_answers(FlowLensConfig(dagster={"port": port})):
            assert proc.poll() is None, (tmp_path / "dagster.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "dagster dev did not serve within 120 s"
            time.sleep(1)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        deadline = time.monotonic() + 30
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _group_alive(proc.pid) == []
    finally:
        if proc.poll() is None or _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
