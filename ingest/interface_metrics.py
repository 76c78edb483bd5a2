"""sFlow counter samples as Prometheus metrics: the latest generic interface counters per agent.

A counter sample is not a flow: it is an interface's own counters, exported every 20-30 s by the
agent. The decoder keeps the latest per (agent, sub-agent, ifIndex) (``Decoder.interface_counters``);
each receiving process sends them with its metric snapshot (an agent is pinned to one process by
its address, so the processes' sets do not overlap) and the endpoint serves them as:

* ``flowlens_interface_octets_total{agent,sub_agent,if_index,direction}``: ``in`` / ``out`` octets
* ``flowlens_interface_packets_total{...,direction,cast}``: ``unicast``, ``multicast``, ``broadcast``
* ``flowlens_interface_discards_total{...,direction}``, ``flowlens_interface_errors_total{...,direction}``
* ``flowlens_interface_speed_bits``: ifSpeed; ``flowlens_interface_up``: 1 when operationally up

The values are the device's own counters (they start where the device's do and may wrap).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

LABELS = ["agent", "sub_agent", "if_index"]
Snapshot = dict[str, dict[str, int]]  # "agent/sub_agent/if_index" -> counters


def snapshot(latest: dict[tuple[bytes, int, int], dict[str, int]]) -> Snapshot:
    """The decoder's counters keyed by text (what crosses the process boundary)."""
    out: Snapshot = {}
    for (agent, sub_agent, if_index), values in list(latest.items()):
        address = ipaddress.IPv6Address(agent)
        out[f"{address.ipv4_mapped or address}/{sub_agent}/{if_index}"] = values
    return out


def families(interfaces: Snapshot) -> Iterator[Any]:
    """Prometheus metric families of the merged snapshots."""
    octets = CounterMetricFamily(
        "flowlens_interface_octets", "Interface octets (sFlow counters)", labels=[*LABELS, "direction"]
    )
    packets = CounterMetricFamily("flowlens_interface_packets", "Interface packets (sFlow counters)",
                                  labels=[*LABELS, "direction", "cast"])  # fmt: skip
    discards = CounterMetricFamily("flowlens_interface_discards", "Interface discards", labels=[*LABELS, "direction"])
    errors = CounterMetricFamily("flowlens_interface_errors", "Interface errors", labels=[*LABELS, "direction"])
    speed = GaugeMetricFamily("flowlens_interface_speed_bits", "Interface speed (ifSpeed)", labels=LABELS)
    up = GaugeMetricFamily("flowlens_interface_up", "1 when the interface is operationally up", labels=LABELS)
    for key, v in sorted(interfaces.items()):
        labels = key.split("/")
        for direction in ("in", "out"):
            octets.add_metric([*labels, direction], v[f"{direction}_octets"])
            discards.add_metric([*labels, direction], v[f"{direction}_discards"])
            errors.add_metric([*labels, direction], v[f"{direction}_errors"])
            for cast in ("unicast", "multicast", "broadcast"):
                packets.add_metric([*labels, direction, cast], v[f"{direction}_{cast}_packets"])
        speed.add_metric(labels, v["if_speed"])
        up.add_metric(labels, (v["if_status"] >> 1) & 1)  # ifStatus bit 1: ifOperStatus up
    yield from (octets, packets, discards, errors, speed, up)
