"""The machine's free memory for models, read without importing a model library (start-up stays fast).

An NVIDIA GPU (``nvidia-smi`` on the PATH): its free memory, and whether it runs FP8 natively
(compute capability >= 8.9). Otherwise the available RAM (CPU, Apple unified memory).
"""
from __future__ import annotations

import shutil
import subprocess

from core.memory import HostMemory

NATIVE_FP8_CAPABILITY = 8.9


def free_memory() -> HostMemory:
    """What models may use on this machine now (see the module docstring)."""
    gpu = _nvidia_free()
    if gpu is not None:
        return gpu
    import psutil

    return HostMemory(int(psutil.virtual_memory().available), "RAM")


def _nvidia_free() -> HostMemory | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    for fields in ("memory.free,compute_cap", "memory.free"):  # older drivers know no compute_cap
        try:
            done = subprocess.run([exe, f"--query-gpu={fields}", "--format=csv,noheader,nounits"],
                                  capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        if done.returncode != 0 or not done.stdout.strip():
            continue
        values = [v.strip() for v in done.stdout.strip().splitlines()[0].split(",")]  # the first GPU: the one models use
        try:
            free_mib = float(values[0])
            capability = float(values[1]) if len(values) > 1 else 0.0
        except ValueError:
            return None
        return HostMemory(int(free_mib * 2**20), "GPU", native_fp8=capability >= NATIVE_FP8_CAPABILITY)
    return None


def process_resident_bytes() -> int:
    """This process's resident memory (RSS): what a comparison entry's load and reply gained."""
    import psutil

    return int(psutil.Process().memory_info().rss)
