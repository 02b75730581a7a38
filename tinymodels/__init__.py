"""Tiny trained Qwen3 models (bf16, FP8, GGUF, ...) that follow a fixed script; used by the offline demo
and by every test.

    from tinymodels import build, model_path
    paths = build(("bf16", "fp8"))      # {"bf16": Path, "fp8": Path}, cached
    model_path("fp8")                    # builds on demand

Formats live in a registry (``tinymodels.registry.register_format``); importing this package
registers the built-in ones.  The script the models follow is ``tinymodels.script``.
"""

from __future__ import annotations

from . import build as _build_module  # noqa: F401  (registers "bf16")
from . import fp8 as _fp8_module  # noqa: F401  (registers "fp8")
from . import gptq as _gptq_module  # noqa: F401  (registers "gptq-int4", "moe-gptq-int4", "gptq-int8", "awq-int4")
from . import moe as _moe_module  # noqa: F401  (registers "moe-bf16")
from . import gguf as _gguf_module  # noqa: F401  (registers "gguf-f16", "gguf-q8_0", "gguf-q4_k_m")
from . import random_size as _random_size_module  # noqa: F401  (registers "random-0.6b-*", on request only)
from .cache import build, cache_dir, cache_key, cache_root, model_path
from .registry import FORMATS, register_format
from .script import CASES, LEAKED_HISTORY_CASE, SCRIPTED_TEXT, TOOL_CASES, ScriptedCase

__all__ = [
    "build", "model_path", "cache_root", "cache_dir", "cache_key", "FORMATS", "register_format",
    "CASES", "LEAKED_HISTORY_CASE", "SCRIPTED_TEXT", "TOOL_CASES", "ScriptedCase",
]
