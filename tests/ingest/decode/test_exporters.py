"""Real exporters: softflowd exports a generated capture; totals per flow key must match the
capture, and nfcapd/nfdump decoding the same export must agree with FlowLens field by field."""

from __future__ import annotations

import datetime as dt
import shutil
from collections import defaultdict

import pytest

from ingest.decode import Decoder
from tests.ingest.decode.exporters import nfdump_flows, softflowd_export, write_traffic_pcap
from tests.ingest.decode.helpers import addresses

needs_softflowd = pytest.mark.skipif(shutil.which("softflowd") is None, reason="softflowd not installed (apt install softflowd)")
needs_nfdump = pytest.mark.skipif(
    shutil.which("nfcapd") is None or shutil.which("nfdump") is None, reason="nfcapd/nfdump not installed (apt install nfdump)"
)
VERSIONS = ["5", "9", "10"]


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, tuple[list[bytes], dict]]:
    """softflowd's export of the same kind of traffic for each version (run once per module)."""
    if shutil.which("softflowd") is None:
        pytest.skip("softflowd not installed (apt install softflowd)")
    out = {}
    for version in VERSIONS:
        workdir = tmp_path_factory.mktemp(f"softflowd{version}")
        truth = write_traffic_pcap(workdir / "traffic.pcap", ipv6=version != "5")
        out[version] = (softflowd_export(workdir / "traffic.pcap", version, workdir), truth)
    return out


def _decoded(datagrams: list[bytes]) -> list[dict]:
    batch = Decoder().decode_many([("127.0.0.1", d, 1_700_000_000_000_000) for d in datagrams])
    rows = batch.to_pylist()
    for row, src, dst in zip(rows, addresses(batch, "src_addr"), addresses(batch, "dst_addr")):
        row["src"], row["dst"] = src, dst
    return rows


@needs_softflowd
@pytest.mark.parametrize("version", VERSIONS)
def test_softflowd_totals_match_the_capture(exports, version: str) -> None:
    datagrams, truth = exports[version]
    assert datagrams, "softflowd exported nothing"
    totals: dict = defaultdict(lambda: [0, 0])
    for row in _decoded(datagrams):
        key = (row["src"], row["dst"], row["src_port"], row["dst_port"], row["protocol"])
        totals[key][0] += row["bytes"]
        totals[key][1] += row["packets"]
    assert dict(totals) == truth


def _nfdump_row(flow: dict) -> tuple:
    first = dt.datetime.fromisoformat(flow["first"]).replace(tzinfo=dt.UTC)
    last = dt.datetime.fromisoformat(flow["last"]).replace(tzinfo=dt.UTC)
    src = flow.get("src4_addr") or flow.get("src6_addr")
    dst = flow.get("dst4_addr") or flow.get("dst6_addr")
    return (src, dst, flow["src_port"], flow["dst_port"], flow["proto"], flow["in_bytes"], flow["in_packets"],
            first, last, flow.get("input_snmp", 0), flow.get("output_snmp", 0))  # fmt: skip


def _our_row(row: dict) -> tuple:
    first = row["flow_start"].replace(microsecond=row["flow_start"].microsecond // 1000 * 1000)
    last = row["flow_end"].replace(microsecond=row["flow_end"].microsecond // 1000 * 1000)
    return (row["src"], row["dst"], row["src_port"], row["dst_port"], row["protocol"], row["bytes"], row["packets"],
            first, last, row["input_if"] or 0, row["output_if"] or 0)  # fmt: skip


@needs_softflowd
@needs_nfdump
@pytest.mark.parametrize("version", VERSIONS)
def test_nfdump_agrees_field_by_field(exports, version: str) -> None:
    datagrams, _ = exports[version]
    theirs = sorted(_nfdump_row(f) for f in nfdump_flows(datagrams) if f.get("type") == "FLOW")
    ours = sorted(_our_row(r) for r in _decoded(datagrams))
    assert theirs, "nfdump decoded nothing"
    assert ours == theirs
