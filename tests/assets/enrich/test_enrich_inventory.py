"""The asset inventory: CSV/YAML loading with line-numbered errors, matching, direction hints, PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import psycopg
import pytest

from assets.enrich.addresses import address_key
from assets.enrich.inventory import Inventory, InventoryError, load_into_postgres, load_inventory, main

CSV = """\
network,name,owner,environment,tags,services
10.0.0.0/16,office,it,prod,corp;office,
10.0.2.53,ns1,netops,prod,dns,53/udp;53/tcp
10.0.0.5/32,web-1,web-team,prod,frontend,443/tcp;tcp/80
10.0.3.0/24,,nobody,prod,,
10.0.4.7/24,broken-cidr,,,,
not-an-ip,bogus,,,,
10.0.5.0/24,bad-port,,,,99999/tcp
10.0.6.0/24,bad-proto,,,,443/carrier-pigeon
10.0.2.53,duplicate,,,,
2001:db8:1::/48,lab-v6,lab,dev,"ipv6, lab",22/tcp
"""

YAML = """\
assets:
  - network: 10.0.0.0/16
    name: office
    tags: [corp, office]
  - address: 10.0.0.5
    name: web-1
    services: ["443/tcp", {port: 80, protocol: tcp}]
  - network: 10.0.9.0/24
    owner: missing-name
  - network: 10.0.8.0/24
    name: wrong-service
    services: [{port: 80}]
  - just a string
  - network: 2001:db8:1::/48
    name: lab-v6
    colour: blue
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_valid_rows_load_and_bad_rows_are_reported_by_line(tmp_path: Path) -> None:
    inventory, errors = load_inventory(_write(tmp_path, "inv.csv", CSV))
    assert [e.name for e in inventory.entries] == ["office", "ns1", "web-1", "lab-v6"]
    assert [line for line, _ in errors] == [5, 6, 7, 8, 9, 10]
    messages = dict(errors)
    assert "name is required" in messages[5]
    assert "did you mean 10.0.4.0/24" in messages[6]
    assert "not an IP address or CIDR" in messages[7]
    assert "99999" in messages[8]
    assert "carrier-pigeon" in messages[9]
    assert "already described on line 3" in messages[10]
    web = inventory.entries[2]
    assert web.services == ((443, 6), (80, 6)) and web.tags == ("frontend",) and web.line == 4
    assert inventory.entries[3].tags == ("ipv6", "lab")


def test_yaml_with_line_numbers(tmp_path: Path) -> None:
    inventory, errors = load_inventory(_write(tmp_path, "inv.yaml", YAML))
    assert [e.name for e in inventory.entries] == ["office", "web-1"]
    assert [line for line, _ in errors] == [8, 10, 0, 14]
    assert "name is required" in errors[0][1]
    assert "needs both port and protocol" in errors[1][1]
    assert "colour" in errors[3][1]


def test_file_level_problems_raise(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="does not exist"):
        load_inventory(tmp_path / "missing.csv")
    with pytest.raises(InventoryError, match="unknown format"):
        load_inventory(_write(tmp_path, "inv.json", "[]"))
    with pytest.raises(InventoryError, match="header must name"):
        load_inventory(_write(tmp_path, "bad.csv", "ip,label\n10.0.0.1,x\n"))
    with pytest.raises(InventoryError, match="not valid YAML"):
        load_inventory(_write(tmp_path, "bad.yaml", "assets: [\n"))


def test_most_specific_entry_wins(tmp_path: Path) -> None:
    inventory, _ = load_inventory(_write(tmp_path, "inv.csv", CSV))
    ips = ["10.0.0.5", "10.0.2.53", "10.0.2.54", "10.1.0.1", "2001:db8:1::9"]
    keys = pl.Series([address_key(ip) for ip in ips], dtype=pl.UInt128)
    names = inventory.names.gather(inventory.match(keys)).to_list()
    assert names == ["web-1", "ns1", "office", None, "lab-v6"]


def test_server_side_from_services(tmp_path: Path, make_flows) -> None:
    inventory, _ = load_inventory(_write(tmp_path, "inv.csv", CSV))
    flows = make_flows(
        [
            ("10.0.7.7", "10.0.0.5", 50000, 443, 6),  # client -> web-1:443: dst is the server
            ("10.0.0.5", "10.0.7.7", 443, 50000, 6),  # the reply: src is the server
            ("10.0.7.7", "10.0.2.53", 40000, 53, 17),  # dns over udp
            ("10.0.7.7", "10.0.2.53", 40000, 53, 6),  # dns over tcp
            ("10.0.7.7", "10.0.0.5", 50000, 22, 6),  # ssh is not offered by web-1
            ("10.0.7.7", "8.8.8.8", 50000, 443, 6),  # unknown server
        ]
    )
    assert inventory.server_side(flows).to_list() == [1, -1, 1, 1, 0, 0]


def test_empty_inventory_matches_nothing(make_flows) -> None:
    inventory = Inventory()
    assert inventory.match(pl.Series([address_key("10.0.0.1")], dtype=pl.UInt128)).to_list() == [None]
    assert inventory.server_side(make_flows([("10.0.0.1", "10.0.0.2", 1, 2, 6)])).to_list() == [0]


@pytest.mark.integration
def test_load_into_postgres_marks_known_and_discovered(tmp_path: Path, clean_pg: str) -> None:
    with psycopg.connect(clean_pg) as conn:
        conn.execute(
            "INSERT INTO flowlens.assets (addr, known, first_seen, last_seen) VALUES "
            "('10.0.7.7', false, now(), now()), ('192.168.9.9', true, now(), now())"
        )
    inventory, _ = load_inventory(_write(tmp_path, "inv.csv", CSV))
    counts = load_into_postgres(clean_pg, inventory)
    assert counts["entries"] == 4
    with psycopg.connect(clean_pg) as conn:
        rows = conn.execute(
            "SELECT network::text, name, tags, services FROM flowlens.inventory ORDER BY network"
        ).fetchall()
        rows_assets = conn.execute("SELECT host(addr), name, known FROM flowlens.assets ORDER BY addr").fetchall()
        assets = {addr: (name, known) for addr, name, known in rows_assets}
    assert ("10.0.2.53/32", "ns1", ["dns"], [{"port": 53, "protocol": 17}, {"port": 53, "protocol": 6}]) in rows
    assert assets["10.0.2.53"] == ("ns1", True)  # single-address entry: an asset before any traffic
    assert assets["10.0.0.5"] == ("web-1", True)
    assert assets["10.0.7.7"] == ("office", True)  # discovered earlier, covered by 10.0.0.0/16
    assert assets["192.168.9.9"][1] is False  # no longer covered by any entry


@pytest.mark.integration
def test_inventory_command(tmp_path: Path, clean_pg: str, capsys) -> None:
    path = _write(tmp_path, "inv.csv", CSV)
    assert main([str(path), "--dsn", clean_pg]) == 1  # loaded, but some rows were skipped
    out, err = capsys.readouterr()
    assert f"{path}:5: name is required (row skipped)" in err
    assert "4 entries valid, 6 rows skipped" in out
    with psycopg.connect(clean_pg) as conn:
        assert conn.execute("SELECT count(*) FROM flowlens.inventory").fetchone()[0] == 4
    assert main([str(tmp_path / "nope.csv"), "--dsn", clean_pg]) == 2
