"""Benchmarks: ``python -m bench`` (see docs/PERFORMANCE.md for what is measured and why)."""
