"""ZeroGPU on Hugging Face Spaces: GPU work runs inside ``spaces.GPU``; elsewhere nothing changes.

On a ZeroGPU Space (``SPACES_ZERO_GPU`` set by the platform) a GPU is attached only while a
function decorated with ``spaces.GPU`` runs, for at most the ``duration`` it asked for. The
playground decorates only the generation (the model is loaded outside, in the main process, so
that every session shares it) and sizes the duration from the request's ``max_new_tokens``.

Outside ZeroGPU (a local machine, a Space with a dedicated GPU or CPU) :func:`gpu` returns the
function unchanged and never imports ``spaces``: it is not a dependency of the playground.

What ZeroGPU raises (a lost slot: "GPU task aborted"; a visitor's spent quota) is a Gradio error
worded for the visitor; it becomes a :class:`GpuSlotError`, so hosted mode shows its words
instead of an unexpected error's type, with what to do about a lost slot.
"""
from __future__ import annotations

import functools
import inspect
import math
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from core.errors import PlaygroundError

F = TypeVar("F", bound=Callable[..., Any])

ENV_MAX_S = "QWEN3_PLAYGROUND_GPU_MAX_SECONDS"  # the longest slot to ask for
ENV_TOKENS_PER_S = "QWEN3_PLAYGROUND_GPU_TOKENS_PER_S"  # the generation speed to plan for
DEFAULT_MAX_S = 120  # ZeroGPU refuses longer slots for most accounts; a host can raise it
DEFAULT_TOKENS_PER_S = 30.0  # a conservative figure for the catalog's larger models on a shared GPU
MIN_S = 20
OVERHEAD_S = 10  # attaching the GPU, moving the weights, prefill


def on_zerogpu(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process runs on a ZeroGPU Space (the platform sets ``SPACES_ZERO_GPU``)."""
    env = os.environ if env is None else env
    return (env.get("SPACES_ZERO_GPU") or "").strip().lower() in ("1", "t", "true")


def gpu_duration(max_new_tokens: Any, env: Mapping[str, str] | None = None) -> int:
    """Seconds of GPU to ask for a reply of at most ``max_new_tokens`` tokens.

    ``OVERHEAD_S + max_new_tokens / tokens_per_s``, at least ``MIN_S``, at most the host's cap
    (``QWEN3_PLAYGROUND_GPU_MAX_SECONDS``, 120 by default): a longer reply is cut when the slot
    ends, and the part already streamed is kept and marked.
    """
    env = os.environ if env is None else env
    try:
        cap = max(MIN_S, int(env.get(ENV_MAX_S) or DEFAULT_MAX_S))
    except ValueError:
        cap = DEFAULT_MAX_S
    try:
        speed = float(env.get(ENV_TOKENS_PER_S) or DEFAULT_TOKENS_PER_S)
        speed = speed if speed > 0 else DEFAULT_TOKENS_PER_S
    except ValueError:
        speed = DEFAULT_TOKENS_PER_S
    try:
        tokens = max(1, int(max_new_tokens))
    except (TypeError, ValueError):
        tokens = 32768
    return int(min(cap, max(MIN_S, math.ceil(OVERHEAD_S + tokens / speed))))


def gpu(fn: F, max_new_tokens_arg: str = "max_new_tokens") -> F:
    """``spaces.GPU(fn, duration=...)`` on ZeroGPU, ``fn`` itself anywhere else.

    The duration is computed per call from the call's ``max_new_tokens_arg`` keyword argument.
    Generator functions are supported by ``spaces.GPU``; ``async def`` ones are not.
    """
    if not on_zerogpu():
        return fn
    try:
        import spaces  # only present (and only needed) on Spaces
    except ImportError:
        print("warning: SPACES_ZERO_GPU is set but the `spaces` package is not installed; "
              "generations run without requesting a GPU", file=sys.stderr)
        return fn

    def duration(*args: Any, **kwargs: Any) -> int:
        return gpu_duration(kwargs.get(max_new_tokens_arg))

    on_gpu = spaces.GPU(fn, duration=duration)
    if on_gpu is fn or not inspect.isgeneratorfunction(fn):  # handed back (no ZeroGPU hardware): runs here
        return on_gpu

    @functools.wraps(fn)
    def worded(*args: Any, **kwargs: Any) -> Iterator[Any]:
        try:
            yield from on_gpu(*args, **kwargs)
        except Exception as exc:
            error = slot_error(exc)
            if error is None:
                raise
            raise error from exc

    return worded  # type: ignore[return-value]


class GpuSlotError(PlaygroundError):
    """ZeroGPU ended the GPU slot before the reply did, or refused one (the visitor's quota)."""


def slot_error(exc: BaseException) -> GpuSlotError | None:
    """``exc`` as a :class:`GpuSlotError` when ZeroGPU raised it (a Gradio error: its message is
    written for the visitor); None for anything else."""
    if type(exc).__module__.split(".")[0] != "gradio":
        return None
    message = str(getattr(exc, "message", "") or exc).strip() or "the GPU slot was lost"
    if "aborted" in message.lower():
        message += (" (the GPU slot ended before the reply did: what streamed is kept; send again, or lower "
                    "max_new_tokens for a shorter slot)")
    return GpuSlotError(f"ZeroGPU: {message}")
