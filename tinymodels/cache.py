"""On-disk cache of the tiny models, keyed by the builder's own source code.

Layout: ``<cache_root>/<key>/<format>/``.  The key hashes the tinymodels sources, the chat
template, ``core/prompt.py`` (the models are trained on prompts split as the backends split them)
and the torch/transformers major versions, so a change to the builder rebuilds and
nothing else does.  Each format is written into a temp folder and renamed into place under a file
lock, so parallel test processes build once and never see half-written folders.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Callable, Optional

import torch
import transformers
from filelock import FileLock

from .registry import FORMATS, resolve

ProgressFn = Callable[[float, str], None]

_PKG_DIR = Path(__file__).resolve().parent
_TEMPLATE_FILE = _PKG_DIR.parent / "core" / "qwen3_template.py"
_PROMPT_FILE = _PKG_DIR.parent / "core" / "prompt.py"  # how backends split prompts: trained on too
DEFAULT_FORMATS = ("bf16", "fp8")
LOCK_TIMEOUT_S = 900


def cache_root() -> Path:
    """``$QWEN3_PLAYGROUND_CACHE/tiny`` if set, else ``~/.cache/qwen3-playground/tiny``."""
    base = os.environ.get("QWEN3_PLAYGROUND_CACHE")
    root = Path(base) if base else Path.home() / ".cache" / "qwen3-playground"
    return root / "tiny"


def _key_inputs() -> list[Path]:
    files = sorted(p for p in _PKG_DIR.rglob("*.py") if "__pycache__" not in p.parts)
    return files + [_TEMPLATE_FILE, _PROMPT_FILE]


def cache_key() -> str:
    h = hashlib.sha256()
    for f in _key_inputs():
        h.update(f.relative_to(_PKG_DIR.parent).as_posix().encode() + b"\0")
        h.update(f.read_bytes() + b"\0")
    h.update(f"torch{torch.__version__.split('.')[0]}|transformers{transformers.__version__.split('.')[0]}".encode())
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    return cache_root() / cache_key()


def _write_format(name: str, root: Path, force: bool, progress: Optional[ProgressFn]) -> Path:
    spec = FORMATS[name]
    final = root / name
    if final.is_dir() and not force:
        return final
    with FileLock(str(root / f".{name}.lock"), timeout=LOCK_TIMEOUT_S):
        if final.is_dir() and not force:  # another process built it while we waited
            return final
        # Under the lock nobody else writes this format: leftovers are from killed builds.
        for stale in [*root.glob(f".tmp-{name}-*"), *root.glob(f".old-{name}-*")]:
            shutil.rmtree(stale, ignore_errors=True)
        tmp = root / f".tmp-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            src = root / spec.needs if spec.needs else None
            kwargs = {}
            if progress and "progress" in inspect.signature(spec.writer).parameters:
                kwargs["progress"] = progress
            spec.writer(src, tmp, **kwargs)
            if final.exists():  # force: swap the old folder out, then delete it
                old = root / f".old-{name}-{uuid.uuid4().hex[:8]}"
                final.rename(old)
                tmp.rename(final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final


def build(
    formats: tuple[str, ...] | list[str] = DEFAULT_FORMATS,
    *,
    force: bool = False,
    progress: Optional[ProgressFn] = None,
) -> dict[str, Path]:
    """Build (or find in the cache) the given formats and their dependencies; return their folders.

    ``force`` rebuilds every requested format and its dependencies.  ``progress(fraction, message)``
    is called along the way.
    """
    order = resolve(tuple(formats))
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    manifest = root / "KEY.json"
    if not manifest.exists():  # for humans: what the key was computed from
        tmp = root / f".KEY-{os.getpid()}-{uuid.uuid4().hex[:8]}.json"
        tmp.write_text(json.dumps({
            "inputs": [str(p) for p in _key_inputs()],
            "torch": torch.__version__, "transformers": transformers.__version__,
        }, indent=1))
        tmp.replace(manifest)
    paths: dict[str, Path] = {}
    n = len(order)
    for i, name in enumerate(order):
        sub = None
        if progress:
            progress(i / n, f"tiny model {name}")

            def sub(frac: float, msg: str, _i: int = i, _name: str = name) -> None:
                progress((_i + max(0.0, min(1.0, frac))) / n, f"{_name}: {msg}")

        t0 = time.monotonic()
        paths[name] = _write_format(name, root, force, sub)
        if progress:
            progress((i + 1) / n, f"tiny model {name} ready ({time.monotonic() - t0:.1f} s)")
    return paths


def model_path(fmt: str = "bf16", progress: ProgressFn | None = None) -> Path:
    """Folder of one tiny-model format, built on demand if it is not in the cache yet."""
    final = cache_dir() / fmt
    if final.is_dir():
        return final
    return build((fmt,), progress=progress)[fmt]
