"""What a chat stream yields: reasoning text, answer text, and final statistics."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal, Union

ProgressFn = Callable[[float, str], None]  # progress(fraction 0..1, message) of a load or download

FinishReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True)
class RawDelta:
    """Model output not yet split into reasoning and answer (backends yield these)."""

    text: str


@dataclass(frozen=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True)
class AnswerDelta:
    text: str


@dataclass
class GenerationStats:
    prompt_tokens: int
    completion_tokens: int
    ttft_s: float | None  # time to first token; None when nothing was generated
    tokens_per_s: float | None  # decode speed after the first token
    total_s: float
    finish_reason: FinishReason
    cached_prompt_tokens: int = 0  # prompt tokens served from a reused KV cache
    reasoning_tokens: int | None = None  # of completion_tokens, those spent reasoning (if countable)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Perplexity:
    """How well a model predicts a text: exp(mean negative log-likelihood per token)."""

    perplexity: float
    tokens: int  # tokens scored (the first token has no prediction and is not counted)
    mean_nll: float

    def to_dict(self) -> dict:
        return asdict(self)


ChatEvent = Union[ReasoningDelta, AnswerDelta, GenerationStats]
BackendItem = Union[RawDelta, ReasoningDelta, AnswerDelta, GenerationStats]


StopReason = Literal["stopped", "error", "interrupted"]  # how a reply ended early (None: it finished)


@dataclass
class Reply:
    """A reply accumulated from a stream of :data:`ChatEvent` (what the UI and CLI keep)."""

    reasoning: str = ""
    answer: str = ""
    stats: GenerationStats | None = None
    stop_reason: StopReason | None = None
    error: str | None = None  # what went wrong, when stop_reason is "error"

    def add(self, event: ChatEvent) -> None:
        if isinstance(event, ReasoningDelta):
            self.reasoning += event.text
        elif isinstance(event, AnswerDelta):
            self.answer += event.text
        elif isinstance(event, GenerationStats):
            self.stats = event
