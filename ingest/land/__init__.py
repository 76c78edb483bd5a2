"""Landing: where decoded flow batches go (Kafka ``flows.raw`` or PostgreSQL ``flow_raw``)."""
