"""The model catalog (``presets/catalog.json``) and resolving what a user typed to a model.

``--model`` accepts a catalog name, a Hub repo id or a local path (folder or GGUF file); the
backend is inferred from what the model is, unless the user names one.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ModelLoadError, ModelNotFound

CATALOG_FILE = Path(__file__).resolve().parent.parent / "presets" / "catalog.json"
TINY_PREFIX = "tiny:"  # source of a model the project builds itself (tinymodels)
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from and which backend runs it."""

    name: str
    backend: str  # "transformers" | "gptq" | "llama.cpp" | "remote"
    source: str  # Hub repo id, local path, "tiny:<format>", or a served model name (remote)
    format: str = "bf16"  # bf16 | fp8 | gptq-int4 | gptq-int8 | awq | gguf-Q4_K_M ... | remote
    filename: str | None = None  # a file inside a Hub repo (GGUF)
    thinking: str = "hybrid"  # "hybrid" (switchable) | "always" | "never"
    quantized: bool = False
    params: str = ""
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    size_gb: float | None = None  # the checkpoint's files, about (GB = 10^9 bytes); None: unknown
    # where the files already are, when the playground made them (the tiny models); backends
    # read it before ``source`` (which stays the model's identity)
    local_path: str | None = field(default=None, compare=False)

    @property
    def fixed_thinking(self) -> bool | None:
        """True: the model always thinks; False: it never does; None: the hard switch decides."""
        return {"always": True, "never": False}.get(self.thinking)

    def effective_thinking(self, requested: bool) -> bool:
        """What the model will do when the hard switch says ``requested`` (the one place this
        rule lives: Qwen3-*-Thinking-2507 always think, *-Instruct-2507 never do)."""
        fixed = self.fixed_thinking
        return bool(requested) if fixed is None else fixed

    @property
    def is_tiny(self) -> bool:
        return self.source.startswith(TINY_PREFIX)

    @property
    def is_local_path(self) -> bool:
        return not self.is_tiny and Path(self.source).expanduser().exists()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["local_path"]  # where this machine keeps it: not part of what the model is
        return data


def load_catalog(path: Path = CATALOG_FILE) -> list[ModelSpec]:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))["models"]
        return [ModelSpec(**row) for row in rows]
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"model catalog {path} is malformed: {exc}") from None


def _is_quantized(fmt: str) -> bool:
    return fmt not in ("bf16", "fp16", "fp32", "remote")


def inspect_local(path: Path) -> tuple[str, str]:
    """(backend, format) of a local checkpoint folder or GGUF file, read from its files."""
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return "llama.cpp", "gguf"
        raise ModelNotFound(f"{path} is a file but not a GGUF model (.gguf)")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelNotFound(f"{path} is not a model folder: it has no config.json")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{config_file} is corrupt: {exc}") from None
    quant = config.get("quantization_config") or {}
    method = str(quant.get("quant_method", "")).lower()
    if method in ("gptq", "awq"):
        return "gptq", f"{method}-int{quant.get('bits', 4)}"
    if method == "fp8":
        return "transformers", "fp8"
    return "transformers", str(config.get("torch_dtype") or config.get("dtype") or "bf16").replace("bfloat16", "bf16")


def _infer_from_repo_id(repo_id: str) -> tuple[str, str]:
    upper = repo_id.upper()
    if "GGUF" in upper:
        return "llama.cpp", "gguf"
    if "GPTQ" in upper:
        return "gptq", "gptq-int8" if "INT8" in upper else "gptq-int4"
    if "AWQ" in upper:
        return "gptq", "awq"
    if "FP8" in upper:
        return "transformers", "fp8"
    return "transformers", "bf16"


def resolve_model(ref: str, backend: str | None = None, catalog: list[ModelSpec] | None = None) -> ModelSpec:
    """Turn a catalog name, Hub repo id or local path into a :class:`ModelSpec`."""
    ref = (ref or "").strip()
    if not ref:
        raise ModelNotFound("no model given: pass a catalog name, a Hub repo id or a local path")
    if backend == "remote":  # the served model's name, as the server knows it
        return ModelSpec(name=ref, backend="remote", source=ref, format="remote")
    entries = load_catalog() if catalog is None else catalog
    for spec in entries:
        if ref in (spec.name, spec.source) or (spec.filename and ref == f"{spec.source}/{spec.filename}"):
            if backend and backend != spec.backend:
                return ModelSpec(**{**spec.to_dict(), "backend": backend})
            return spec
    path = Path(ref).expanduser()
    if path.exists():
        found_backend, fmt = inspect_local(path)
        return ModelSpec(name=path.name, backend=backend or found_backend, source=str(path.resolve()),
                         format=fmt, quantized=_is_quantized(fmt))
    if _REPO_ID.match(ref) and not ref.startswith((".", "/", "~")):
        found_backend, fmt = _infer_from_repo_id(ref)
        return ModelSpec(name=ref, backend=backend or found_backend, source=ref, format=fmt,
                         quantized=_is_quantized(fmt))
    raise ModelNotFound(
        f"unknown model {ref!r}: not a catalog name, an existing path or a Hub repo id (owner/name); "
        "`python app.py models` lists the catalog"
    )
