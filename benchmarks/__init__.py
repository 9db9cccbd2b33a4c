"""Measured figures of AI Farm; `python -m benchmarks` runs them all and writes results/latest.md."""
