"""YaRN rope scaling arithmetic (Qwen3: native 32,768 tokens, up to 131,072 with factor 4).

The scaling is static: it applies to every input, short ones included, and can hurt them, so it
stays off (factor 1) unless the user needs a longer context.
"""
from __future__ import annotations

import math
from typing import Any

from core.errors import InvalidSettings

ORIGINAL_CONTEXT = 32768
MAX_FACTOR = 4.0
STATIC_YARN_WARNING = (
    "YaRN in this form is static: it scales every input, short ones too, and can hurt quality "
    "on short prompts. Enable it only when you need a context longer than 32,768 tokens."
)


def validate_factor(factor: float) -> float:
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or math.isnan(factor):
        raise InvalidSettings(f"YaRN factor must be a number, got {factor!r}")
    if not 1.0 <= factor <= MAX_FACTOR:
        raise InvalidSettings(f"YaRN factor must be between 1 (off) and {MAX_FACTOR:g}, got {factor:g}")
    return float(factor)


def context_window(factor: float) -> int:
    """Tokens of context the model supports with this factor (32768 x factor)."""
    return int(ORIGINAL_CONTEXT * validate_factor(factor))


def recommend_factor(desired_context: int) -> float:
    """Smallest factor (in steps of 0.5) whose window holds ``desired_context`` tokens.

    65,536 -> 2.0 and 131,072 -> 4.0 as the card says; anything within 32,768 -> 1.0 (off).
    """
    if desired_context <= 0:
        raise InvalidSettings("the desired context must be a positive number of tokens")
    if desired_context > ORIGINAL_CONTEXT * MAX_FACTOR:
        raise InvalidSettings(
            f"Qwen3 supports at most {int(ORIGINAL_CONTEXT * MAX_FACTOR):,} tokens with YaRN "
            f"(factor {MAX_FACTOR:g}); {desired_context:,} is too long"
        )
    return max(1.0, math.ceil(desired_context / ORIGINAL_CONTEXT * 2) / 2)


def rope_parameters_with_yarn(existing: dict[str, Any] | None, factor: float) -> dict[str, Any]:
    """Merge YaRN into a transformers-5 ``rope_parameters`` dict, keeping ``rope_theta``.

    Factor 1 removes any YaRN keys and restores the default rope type. Passing a fresh dict to
    ``from_pretrained`` instead would drop ``rope_theta`` (docs/library-notes.md).
    """
    factor = validate_factor(factor)
    params = {k: v for k, v in (existing or {}).items()
              if k not in ("rope_type", "factor", "original_max_position_embeddings")}
    if factor == 1.0:
        params["rope_type"] = "default"
    else:
        params.update(rope_type="yarn", factor=factor,
                      original_max_position_embeddings=ORIGINAL_CONTEXT)
    return params


def yarn_dict(factor: float) -> dict[str, Any] | None:
    """The ``rope_scaling`` value that vLLM/SGLang/transformers expect, or None when off."""
    factor = validate_factor(factor)
    if factor == 1.0:
        return None
    return {"rope_type": "yarn", "factor": factor, "original_max_position_embeddings": ORIGINAL_CONTEXT}
