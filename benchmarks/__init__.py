"""Benchmarks: each prints a table. Run them as modules from the top-level folder."""
