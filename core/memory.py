"""Whether the host can hold a model: hosted mode's picker and loads ask before any download.

The estimate is the checkpoint's size (the catalog's ``size_gb``, local files or the Hub's
metadata) times an allowance for the runtime and a short chat's KV cache; an FP8 checkpoint
counts twice where it is dequantized to bf16 (no native FP8: CPUs, GPUs below compute
capability 8.9). It must fit in the memory models may use divided by ``--max-models`` (that
many can be loaded at once).
"""
from __future__ import annotations

from dataclasses import dataclass

from core.catalog import ModelSpec

GB = 10**9
RUNTIME_ALLOWANCE = 1.2  # on top of the weights: buffers, a short chat's KV cache


@dataclass(frozen=True)
class HostMemory:
    """Memory models may use: measured when the app starts (before it loads anything), or the host's figure."""

    bytes: int
    where: str  # "GPU" | "RAM" | "set by the host"
    native_fp8: bool = False  # an FP8 checkpoint stays FP8 (else it is dequantized: twice the memory)


def needed_bytes(spec: ModelSpec, checkpoint_bytes: int, native_fp8: bool) -> int:
    """About how much memory ``spec`` takes loaded, from its checkpoint's size."""
    dequantized = 2 if spec.format == "fp8" and not native_fp8 else 1
    return int(checkpoint_bytes * RUNTIME_ALLOWANCE * dequantized)


def fit_problem(spec: ModelSpec, checkpoint_bytes: int | None, memory: HostMemory, max_models: int) -> str | None:
    """Why the host cannot hold ``spec`` (a line fit for a visitor), or None: it fits, or its
    size is unknown (nothing to go on)."""
    if checkpoint_bytes is None:
        return None
    need = needed_bytes(spec, checkpoint_bytes, memory.native_fp8)
    share = memory.bytes // max(1, max_models)
    if need <= share:
        return None
    room = (f"this playground has {memory.bytes / GB:.1f} GB for models" if max_models == 1 else
            f"this playground has {share / GB:.1f} GB per model ({memory.bytes / GB:.1f} GB for {max_models} models)")
    return f"{spec.name} is too big for this playground: it needs about {need / GB:.1f} GB of memory and {room}"
