"""The machine's memory bandwidth, measured once and cached (the decode-speed bound's input).

Measured as the best of a few copies of a 256 MiB buffer (read + write = 2 x its size per copy):
with numpy in RAM, or with torch on the GPU when models run there. Cached per device in
``$QWEN3_PLAYGROUND_CACHE/bandwidth.json`` (default ``~/.cache/qwen3-playground``): a later
comparison reads it instantly. Delete the file to measure again (e.g. after a hardware change).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

BUFFER_BYTES = 256 * 2**20
COPIES = 5


@dataclass(frozen=True)
class Bandwidth:
    bytes_per_s: float
    device: str  # "cpu" or the GPU's name
    cached: bool  # read from the cache file (not measured now)


def cache_file() -> Path:
    base = os.environ.get("QWEN3_PLAYGROUND_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "qwen3-playground") / "bandwidth.json"


def memory_bandwidth(device: str = "cpu") -> Bandwidth:
    """``device``'s bandwidth ("cpu", or "cuda..." for the GPU models run on): cached, else measured."""
    gpu = device.startswith("cuda")
    key = _gpu_name() if gpu else "cpu"
    path = cache_file()
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(key), (int, float)) and known[key] > 0:
        return Bandwidth(float(known[key]), key, cached=True)
    measured = _measure_gpu() if gpu else _measure_ram()
    known = {**(known if isinstance(known, dict) else {}), key: measured}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known, indent=2), encoding="utf-8")
        tmp.replace(path)  # atomic: two processes measuring at once both leave a whole file
    except OSError:
        pass  # a read-only home: measured again next time
    return Bandwidth(measured, key, cached=False)


def _measure_ram() -> float:
    import numpy as np

    src = np.ones(BUFFER_BYTES // 8, dtype=np.float64)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(COPIES):
        started = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - started)
    return 2 * BUFFER_BYTES / best


def _gpu_name() -> str:
    import torch

    return f"cuda:{torch.cuda.get_device_name(0)}"


def _measure_gpu() -> float:
    import torch

    src = torch.ones(BUFFER_BYTES // 4, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(COPIES):
        torch.cuda.synchronize()
        started = time.perf_counter()
        dst.copy_(src)
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return 2 * BUFFER_BYTES / best
