"""Benchmarks (scripts, not tests): ``python -m bench.speed``, ``python bench/kv_reuse.py``."""
