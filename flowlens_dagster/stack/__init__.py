"""The local stack: PostgreSQL, Redis and Kafka under one project-local state directory."""
