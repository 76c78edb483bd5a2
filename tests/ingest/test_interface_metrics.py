"""sFlow counter samples reach the metrics endpoint as interface metrics (not flows)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from ingest import interface_metrics
from ingest.decode import Decoder
from ingest.metrics import DaemonCollector, WorkerStats
from ingest.tools.encode_sflow import counter_sample, datagram, interface_counters


def _worker_snapshot(agent: str, if_index: int, values: dict[str, int]) -> dict:
    decoder = Decoder()
    decoder.decode(datagram(agent, [counter_sample([interface_counters(if_index, values)])], sub_agent=2), agent, 0)
    stats = WorkerStats()
    stats.interfaces = interface_metrics.snapshot(decoder.interface_counters.latest)
    return stats.snapshot()


def test_counters_of_every_process_are_served() -> None:
    collector = DaemonCollector([])
    collector.update("w0", _worker_snapshot("192.0.2.1", 3, {"in_octets": 1234, "out_errors": 5, "if_status": 3}))
    collector.update("w1", _worker_snapshot("2001:db8::1", 7, {"in_broadcast_packets": 8, "if_status": 1}))
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    assert 'flowlens_interface_octets_total{agent="192.0.2.1",direction="in",if_index="3",sub_agent="2"} 1234.0' in text
    assert 'flowlens_interface_errors_total{agent="192.0.2.1",direction="out",if_index="3",sub_agent="2"} 5.0' in text
    assert (
        'flowlens_interface_packets_total{agent="2001:db8::1",cast="broadcast",direction="in",if_index="7",'
        'sub_agent="2"} 8.0' in text
    )
    assert 'flowlens_interface_up{agent="192.0.2.1",if_index="3",sub_agent="2"} 1.0' in text
    assert 'flowlens_interface_up{agent="2001:db8::1",if_index="7",sub_agent="2"} 0.0' in text
