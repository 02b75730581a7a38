"""Generation settings: one schema, one typed class, validated the same way for every backend.

:data:`SCHEMA` is the only place a setting's type, range, default and help are written: the
UI's sliders, the CLI's flags, the API's parameters and :meth:`GenerationSettings.validate` are
all generated from it. The per-mode values (the cards' presets) are data in ``presets/sampling/``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from core.errors import InvalidSettings

DEFAULT_MAX_NEW_TOKENS = 32768  # the card: enough for most queries
MAX_NEW_TOKENS_LIMIT = 38912  # the card: for hard maths / coding benchmarks
RANDOM_SEED = -1  # what a form or the CLI sends for "a fresh random seed per reply"

GREEDY_IN_THINKING_REASON = (
    "greedy decoding (temperature 0) is refused in thinking mode: the Qwen3 card warns that it "
    "degrades quality and causes endless repetitions; use temperature 0.6, top_p 0.95, top_k 20 "
    "(the 'thinking' preset) or switch thinking off"
)


@dataclass(frozen=True)
class SettingSpec:
    """One generation setting: what it is, what it may be, and what it does."""

    name: str
    type: type  # int or float
    minimum: float
    maximum: float
    default: Any
    step: float  # a slider's step
    help: str
    exclusive_minimum: bool = False  # the minimum itself is refused (top_p 0)
    optional: bool = False  # None allowed (seed: a fresh random seed per reply)
    preset: bool = True  # a sampling preset sets it (not the thinking budget: a preset change keeps it)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def _low(self) -> str:
        return f"{self.minimum:g}" + (" (excluded)" if self.exclusive_minimum else "")

    @property
    def range_text(self) -> str:
        return f"{self._low} to {self.maximum:g}"

    def coerce(self, value: Any) -> Any:
        """A value from a form, the command line or JSON as this setting's type (not range-checked).

        Whole floats become ints for integer settings (a slider sends 20.0); for the seed, None,
        "" and negative numbers mean random.
        """
        if self.optional and (value is None or value == "" or (_is_number(value) and value < 0)):
            return None
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise InvalidSettings(f"{self.name} must be a number, got {value!r}") from None
        if not _is_number(value):
            raise InvalidSettings(f"{self.name} must be a number, got {value!r}")
        if self.type is int:
            if int(value) != value:
                raise InvalidSettings(f"{self.name} must be a whole number, got {value!r}")
            return int(value)
        return float(value)

    def check(self, value: Any) -> None:
        """Raise :class:`InvalidSettings` unless ``value`` is of this setting's type and range."""
        if value is None and self.optional:
            return
        if not _is_number(value):
            raise InvalidSettings(f"{self.name} must be a number, got {value!r}")
        if self.type is int and int(value) != value:
            raise InvalidSettings(f"{self.name} must be a whole number, got {value!r}")
        too_low = value <= self.minimum if self.exclusive_minimum else value < self.minimum
        if too_low or value > self.maximum:
            raise InvalidSettings(f"{self.name} must be between {self._low} and {self.maximum:g}, got {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value  # not NaN


SCHEMA: tuple[SettingSpec, ...] = (
    SettingSpec("temperature", float, 0.0, 2.0, 0.6, 0.05,
                "sampling temperature; 0 = greedy decoding (refused in thinking mode)"),
    SettingSpec("top_p", float, 0.0, 1.0, 0.95, 0.01,
                "nucleus sampling: keep the most likely tokens up to this total probability (1 disables it)",
                exclusive_minimum=True),
    SettingSpec("top_k", int, 0, 1000, 20, 1, "keep only the k most likely tokens (0 disables it)"),
    SettingSpec("min_p", float, 0.0, 1.0, 0.0, 0.01,
                "drop tokens less likely than min_p times the most likely one (0 disables it)"),
    SettingSpec("presence_penalty", float, 0.0, 2.0, 0.0, 0.1,
                "subtracted once from every token already generated (1.5 recommended for quantized models)"),
    SettingSpec("max_new_tokens", int, 1, MAX_NEW_TOKENS_LIMIT, DEFAULT_MAX_NEW_TOKENS, 1,
                "longest reply in tokens, reasoning included (the card: 32768; 38912 for hard problems)"),
    SettingSpec("seed", int, 0, 2**32 - 1, None, 1,
                "random seed for reproducible sampling (-1 or none: a fresh seed per reply)", optional=True),
    SettingSpec("thinking_budget", int, 0, MAX_NEW_TOKENS_LIMIT, 0, 256,
                "thinking mode: most tokens of reasoning, then Qwen's early-stop text ends it and the answer follows (0: off)",
                preset=False),
)
SCHEMA_BY_NAME: dict[str, SettingSpec] = {spec.name: spec for spec in SCHEMA}
_D = {spec.name: spec.default for spec in SCHEMA}


@dataclass(frozen=True)
class GenerationSettings:
    """The typed view of :data:`SCHEMA` (same names, same order; defaults from the schema)."""

    temperature: float = _D["temperature"]
    top_p: float = _D["top_p"]
    top_k: int = _D["top_k"]  # 0 disables top-k
    min_p: float = _D["min_p"]
    presence_penalty: float = _D["presence_penalty"]
    max_new_tokens: int = _D["max_new_tokens"]
    seed: int | None = _D["seed"]  # None: a fresh random seed per reply
    thinking_budget: int = _D["thinking_budget"]  # 0: no budget (thinking mode only)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def validate(self, thinking: bool) -> GenerationSettings:
        """Return self if every value is in range; raise :class:`InvalidSettings` otherwise."""
        for spec in SCHEMA:
            spec.check(getattr(self, spec.name))
        if thinking and self.greedy:
            raise InvalidSettings(GREEDY_IN_THINKING_REASON)
        return self

    def with_updates(self, **changes: Any) -> GenerationSettings:
        unknown = set(changes) - set(SCHEMA_BY_NAME)
        if unknown:
            raise InvalidSettings(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return replace(self, **changes)

    def with_values(self, **raw: Any) -> GenerationSettings:
        """:meth:`with_updates` for values from a form, flags or JSON: coerced by the schema;
        a None leaves the setting as it is (except the seed, where None means random)."""
        changes = {name: SCHEMA_BY_NAME[name].coerce(value) for name, value in raw.items()
                   if name in SCHEMA_BY_NAME and (value is not None or SCHEMA_BY_NAME[name].optional)}
        return self.with_updates(**changes, **{k: v for k, v in raw.items() if k not in SCHEMA_BY_NAME})

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
