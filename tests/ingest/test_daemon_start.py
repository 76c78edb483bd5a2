"""``flowlens ingest`` refuses to start unmonitored: a metrics port in use is an error at start."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from ingest.config import PROJECT_ROOT
from tests.ingest.harness import free_udp_port


def test_a_metrics_port_in_use_stops_the_daemon_with_the_key_to_change(tmp_path):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    busy = holder.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLENS_")}
    env["FLOWLENS_STATE_DIR"] = str(tmp_path)
    argv = [sys.executable, "-m", "flowlens_dagster.cli", "ingest", "--listen", f"127.0.0.1:{free_udp_port()}",
            "--processes", "1", "--metrics-port", str(busy)]  # fmt: skip
    try:
        result = subprocess.run(argv, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    finally:
        holder.close()
    assert result.returncode == 2
    assert f"cannot serve metrics on 127.0.0.1:{busy}" in result.stderr
    assert "FLOWLENS_INGEST__METRICS_PORT" in result.stderr and "--metrics-port" in result.stderr
    assert "Traceback" not in result.stderr and "receiving on" not in result.stderr  # no worker started
