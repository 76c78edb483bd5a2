"""FlowLens against GoFlow2 (a Go collector, the second independent sFlow decoder) on the same captures.

The sFlow captures of ``test_sflow_tshark.py`` (``sflow_captures.py``) are sent to GoFlow2 over
loopback UDP (``ingest.tools.goflow2``: built from the Go module proxy the first time) and every
field of its JSON output that means what a FlowLens column means is compared, flow by flow.
GoFlow2 reports a tunnel's outer packet, so FlowLens decodes with ``tunnel="outer"`` here.

What GoFlow2 does not decode is not compared: samples it leaves without addresses (QinQ, an MPLS
pseudowire's inner frame), the protocol and ports behind IPv6 extension headers or of a
later fragment (its layer stack ends before the transport layer), ICMP type and code (always 0 in
its sFlow output), TCP flags of a sampled-IPv4 record, and AS paths of more than one segment (it
reads the first). Two conventions differ and are checked as such: a gateway record's source AS
0 becomes the router's AS in GoFlow2 (FlowLens keeps 0, as tshark shows), and GoFlow2 keeps the
router record's next hop apart from the gateway's (FlowLens: the gateway's wins).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ingest.config import load_config
from ingest.tools import goflow2
from ingest.tools.capture import read_udp
from tests.ingest.decode import sflow_captures
from tests.ingest.decode.test_sflow_tshark import flowlens_flows

PROTOCOLS = {"TCP": 6, "UDP": 17, "ICMP": 1, "IPv6-ICMP": 58, "GRE": 47}
TRANSPORT_LAYERS = {"TCP", "UDP", "ICMP", "ICMPv6"}
MULTI_SEGMENT_PATHS = {"10.31.0.1"}  # sflow_captures.ROUTING's AS_SEQUENCE + AS_SET sample
UNKNOWN_IF = 0x3FFFFFFF


@pytest.fixture(scope="module")
def collector() -> Iterator[goflow2.Collector]:
    exe = goflow2.binary(load_config().state_dir)
    if isinstance(exe, str):
        pytest.skip(exe)
    with goflow2.Collector(exe) as running:
        yield running


def goflow2_flows(collector: goflow2.Collector, path: Path, expected: int) -> list[dict[str, Any]]:
    return collector.decode([d.payload for d in read_udp(path)], expected)


def _expected(theirs: dict[str, Any]) -> dict[str, Any]:
    """The FlowLens fields GoFlow2's flow speaks for (see the module docstring)."""
    out: dict[str, Any] = {"exporter": theirs["sampler_address"], "sampling_rate": theirs["sampling_rate"],
                           "input_if": theirs["in_if"], "src_addr": theirs["src_addr"],
                           "dst_addr": theirs["dst_addr"]}  # fmt: skip
    if theirs["out_if"] != UNKNOWN_IF:
        out["output_if"] = theirs["out_if"]
    layers = set(theirs["layer_stack"])
    from_record = not layers  # a sampled IPv4/IPv6 record, no header
    if from_record or layers & TRANSPORT_LAYERS or theirs["proto"] == "GRE":
        out["protocol"] = PROTOCOLS[theirs["proto"]]
    if from_record or layers & {"TCP", "UDP"}:
        out |= {"src_port": theirs["src_port"], "dst_port": theirs["dst_port"]}
    if "TCP" in layers:
        out["tcp_flags"] = theirs["tcp_flags"]
    if next_hop := theirs["bgp_next_hop"] or theirs["next_hop"]:
        out["next_hop"] = next_hop
    if theirs["bgp_next_hop"] and theirs["src_addr"] not in MULTI_SEGMENT_PATHS:
        out |= {"as_path": theirs["as_path"], "communities": theirs["bgp_communities"], "dst_as": theirs["dst_as"]}
    return out


def _compare(collector: goflow2.Collector, path: Path, count: int) -> tuple[int, int]:
    """(flows compared, fields compared) of a capture holding ``count`` flow samples."""
    ours = flowlens_flows(path, tunnel="outer")
    theirs = goflow2_flows(collector, path, count)
    assert len(theirs) == len(ours) == count
    flows = fields = 0
    for flow in (t for t in theirs if t["src_addr"]):
        expected = _expected(flow)
        match = [f for f in ours if all(f[k] == expected[k] for k in ("exporter", "sampling_rate", "src_addr"))]
        assert len(match) == 1, (flow, match)
        mine = match[0]
        assert {k: mine[k] for k in expected} == expected
        if flow["bgp_next_hop"]:  # GoFlow2 puts the router's AS in a source AS of 0
            assert mine["src_as"] in (flow["src_as"], 0)
        flows, fields = flows + 1, fields + len(expected)
    return flows, fields


def test_sflow_kinds_agree_with_goflow2(collector: goflow2.Collector) -> None:
    flows, fields = _compare(collector, sflow_captures.SFLOW_PCAP, 13)
    assert flows == 11  # all but QinQ and the EVPN pseudowire
    assert fields > 7 * flows


def test_routing_records_agree_with_goflow2(collector: goflow2.Collector) -> None:
    flows, fields = _compare(collector, sflow_captures.ROUTING_PCAP, len(sflow_captures.ROUTING))
    assert flows == len(sflow_captures.ROUTING)
    assert fields > 9 * flows
