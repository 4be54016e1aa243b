"""Benchmarks: see benchmarks/README.md (each script runs with one command)."""
