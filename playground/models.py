"""Models outside the shared pool: the tiny models' files, and one-off loads (CLI, tests, benchmarks).

The tiny demo models are built on this machine by ``tinymodels``; :func:`materialise` puts their
folder into the spec (``ModelSpec.local_path``) before a backend sees it, so that backends and
``core`` never import the builder.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace

from backends.base import Backend
from backends.registry import create_backend
from core.catalog import TINY_PREFIX, ModelSpec, resolve_model
from core.events import ProgressFn
from core.request import LoadOptions


def materialise(spec: ModelSpec, progress: ProgressFn | None = None) -> ModelSpec:
    """``spec`` with ``local_path`` set when the playground makes its files (tiny models: built,
    or found in the cache); any other spec unchanged (its backend downloads or opens it)."""
    if not spec.is_tiny or spec.local_path:
        return spec
    import tinymodels

    path = tinymodels.model_path(spec.source[len(TINY_PREFIX):], progress=progress)
    return replace(spec, local_path=str(path))


def open_model(ref: str | ModelSpec, *, backend: str | None = None, options: LoadOptions = LoadOptions(),
               progress: ProgressFn | None = None) -> Backend:
    """A model of its own, outside any pool: ``ref`` (catalog name, Hub repo id, local path or a
    spec) loaded on its backend. The caller unloads it."""
    spec = ref if isinstance(ref, ModelSpec) else resolve_model(ref, backend)
    spec = materialise(spec, progress)
    instance = create_backend(spec.backend)
    instance.load(spec, options, progress)
    return instance


@contextlib.contextmanager
def load_fresh(spec: ModelSpec, options: LoadOptions, progress: ProgressFn | None) -> Iterator[Backend]:
    """Load, lend, unload: for one-off runs (the CLI's compare), so entries don't compete for memory."""
    backend = open_model(spec, options=options, progress=progress)
    try:
        yield backend
    finally:
        backend.unload()
