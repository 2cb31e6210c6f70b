"""Benchmark workloads (docs/benchmarks.md), runnable as `cosmogen bench NAME`."""
