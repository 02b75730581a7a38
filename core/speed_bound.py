"""Memory like for like, and decode speed against the memory-bandwidth bound (library-free).

**Memory** is split the same way for every backend: ``weights`` (the tensors as the library
holds them), ``kv`` (the KV cache at the context the reply used: prompt + reply tokens, times the
model's KV bytes per token), and ``other``: what the process gained from before the load to the
end of the reply (resident memory), minus those two — buffers, runtime, allocator slack. The three
add up to the gain; ``other`` is unknown (None) when entries ran at the same time (one process,
gains not separable) or the model was already loaded.

**The bound.** Decoding one token reads every active weight once, and the KV cache of the context
so far: tokens/s <= bandwidth / (active weight bytes + KV bytes). A MoE model reads only the
experts its router picks: active = non-expert bytes + expert bytes x experts per token / experts.
Compute, caches and the reply's growing context are ignored, so a measured speed is a share of
the bound (usually well under 1; over 1 only by measurement noise, or weights held in a CPU cache).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class WeightProfile:
    """What a loaded model reads per decoded token (a backend's ``weight_profile``)."""

    weight_bytes: int
    kv_bytes_per_token: int
    expert_bytes: int = 0  # MoE expert tensors (part of weight_bytes)
    num_experts: int = 0
    experts_per_token: int = 0

    @property
    def active_bytes(self) -> int:
        """Weights one decoded token reads (MoE: the routed experts only)."""
        if not (self.num_experts and self.expert_bytes):
            return self.weight_bytes
        idle = self.expert_bytes * (self.num_experts - self.experts_per_token) // self.num_experts
        return self.weight_bytes - idle

    def to_dict(self) -> dict[str, int]:
        return {**asdict(self), "active_bytes": self.active_bytes}


@dataclass(frozen=True)
class MemorySplit:
    weights: int
    kv: int
    other: int | None  # None: not measurable (see the module docstring)

    def to_dict(self) -> dict[str, int | None]:
        return asdict(self)


def memory_split(profile: WeightProfile, context_tokens: int, process_gain: int | None) -> MemorySplit:
    """Weights, KV at ``context_tokens`` and the rest of ``process_gain`` (bytes; clipped at 0:
    a library may map weights lazily, so the gain can be below weights + KV)."""
    kv = profile.kv_bytes_per_token * context_tokens
    other = None if process_gain is None else max(0, process_gain - profile.weight_bytes - kv)
    return MemorySplit(profile.weight_bytes, kv, other)


def bound_tokens_per_s(bandwidth_bytes_per_s: float, active_weight_bytes: int, kv_bytes: int) -> float | None:
    """The decode speed memory bandwidth allows (None without a bandwidth or a size)."""
    read = active_weight_bytes + kv_bytes
    if bandwidth_bytes_per_s <= 0 or read <= 0:
        return None
    return bandwidth_bytes_per_s / read


def share_of_bound(tokens_per_s: float | None, bound: float | None) -> float | None:
    if not tokens_per_s or not bound:
        return None
    return tokens_per_s / bound
