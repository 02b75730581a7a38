"""From what a user typed to a loaded backend: resolve, pick the backend, load."""
from __future__ import annotations

from backends.base import Backend, LoadOptions
from backends.registry import create_backend
from core.catalog import resolve_model
from core.hub import ProgressFn


def open_model(ref: str, *, backend: str | None = None, options: LoadOptions = LoadOptions(),
               progress: ProgressFn | None = None) -> Backend:
    """Load ``ref`` (catalog name, Hub repo id or local path) on its backend and return it."""
    spec = resolve_model(ref, backend)
    instance = create_backend(spec.backend)
    instance.load(spec, options, progress)
    return instance
