"""Loaded models shared between sessions: one backend instance per (backend, source, LoadOptions).

The UI creates one :class:`ModelPool` and passes it to its handlers (it is not a module global).
Every session keeps only the *key* of the model it uses; the pool loads a model once and lends it
to every session that asks for the same key.

- Thread-safe: a lock guards the table; each key has its own lock, so two sessions asking for the
  same model wait for one load, while different models load independently.
- A failed load leaves the pool as it was: the models already loaded (the one a session was using
  before) stay usable.
- At most ``max_models`` stay loaded (default 1: models are big); the least recently used model
  that no generation is using is unloaded to make room (it is loaded again the next time a
  session needs it). A model busy generating is unloaded when its generation ends.
- ``admit`` (optional) vets every model before it loads: hosted mode refuses anything outside its
  catalog there, whichever panel asked.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

from backends.base import Backend, LoadOptions
from core.catalog import ModelSpec
from core.events import ProgressFn


class PoolKey(NamedTuple):
    backend: str
    source: str
    filename: str | None  # a file inside a Hub repo (GGUF): part of "which model"
    options: LoadOptions

    @classmethod
    def of(cls, spec: ModelSpec, options: LoadOptions) -> PoolKey:
        return cls(spec.backend, spec.source, spec.filename, options)


@dataclass
class _Entry:
    lock: threading.Lock = field(default_factory=threading.Lock)  # held while loading
    backend: Backend | None = None
    users: int = 0  # leases in progress (generations); never evicted while > 0
    last_used: float = 0.0


def _default_factory(name: str) -> Backend:
    from backends.registry import create_backend

    return create_backend(name)


class ModelPool:
    """Loads models on demand and shares them; see the module docstring."""

    def __init__(self, max_models: int = 1, factory: Callable[[str], Backend] | None = None,
                 admit: Callable[[ModelSpec, LoadOptions], None] | None = None) -> None:
        if max_models < 1:
            raise ValueError("max_models must be at least 1")
        self.max_models = max_models
        self._factory = factory or _default_factory
        self.admit = admit  # raises a PlaygroundError for a model that must not load
        self._lock = threading.Lock()
        self._entries: dict[PoolKey, _Entry] = {}

    # -- looking up ------------------------------------------------------------------------
    def peek(self, spec: ModelSpec, options: LoadOptions = LoadOptions()) -> Backend | None:
        """The loaded backend for this model, or None (never loads)."""
        with self._lock:
            entry = self._entries.get(PoolKey.of(spec, options))
            return entry.backend if entry else None

    def loaded_spec(self, source: str) -> ModelSpec | None:
        """The spec of a loaded model whose source is ``source`` (e.g. a local folder deleted since)."""
        with self._lock:
            for key, entry in self._entries.items():
                if key.source == source and entry.backend is not None and entry.backend.spec is not None:
                    return entry.backend.spec
        return None

    def loaded(self) -> list[PoolKey]:
        with self._lock:
            return [key for key, entry in self._entries.items() if entry.backend is not None]

    # -- loading ---------------------------------------------------------------------------
    def get(self, spec: ModelSpec, options: LoadOptions = LoadOptions(),
            progress: ProgressFn | None = None) -> Backend:
        """The backend for ``spec`` loaded with ``options``, loading it if needed.

        Raises the backend's ``PlaygroundError`` on failure; nothing else in the pool changes.
        """
        with self._lease(spec, options, progress) as backend:
            return backend

    @contextmanager
    def lease(self, spec: ModelSpec, options: LoadOptions = LoadOptions(),
              progress: ProgressFn | None = None) -> Iterator[Backend]:
        """Like :meth:`get`, and the model is not evicted until the ``with`` block ends."""
        with self._lease(spec, options, progress) as backend:
            yield backend

    @contextmanager
    def _lease(self, spec: ModelSpec, options: LoadOptions, progress: ProgressFn | None) -> Iterator[Backend]:
        options = options.validate()
        if self.admit is not None:
            self.admit(spec, options)
        key = PoolKey.of(spec, options)
        with self._lock:
            entry = self._entries.setdefault(key, _Entry())
            entry.users += 1  # keeps the entry (and, once loaded, its model) from eviction
        try:
            with entry.lock:  # one load per key; others asking for it wait here
                if entry.backend is None:
                    backend = self._factory(spec.backend)
                    backend.load(spec, options, progress)  # raises: nothing stored
                    entry.backend = backend
                backend = entry.backend
                entry.last_used = time.monotonic()
            self._evict(keep=key)
            yield backend
        finally:
            with self._lock:
                entry.users -= 1
                entry.last_used = time.monotonic()
                if entry.backend is None and entry.users == 0 and self._entries.get(key) is entry:
                    del self._entries[key]  # a failed load leaves no trace
            self._evict(keep=None)  # a model that was busy during a load may go now

    def _evict(self, keep: PoolKey | None) -> None:
        """Unload least recently used idle models beyond ``max_models``."""
        victims: list[Backend] = []
        with self._lock:
            loaded = [(e.last_used, k) for k, e in self._entries.items() if e.backend is not None]
            excess = len(loaded) - self.max_models
            for _, key in sorted(loaded):
                if excess <= 0:
                    break
                entry = self._entries[key]
                if key == keep or entry.users > 0:
                    continue
                victims.append(entry.backend)  # type: ignore[arg-type]
                del self._entries[key]
                excess -= 1
        for backend in victims:
            backend.unload()

    def unload_all(self) -> None:
        """Unload every idle model (models in use are left alone)."""
        with self._lock:
            victims = [(k, e) for k, e in self._entries.items() if e.users == 0]
            for key, _ in victims:
                del self._entries[key]
        for _, entry in victims:
            if entry.backend is not None:
                entry.backend.unload()
