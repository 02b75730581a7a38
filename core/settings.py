"""Generation settings: one typed class, validated the same way for every backend."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from core.errors import InvalidSettings

DEFAULT_MAX_NEW_TOKENS = 32768  # the card: enough for most queries
MAX_NEW_TOKENS_LIMIT = 38912  # the card: for hard maths / coding benchmarks

GREEDY_IN_THINKING_REASON = (
    "greedy decoding (temperature 0) is refused in thinking mode: the Qwen3 card warns that it "
    "degrades quality and causes endless repetitions; use temperature 0.6, top_p 0.95, top_k 20 "
    "(the 'thinking' preset) or switch thinking off"
)

# name -> (min, max, integer?); temperature 0 means greedy decoding.
_RANGES: dict[str, tuple[float, float, bool]] = {
    "temperature": (0.0, 2.0, False),
    "top_p": (0.0, 1.0, False),
    "top_k": (0, 1000, True),
    "min_p": (0.0, 1.0, False),
    "presence_penalty": (0.0, 2.0, False),
    "max_new_tokens": (1, MAX_NEW_TOKENS_LIMIT, True),
    "seed": (0, 2**32 - 1, True),
}


@dataclass(frozen=True)
class GenerationSettings:
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 20  # 0 disables top-k
    min_p: float = 0.0
    presence_penalty: float = 0.0
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    seed: int | None = None  # None: a fresh random seed per reply

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def validate(self, thinking: bool) -> GenerationSettings:
        """Return self if every value is in range; raise :class:`InvalidSettings` otherwise."""
        for name, (lo, hi, integer) in _RANGES.items():
            value = getattr(self, name)
            if value is None and name == "seed":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidSettings(f"{name} must be a number, got {value!r}")
            if integer and int(value) != value:
                raise InvalidSettings(f"{name} must be a whole number, got {value!r}")
            if not lo <= value <= hi:
                raise InvalidSettings(f"{name} must be between {lo:g} and {hi:g}, got {value!r}")
        if self.top_p == 0:
            raise InvalidSettings("top_p must be greater than 0 (1 disables it)")
        if thinking and self.greedy:
            raise InvalidSettings(GREEDY_IN_THINKING_REASON)
        return self

    def with_updates(self, **changes: Any) -> GenerationSettings:
        unknown = set(changes) - set(self.field_names())
        if unknown:
            raise InvalidSettings(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return replace(self, **changes)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
