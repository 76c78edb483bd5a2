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

needs_softflowd = pytest.mark.skipif(
    shutil.which("softflowd") is None, reason="softflowd not installed (apt install softflowd)"
)
needs_nfdump = pytest.mark.skipif(
    shutil.which("nfcapd") is None or shutil.which("nfdump") is None,
    reason="nfcapd/nfdump not installed (apt install nfdump)",
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
        truth, times = write_traffic_pcap(workdir / "traffic.pcap", ipv6=version != "5")
        out[version] = (softflowd_export(workdir / "traffic.pcap", version, workdir), truth, times)
    return out


def _decoded(datagrams: list[bytes]) -> list[dict]:
    batch = Decoder().decode_many([("127.0.0.1", d, 1_700_000_000_000_000) for d in datagrams])
    rows = batch.to_pylist()
    for row, src, dst in zip(rows, addresses(batch, "src_addr"), addresses(batch, "dst_addr"), strict=True):
        row["src"], row["dst"] = src, dst
    return rows


@needs_softflowd
@pytest.mark.parametrize("version", VERSIONS)
def test_softflowd_totals_match_the_capture(exports, version: str) -> None:
    datagrams, truth, times = exports[version]
    assert datagrams, "softflowd exported nothing"
    totals: dict = defaultdict(lambda: [0, 0])
    for row in _decoded(datagrams):
        key = (row["src"], row["dst"], row["src_port"], row["dst_port"], row["protocol"])
        totals[key][0] += row["bytes"]
        totals[key][1] += row["packets"]
        first, last = (int(row[c].timestamp() * 1_000_000) for c in ("flow_start", "flow_end"))
        # Milliseconds on the wire; a v9 header has whole seconds only, and softflowd's sysUptime is
        # taken at the precise instant, so v9 times can be early by the sub-second part (< 1 s).
        tolerance = 1_000_000 if version == "9" else 1_000
        assert abs(first - times[key][0]) <= tolerance, (key, first, times[key])
        assert abs(last - times[key][1]) <= tolerance, (key, last, times[key])
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
    datagrams, _, _ = exports[version]
    theirs = sorted(_nfdump_row(f) for f in nfdump_flows(datagrams) if f.get("type") == "FLOW")
    ours = sorted(_our_row(r) for r in _decoded(datagrams))
    assert theirs, "nfdump decoded nothing"
    assert len(ours) == len(theirs)
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    for mine, other in zip(ours, theirs, strict=True):
        if other[7] == epoch and other[8] == epoch:
            # nfdump 1.7 reports no time (the epoch) for softflowd's v9 IPv6 records; compare the rest
            # (our times for them are checked against the capture in the totals test's flows).
            mine, other = mine[:7] + mine[9:], other[:7] + other[9:]
        assert mine == other
