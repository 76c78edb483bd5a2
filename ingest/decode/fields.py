"""Table-driven Information Element (IE) definitions: which template fields the decoder reads.

NetFlow v9 field types 1-127 and IPFIX IANA IEs share numbers, so one table serves both.
Only the IEs that feed a column of ``ingest.schema.FLOW_SCHEMA`` (or sampling, timestamps,
biflow and firewall-event handling) are listed; every other field is skipped by its length,
whatever it is. Each entry names a *role*: the decoder looks roles up, never IE numbers.

A role may be filled by several IEs (``bytes``: octetDeltaCount, octetTotalCount,
postOctetDeltaCount, ...). ``ROLE_PRIORITY`` orders them: the first one present in a template wins,
so a template carrying both in- and out- counters reports the ingress ones.
"""

from __future__ import annotations

from typing import Final

# Private enterprise number of RFC 5103 reverse IEs (biflows): same IE numbers, other direction.
REVERSE_PEN: Final = 29305

# IE number -> (role, kind). kind: "uint" (big-endian unsigned, any width 1-8 bytes: reduced-size
# encoding), "addr4", "addr6", "bytes" (opaque; variable length allowed), "ntp" (64-bit NTP time).
IE: Final[dict[int, tuple[str, str]]] = {
    1: ("bytes", "uint"),  # octetDeltaCount / IN_BYTES
    2: ("packets", "uint"),  # packetDeltaCount / IN_PKTS
    4: ("protocol", "uint"),
    6: ("tcp_flags", "uint"),
    7: ("src_port", "uint"),
    8: ("src_addr4", "addr4"),
    10: ("input_if", "uint"),
    11: ("dst_port", "uint"),
    12: ("dst_addr4", "addr4"),
    14: ("output_if", "uint"),
    16: ("src_as", "uint"),
    17: ("dst_as", "uint"),
    21: ("end_uptime", "uint"),  # flowEndSysUpTime / LAST_SWITCHED (ms since exporter boot)
    22: ("start_uptime", "uint"),  # flowStartSysUpTime / FIRST_SWITCHED
    23: ("out_bytes", "uint"),  # postOctetDeltaCount / OUT_BYTES
    24: ("out_packets", "uint"),  # postPacketDeltaCount / OUT_PKTS
    27: ("src_addr6", "addr6"),
    28: ("dst_addr6", "addr6"),
    34: ("sampling_interval", "uint"),  # samplingInterval (deprecated, still common)
    35: ("sampling_algorithm", "uint"),
    48: ("sampler_id", "uint"),  # samplerId / FLOW_SAMPLER_ID
    49: ("sampler_mode", "uint"),
    50: ("sampler_interval", "uint"),  # samplerRandomInterval
    61: ("direction", "uint"),
    85: ("total_bytes", "uint"),  # octetTotalCount
    86: ("total_packets", "uint"),
    150: ("start_s", "uint"),
    151: ("end_s", "uint"),
    152: ("start_ms", "uint"),
    153: ("end_ms", "uint"),
    154: ("start_us", "ntp"),
    155: ("end_us", "ntp"),
    156: ("start_ns", "ntp"),
    157: ("end_ns", "ntp"),
    158: ("start_delta_us", "uint"),  # microseconds before the export time
    159: ("end_delta_us", "uint"),
    160: ("system_init_ms", "uint"),  # exporter boot time, absolute ms: turns *_uptime absolute
    161: ("duration_ms", "uint"),
    176: ("icmp_type4", "uint"),
    177: ("icmp_code4", "uint"),
    180: ("udp_src_port", "uint"),
    181: ("udp_dst_port", "uint"),
    182: ("tcp_src_port", "uint"),
    183: ("tcp_dst_port", "uint"),
    231: ("initiator_bytes", "uint"),  # NSEL NF_F_FWD_FLOW_DELTA_BYTES / initiatorOctets
    232: ("responder_bytes", "uint"),  # NSEL NF_F_REV_FLOW_DELTA_BYTES / responderOctets
    233: ("fw_event", "uint"),  # firewallEvent
    298: ("initiator_packets", "uint"),
    299: ("responder_packets", "uint"),
    305: ("sampling_packet_interval", "uint"),
    306: ("sampling_packet_space", "uint"),
    312: ("frame_size", "uint"),  # dataLinkFrameSize: the sampled frame's length (with IE 315)
    315: ("frame_section", "bytes"),  # dataLinkFrameSection (RFC 7133)
    104: ("l2_section", "bytes"),  # layer2packetSectionData: an Ethernet frame's first bytes
    313: ("ip_header_section", "bytes"),  # ipHeaderPacketSection: from the IP header on
    314: ("ip_payload_section", "bytes"),  # ipPayloadPacketSection: from the transport header on
    323: ("observation_ms", "uint"),  # observationTimeMilliseconds (NSEL event time)
    40005: ("fw_event", "uint"),  # Cisco ASA NF_F_FW_EVENT (v9 only)
}

# Reverse (RFC 5103) IEs with PEN 29305 that carry counters of the reverse flow.
REVERSE_IE: Final[dict[int, str]] = {
    1: "rev_bytes",
    2: "rev_packets",
    85: "rev_total_bytes",
    86: "rev_total_packets",
    6: "rev_tcp_flags",
}

# Sampling IEs read from options data (and from data records when present in the template).
SAMPLING_ROLES: Final = (
    "sampling_interval",
    "sampling_algorithm",
    "sampler_id",
    "sampler_mode",
    "sampler_interval",
    "sampling_packet_interval",
    "sampling_packet_space",
)

# Output column -> the roles that can fill it, first present in the template wins (see above).
ROLE_PRIORITY: Final[dict[str, tuple[str, ...]]] = {
    "bytes": ("bytes", "initiator_bytes", "total_bytes", "out_bytes"),  # deltas before totals
    "packets": ("packets", "initiator_packets", "total_packets", "out_packets"),
    "src_port": ("src_port", "udp_src_port", "tcp_src_port"),
    "dst_port": ("dst_port", "udp_dst_port", "tcp_dst_port"),
}

# Default templates of the packet builders in ingest.tools.encode: addresses, then the same fields.
_V9_REST: Final = (
    (7, 2),
    (11, 2),
    (4, 1),
    (6, 1),
    (1, 4),
    (2, 4),
    (22, 4),
    (21, 4),
    (10, 2),
    (14, 2),
    (16, 2),
    (17, 2),
    (61, 1),
)
_IPFIX_REST: Final = (
    (7, 2),
    (11, 2),
    (4, 1),
    (6, 2),
    (1, 8),
    (2, 8),
    (152, 8),
    (153, 8),
    (10, 4),
    (14, 4),
    (16, 4),
    (17, 4),
    (61, 1),
)
V9_IPV4_FIELDS: Final = ((8, 4), (12, 4), *_V9_REST)
V9_IPV6_FIELDS: Final = ((27, 16), (28, 16), *_V9_REST)
IPFIX_IPV4_FIELDS: Final = ((8, 4), (12, 4), *_IPFIX_REST)
IPFIX_IPV6_FIELDS: Final = ((27, 16), (28, 16), *_IPFIX_REST)
