"""NetFlow v5, v9 and IPFIX decoding: bytes in, ``FLOW_SCHEMA`` Arrow record batches out.

    from ingest.decode import Decoder, DecoderLimits
    dec = Decoder(default_sampling_rate=1, sampling_overrides={"10.0.0.0/8": 100})
    batch = dec.decode(payload, "192.0.2.1", receive_time_us)
    batch = dec.decode_many([(exporter, payload, receive_time_us), ...])  # the fast path
    dec.stats.as_dict(); dec.save_state(path); dec.load_state(path)

Pure library: no sockets, no files except ``save_state``/``load_state``.
"""

from ingest.decode.decoder import Decoder, DecoderLimits, DecoderStats

__all__ = ["Decoder", "DecoderLimits", "DecoderStats"]
