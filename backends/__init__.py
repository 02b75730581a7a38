"""Backends: one module per library behind the interface in ``backends.base``."""
