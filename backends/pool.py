"""Loaded models shared between sessions: one backend instance per (backend, source, LoadOptions).

The UI creates one :class:`ModelPool` and passes it to its handlers (it is not a module global).
Every session keeps only the *key* of the model it uses; the pool loads a model once and lends it
to every session that asks for the same key.

- Thread-safe: a lock guards the table; each key has its own lock, so two sessions asking for the
  same model wait for one load, while different models load independently.
- A failed load leaves no entry behind (and frees its slot).
- ``max_models`` is a hard cap (default 1: models are big): models loaded, loading or still
  unloading never number more, whichever path asks. A load that needs a slot first unloads the
  least recently used model no lease holds (it loads again the next time a session needs it);
  if every slot is leased (replies streaming), the load waits for a lease to end, up to
  ``wait_s``, then fails with :class:`ModelSlotsBusy`. A model is never unloaded mid-reply.
  So with one slot, switching models unloads the previous one *before* the new one loads (a
  failed load then leaves none: the previous one loads again when next used).
- ``admit`` (optional) vets every model before it loads: hosted mode refuses anything outside its
  catalog there, whichever panel asked.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from backends.base import Backend, LoadOptions
from core.catalog import ModelSpec
from core.errors import ModelSlotsBusy
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


DEFAULT_WAIT_S = 300.0  # how long a load waits for a leased slot to be handed back
STOP_POLL_S = 0.2  # how soon a Stop ends that wait


class ModelPool:
    """Loads models on demand and shares them; see the module docstring."""

    def __init__(self, max_models: int = 1, factory: Callable[[str], Backend] | None = None,
                 admit: Callable[[ModelSpec, LoadOptions], None] | None = None,
                 wait_s: float = DEFAULT_WAIT_S) -> None:
        if max_models < 1:
            raise ValueError("max_models must be at least 1")
        self.max_models = max_models
        self.wait_s = wait_s
        self._factory = factory or _default_factory
        self.admit = admit  # raises a PlaygroundError for a model that must not load
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a lease ended, a slot freed
        self._entries: dict[PoolKey, _Entry] = {}  # loaded or loading: each holds a slot
        self._unloading = 0  # evicted models still being freed: their slots are not free yet
        self.peak = 0  # the most slots ever held at once (loaded + loading + unloading)

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

    @property
    def in_use(self) -> int:
        """Slots held now: models loaded, loading or still unloading (never above ``max_models``)."""
        with self._lock:
            return self._held()

    # -- loading ---------------------------------------------------------------------------
    def get(self, spec: ModelSpec, options: LoadOptions = LoadOptions(),
            progress: ProgressFn | None = None) -> Backend:
        """The backend for ``spec`` loaded with ``options``, loading it if needed.

        Raises the backend's ``PlaygroundError`` on failure (or :class:`ModelSlotsBusy`).
        """
        with self._lease(spec, options, progress) as backend:
            return backend

    @contextmanager
    def lease(self, spec: ModelSpec, options: LoadOptions = LoadOptions(),
              progress: ProgressFn | None = None, stop: Any = None) -> Iterator[Backend]:
        """Like :meth:`get`, and the model is not evicted until the ``with`` block ends.
        ``stop`` (anything with ``is_set()``): set while waiting for a slot, the wait ends
        (``ModelSlotsBusy``) instead of loading a model for a reply nobody waits for any more."""
        with self._lease(spec, options, progress, stop) as backend:
            yield backend

    @contextmanager
    def _lease(self, spec: ModelSpec, options: LoadOptions, progress: ProgressFn | None,
               stop: Any = None) -> Iterator[Backend]:
        options = options.validate()
        if self.admit is not None:
            self.admit(spec, options)
        key = PoolKey.of(spec, options)
        entry = self._take_slot(key, progress, stop)  # counts this lease as a user
        try:
            with entry.lock:  # one load per key; others asking for it wait here
                if entry.backend is None:
                    backend = self._factory(spec.backend)
                    backend.load(spec, options, progress)  # raises: nothing stored
                    entry.backend = backend
                backend = entry.backend
                entry.last_used = time.monotonic()
            yield backend
        finally:
            with self._changed:
                entry.users -= 1
                entry.last_used = time.monotonic()
                if entry.backend is None and entry.users == 0 and self._entries.get(key) is entry:
                    del self._entries[key]  # a failed load leaves no trace
                self._changed.notify_all()

    def _held(self) -> int:
        return len(self._entries) + self._unloading

    def _take_slot(self, key: PoolKey, progress: ProgressFn | None, stop: Any = None) -> _Entry:
        """The entry for ``key`` with this lease counted: the existing one (loaded or loading),
        else a new one in a free slot, freeing the least recently used idle model first, or
        waiting for a lease to end when every slot is leased."""
        deadline: float | None = None
        with self._changed:
            while True:
                entry = self._entries.get(key)
                if entry is not None:
                    entry.users += 1
                    return entry
                if self._held() < self.max_models:
                    entry = self._entries[key] = _Entry(users=1)
                    self.peak = max(self.peak, self._held())
                    return entry
                idle = [(e.last_used, k) for k, e in self._entries.items() if e.users == 0]
                if idle:
                    victim_key = min(idle)[1]
                    self._unload(self._entries.pop(victim_key))
                    continue
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.wait_s
                    if progress is not None:
                        self._lock.release()  # never call out with the lock held
                        try:
                            progress(0.0, f"Waiting for a free model slot (all {self.max_models} busy with replies)")
                        finally:
                            self._lock.acquire()
                        continue
                if stop is not None and stop.is_set():
                    raise ModelSlotsBusy("stopped while waiting for a free model slot")
                if now >= deadline:
                    raise ModelSlotsBusy(
                        f"every model slot of this playground ({self.max_models}) is busy with replies still "
                        f"running; waited {self.wait_s:g} s: try again when they end")
                # a slot frees with a notify; a Stop has none to send here, hence the short slices
                self._changed.wait(min(deadline - now, STOP_POLL_S) if stop is not None else deadline - now)

    def _unload(self, entry: _Entry) -> None:
        """Free an entry already taken out of the table (called, and returns, with the lock held);
        its slot stays counted until its memory is freed."""
        self._unloading += 1
        self._lock.release()
        try:
            if entry.backend is not None:
                entry.backend.unload()
        finally:
            self._lock.acquire()
            self._unloading -= 1
            self._changed.notify_all()

    def unload_all(self) -> None:
        """Unload every idle model (models in use are left alone)."""
        with self._changed:
            while True:  # the table may change while one unloads: look again each time
                key = next((k for k, e in self._entries.items() if e.users == 0), None)
                if key is None:
                    return
                self._unload(self._entries.pop(key))
