"""The date-dependent unit tests pass with the clock moved ahead (libfaketime), as on any future day.

Runs the pure tests of the partition set, the sensor's planning and the Definitions in a child
pytest under ``faketime`` (Debian package ``faketime``, installed by scripts/setup.sh) at +30 and
+400 days, in a fresh state dir so the partition start is chosen under the moved clock too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PURE = [
    "tests/assets/test_partitions.py",
    "tests/flowlens_dagster/test_sensor.py",
    "tests/flowlens_dagster/test_definitions.py",
]


@pytest.mark.skipif(shutil.which("faketime") is None, reason="faketime missing: scripts/setup.sh installs it")
@pytest.mark.parametrize("offset", ["+30d", "+400d"])
def test_pure_date_tests_pass_with_the_clock_moved_ahead(offset, tmp_path):
    env = {**os.environ, "FLOWLENS_STATE_DIR": str(tmp_path)}
    proc = subprocess.run(
        ["faketime", "-f", offset, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-m", "not integration", *PURE],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout.splitlines()[-1]
