"""Backend names -> implementations, imported only when used (heavy libraries stay unloaded).

Add a backend with one line in ``_LAZY`` (or :func:`register` at run time); the UI and CLI only
ever go through :func:`create_backend`.
"""
from __future__ import annotations

import importlib

from backends.base import Backend
from core.errors import PlaygroundError

_LAZY: dict[str, str] = {
    "transformers": "backends.transformers_backend:TransformersBackend",
    "gptq": "backends.gptq_backend:GPTQBackend",
    "llama.cpp": "backends.llama_cpp_backend:LlamaCppBackend",
    "remote": "backends.remote_backend:RemoteBackend",
}
_LOADED: dict[str, type[Backend]] = {}


def register(name: str, target: str | type[Backend]) -> None:
    """Register ``name`` as ``"module:Class"`` (imported lazily) or a Backend class."""
    if isinstance(target, str):
        _LAZY[name] = target
        _LOADED.pop(name, None)
    else:
        _LOADED[name] = target


def backend_names() -> list[str]:
    return sorted(set(_LAZY) | set(_LOADED))


def backend_class(name: str) -> type[Backend]:
    if name in _LOADED:
        return _LOADED[name]
    if name not in _LAZY:
        raise PlaygroundError(f"unknown backend {name!r}; available: {', '.join(backend_names())}")
    module_name, class_name = _LAZY[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PlaygroundError(f"the {name} backend needs a library that is not installed: {exc}") from exc
    cls = getattr(module, class_name)
    _LOADED[name] = cls
    return cls


def create_backend(name: str) -> Backend:
    return backend_class(name)()
