"""The project as a wheel: ``pip install`` it into a fresh venv and ``flowlens migrate`` a real database.

The migrations are package data (``sql``), so the installed command finds them without the
checkout. The venv borrows the test environment's dependencies through a ``.pth`` line (nothing
is downloaded again) while the project itself comes only from the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import uuid
from pathlib import Path

import psycopg
import pytest

from flowlens_dagster.migrate import discover
from flowlens_dagster.stack import postgres
from ingest.config import FlowLensConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "flowlens_dagster", "ingest", "assets", "sql")


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False, **kwargs)
    assert result.returncode == 0, f"{argv[:3]} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    """A fresh venv with the project installed from a wheel built from this checkout; returns its bin/."""
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(src)])
    (wheel,) = (tmp_path / "dist").glob("flowlens-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
          "--ignore-installed", str(wheel)])  # fmt: skip
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    # the dependencies of the test environment, after the venv's own site-packages (its .pth files are not run,
    # so its editable hook for this checkout stays out)
    Path(purelib, "zz_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv / "bin"


def test_an_installed_wheel_migrates_a_database(installed: Path, flowlens_config: FlowLensConfig, tmp_path: Path):
    probe = "import flowlens_dagster, sql; print(flowlens_dagster.__file__)"
    where = _run([str(installed / "python"), "-c", probe], cwd=tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(installed.parent)  # the wheel's copy, not the checkout's
    name = f"flowlens_wheel_{uuid.uuid4().hex[:10]}"
    postgres.ensure_database(flowlens_config, name)
    pg = flowlens_config.postgres
    env = {key: value for key, value in os.environ.items() if not key.startswith("FLOWLENS_")}
    env.update(
        {
            "FLOWLENS_POSTGRES__HOST": pg.host,
            "FLOWLENS_POSTGRES__PORT": str(pg.port),
            "FLOWLENS_POSTGRES__DATABASE": name,
            "FLOWLENS_STATE_DIR": str(tmp_path / "state"),
        }
    )
    try:
        _run([str(installed / "flowlens"), "migrate"], cwd=tmp_path, env=env)
        with psycopg.connect(pg.dsn(name)) as conn:
            applied = [row[0] for row in conn.execute("SELECT version FROM flowlens.schema_migrations ORDER BY 1")]
            tables = conn.execute("SELECT to_regclass('flowlens.flow_stats') IS NOT NULL").fetchone()[0]
        assert applied == [m.version for m in discover()] and len(applied) >= 4
        assert tables
    finally:
        postgres.drop_database(flowlens_config, name)
