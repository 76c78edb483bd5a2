"""NetFlow v5, v9, IPFIX and sFlow v5 decoding: bytes in, ``FLOW_SCHEMA`` Arrow record batches out.

    from ingest.decode import Decoder, DecoderLimits
    dec = Decoder(default_sampling_rate=1, sampling_overrides={"10.0.0.0/8": 100})
    batch = dec.decode(payload, "192.0.2.1", receive_time_us)
    batch = dec.decode_many([(exporter, payload, receive_time_us), ...])  # the fast path
    dec.stats.as_dict(); dec.save_state(path); dec.load_state(path)

Pure library: no sockets, no files except ``save_state``/``load_state``.

Where the rules live: ``decoder`` (the packet walk), ``store`` (templates, expiry, options-learned
rates; ``persist`` saves and loads it), ``pending`` (data before template), ``assemble`` (the
vectorized finish), ``limits`` (caps, error counters), ``frontend`` (``decode_many`` reading
every packet header of a call at once and taking the common packets without a Python step each),
``context`` (what records inherit from their packet), ``templates`` (template keys and
compilation), ``columns`` (the Cisco ASA NSEL and RFC 5103 biflow rules), ``sampling`` (which
rate applies), ``timestamps`` (time IEs, sysUptime wraparound), ``headers`` (sampled packet
headers: IPFIX packet sections and sFlow), ``sflow`` (sFlow v5 datagrams). ``stats.errors``
reasons: ``truncated``, ``malformed``, ``unknown_version``, ``reserved_set_id``,
``template_too_large``, ``template_limit``, ``exporter_limit``, ``no_template_dropped``,
``bad_exporter``, ``bad_sampling_rate``, ``counter_limit`` and ``internal`` (a decoder bug caught
by the safety net; never expected).
"""

from ingest.decode.decoder import Decoder, DecoderLimits, DecoderStats

__all__ = ["Decoder", "DecoderLimits", "DecoderStats"]
