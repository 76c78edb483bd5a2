"""Fakes that stand in for outside services in tests and benches: a PTR (reverse DNS) server, GeoIP databases."""
