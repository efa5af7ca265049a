"""Benchmarks of coldstart against the naive way and plain loops: `make bench` (python -m bench)."""
