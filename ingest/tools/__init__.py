"""Developer tools of the ingest layer: export packet encoders, the synthetic exporter, capture reading.

None of this runs in the daemon. The tools make and read traffic for tests, benchmarks, ``flowlens
generate``, ``flowlens replay`` and ``flowlens decode``; they import only ``ingest``.
"""
