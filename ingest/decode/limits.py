"""The caps and counters every part of the decoder shares (``Decoder.limits``, ``Decoder.stats``)."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from ingest.schema import SFLOW_VERSION

_PACKET_NAMES = {10: "ipfix", SFLOW_VERSION: "sflow"}


@dataclass
class DecoderLimits:
    """Caps that keep memory bounded whatever exporters (or attackers) send."""

    max_templates: int = 20_000  # all exporters together
    max_exporters: int = 5_000  # distinct exporters holding templates or sampling state
    max_fields_per_template: int = 256
    max_pending_bytes: int = 16 << 20  # data waiting for its template
    max_pending_sets: int = 20_000
    template_timeout_s: float = 6 * 3600  # a template not re-announced for this long expires
    max_sampler_entries: int = 100_000


@dataclass
class DecoderStats:
    """Counters since the decoder was created (``as_dict()`` for JSON/metrics)."""

    packets: dict[int, int] = field(default_factory=lambda: {5: 0, 9: 0, 10: 0, SFLOW_VERSION: 0})
    records: int = 0
    errors: Counter = field(default_factory=Counter)  # reason -> packets or sets rejected
    events: Counter = field(default_factory=Counter)  # normal happenings: templates learned, ...
    pending: int = 0  # data sets held waiting for a template
    pending_bytes: int = 0
    templates: int = 0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["packets"] = {_PACKET_NAMES.get(k, f"v{k}"): v for k, v in self.packets.items()}
        data["errors"], data["events"] = dict(self.errors), dict(self.events)
        return data
