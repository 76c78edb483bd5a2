"""Fixtures of the console's browser tests: headless Debian Chromium against the real API.

- ``browser`` (session): Playwright's Chromium (``flowlens_dagster.bench.browser``).
- ``page`` (function): a 1280x800 page; its screenshot is saved as ``<tmp_path>/console.png`` at
  the end of the test, passed or failed, and the page's JavaScript errors fail the test.
- ``console`` (module): the API started as ``flowlens api`` on the test database with the known
  topology of ``topology.py`` loaded, and a viewer account; see ``ConsoleSite``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from flowlens_dagster.api import auth
from flowlens_dagster.api.console import console_built
from flowlens_dagster.bench import browser as chromium
from ingest.config import FlowLensConfig
from tests.conftest import truncate_flowlens_tables
from tests.flowlens_dagster.console import topology

SCREENSHOT = "console.png"
USER, PASSWORD = "console-test", "console-test-password"
# Redis databases of the API under test: apart from a running API (2, 3), its bench (12, 13) and the tests (15).
CACHE_DB, SESSION_DB = 10, 11
START_TIMEOUT = 90.0


@dataclass
class ConsoleSite:
    """The API serving the console, as the tests see it."""

    url: str  # ends with "/"
    user: str
    password: str
    dsn: str
    redis_url: str

    def add_change(self, addr: str) -> dict:
        """Store a new_asset change as the pipeline does; returns the row as the API sends it."""
        with psycopg.connect(self.dsn) as conn:
            change_id, window = conn.execute(
                """INSERT INTO flowlens.changes (window_start, kind, subject, addr, details)
                   VALUES (date_trunc('hour', now()), 'new_asset', %s, %s, '{}') RETURNING id, window_start""",
                (addr, addr),
            ).fetchone()
        return {"id": change_id, "window_start": window.isoformat(), "kind": "new_asset", "subject": addr, "addr": addr}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_up(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"flowlens api exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "api/v1/health", timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    tail = log.read_text()[-2000:]
    raise RuntimeError(f"flowlens api did not answer {url}api/v1/health in {START_TIMEOUT:.0f} s: {tail}")


@pytest.fixture(scope="module")
def console(flowlens_config: FlowLensConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleSite]:
    """``flowlens api`` (one worker, Redis for cache, sessions and the feed) on the known topology."""
    if not console_built():
        pytest.fail("the console is not built: run scripts/setup.sh (it runs npm ci && npm run build in console/)")
    dsn = flowlens_config.postgres.dsn()
    truncate_flowlens_tables(dsn)
    topology.load(dsn)
    auth.add_user(dsn, USER, PASSWORD, "viewer")
    port = _free_port()
    env = {
        **os.environ,
        "FLOWLENS_POSTGRES__DATABASE": flowlens_config.postgres.database,
        "FLOWLENS_API__CACHE_DB": str(CACHE_DB),
        "FLOWLENS_API__SESSION_DB": str(SESSION_DB),
    }
    log = tmp_path_factory.mktemp("api") / "api.log"
    command = [sys.executable, "-m", "flowlens_dagster.cli", "api", "--port", str(port), "--workers", "1"]
    command += ["--mode", "full"]
    url = f"http://127.0.0.1:{port}/"
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _flush_api_redis(flowlens_config)
        _wait_until_up(url, process, log)
        yield ConsoleSite(url, USER, PASSWORD, dsn, flowlens_config.redis.url())
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _flush_api_redis(cfg: FlowLensConfig) -> None:
    """Start from an empty API cache and no sessions or login failures of an earlier run."""
    import redis

    base = cfg.redis.url().rsplit("/", 1)[0]
    for db in (CACHE_DB, SESSION_DB):
        with redis.Redis.from_url(f"{base}/{db}") as client:
            client.flushdb()


@pytest.fixture(scope="session")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = chromium.launch(playwright)
        yield instance
        instance.close()


@pytest.fixture
def page(browser, tmp_path: Path) -> Iterator:
    context = browser.new_context(viewport=chromium.VIEWPORT)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    yield page
    page.screenshot(path=str(tmp_path / SCREENSHOT))
    context.close()
    assert not errors, f"JavaScript errors in the console: {errors}"
