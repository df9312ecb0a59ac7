"""Benchmarks of Mandate: the in-process decision path (micro), the gRPC floor, the load-test runner."""
