"""The console names an address's subnet group exactly as PostgreSQL (and so the API) does.

``console/src/groups.js`` runs in Node here; PostgreSQL's ``network(set_masklen(addr, n))::text``
is the reference, so an edge of an expanded group lands on the right group node.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest

pytestmark = pytest.mark.integration

GROUPS_JS = Path(__file__).resolve().parents[3] / "console" / "src" / "groups.js"
CASES = [
    ("10.1.2.3", 24, 64),
    ("10.1.2.3", 16, 64),
    ("10.1.2.3", 32, 64),
    ("192.168.255.254", 23, 64),
    ("2001:db8::5", 24, 64),
    ("2001:db8:0:1:2:3:4:5", 24, 64),
    ("2001:db8:abcd:12ff::1", 24, 56),
    ("fe80::1", 24, 48),
    ("1:0:0:1:0:0:0:1", 24, 128),
    ("::ffff:10.0.0.1", 24, 64),
    ("::1", 24, 64),
]


def test_subnet_names_match_postgresql(pg_dsn):
    node = shutil.which("node")
    assert node, "Node.js is missing: run scripts/setup.sh (it installs npm and nodejs)"
    script = (
        f"import {{ subnetOf }} from {json.dumps(GROUPS_JS.as_uri())};"
        f"const cases = {json.dumps(CASES)};"
        "console.log(JSON.stringify(cases.map(([a, v4, v6]) => subnetOf(a, v4, v6))));"
    )
    ours = json.loads(subprocess.run([node, "--input-type=module", "-e", script], check=True, capture_output=True,
                                     text=True).stdout)  # fmt: skip
    with psycopg.connect(pg_dsn) as conn:
        reference = [
            conn.execute(
                "SELECT network(set_masklen(%s::inet, CASE WHEN family(%s::inet) = 4 THEN %s ELSE %s END))::text",
                (addr, addr, v4, v6),
            ).fetchone()[0]
            for addr, v4, v6 in CASES
        ]
    assert ours == reference
