"""What a chat stream yields: reasoning text, answer text, and final statistics."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Union

from core.tools import (AnyCall, ApprovalRequested, ReasoningCut, RoundLimitReached, RoundStarted, ToolCall,
                        ToolCallError, ToolCallStarted, ToolResult, tool_message)

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


@dataclass(frozen=True)
class ThinkingBudgetReached:
    """The reasoning reached the thinking budget: ``text`` (Qwen's early-stop text, streamed as
    reasoning right after this event) was inserted as if the model had written it. With
    ``by_server``, a server applied the budget and ``text`` is what it inserts; the event then
    comes at the end of the reply."""

    budget: int
    text: str
    by_server: bool = False


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

    def followed_by(self, more: GenerationStats) -> GenerationStats:
        """One reply's figures from two generations, ``more`` continuing this one (a thinking
        budget's continuation): the prompt and first token are this one's, the rest adds up."""
        completion = self.completion_tokens + more.completion_tokens
        total = self.total_s + more.total_s
        decode_s = total - (self.ttft_s or 0.0) - (more.ttft_s or 0.0)  # the continuation's prefill is not decode
        reasoning = (None if self.reasoning_tokens is None or more.reasoning_tokens is None
                     else self.reasoning_tokens + more.reasoning_tokens)
        return GenerationStats(self.prompt_tokens, completion, self.ttft_s,
                               (completion - 1) / decode_s if completion > 1 and decode_s > 0 else None, total,
                               more.finish_reason, self.cached_prompt_tokens, reasoning_tokens=reasoning)


@dataclass(frozen=True)
class Perplexity:
    """How well a model predicts a text: exp(mean negative log-likelihood per token)."""

    perplexity: float
    tokens: int  # tokens scored (the first token has no prediction and is not counted)
    mean_nll: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LoopStopped:
    """The loop guard (``core.loop_guard``) stopped the generation: the reply ended with one span
    of ``period_chars`` characters repeated ``repeats`` times (what it wrote is kept)."""

    period_chars: int
    repeats: int


# what a backend's stream_chat yields; the tool events appear only when the request offers tools
# (LoopStopped: only the playground's chat yields it, when its loop guard stops a generation)
ChatEvent = Union[ReasoningDelta, AnswerDelta, ThinkingBudgetReached, GenerationStats, ToolCall, ToolCallError,
                  ReasoningCut, ApprovalRequested, ToolCallStarted, ToolResult, RoundStarted, RoundLimitReached,
                  LoopStopped]
BackendItem = Union[RawDelta, ReasoningDelta, AnswerDelta, GenerationStats, ToolCall, ToolCallError]


# how a reply ended early (None: it finished); "repeating": the loop guard stopped it
StopReason = Literal["stopped", "error", "interrupted", "repeating"]


@dataclass
class Turn:
    """One finished generation of a tool loop: what the model wrote and the calls it made."""

    reasoning: str
    answer: str
    calls: list[AnyCall]
    results: list[ToolResult]
    stats: GenerationStats | None

    def to_message(self) -> dict[str, Any]:
        """The assistant message in OpenAI's chat format (reasoning as vLLM names it)."""
        message: dict[str, Any] = {"role": "assistant", "content": self.answer}
        if self.reasoning:
            message["reasoning_content"] = self.reasoning
        if self.calls:
            message["tool_calls"] = [call.to_openai() for call in self.calls]
        return message


@dataclass
class Reply:
    """A reply accumulated from a stream of :data:`ChatEvent` (what the UI and CLI keep).

    ``reasoning``, ``answer``, ``stats`` and ``calls`` are the current (at the end: the final)
    generation's; with tools, the earlier generations of the loop are in ``turns``.
    """

    reasoning: str = ""
    answer: str = ""
    stats: GenerationStats | None = None
    stop_reason: StopReason | None = None
    error: str | None = None  # what went wrong, when stop_reason is "error"
    calls: list[AnyCall] = field(default_factory=list)
    results: list[ToolResult] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    round_limit: bool = False  # the model still called tools when the round limit was reached
    loop: LoopStopped | None = None  # the loop guard stopped the reply (stop_reason "repeating")
    budget_reached: ThinkingBudgetReached | None = None  # the thinking budget ended the reasoning

    def add(self, event: ChatEvent) -> None:
        if isinstance(event, ReasoningDelta):
            self.reasoning += event.text
        elif isinstance(event, AnswerDelta):
            self.answer += event.text
        elif isinstance(event, GenerationStats):
            self.stats = event
        elif isinstance(event, (ToolCall, ToolCallError)):
            self.calls.append(event)
        elif isinstance(event, ToolResult):
            self.results.append(event)
        elif isinstance(event, ReasoningCut):
            self.reasoning, self.answer = event.reasoning, self.answer + event.answer
        elif isinstance(event, RoundLimitReached):
            self.round_limit = True
        elif isinstance(event, ThinkingBudgetReached):
            self.budget_reached = event
        elif isinstance(event, LoopStopped):
            self.loop, self.stop_reason = event, "repeating"
        elif isinstance(event, RoundStarted):
            self.turns.append(Turn(self.reasoning, self.answer, self.calls, self.results, self.stats))
            self.reasoning, self.answer, self.stats, self.calls, self.results = "", "", None, [], []

    @property
    def all_results(self) -> list[ToolResult]:
        return [r for turn in self.turns for r in turn.results] + self.results

    def exchange(self) -> list[dict[str, Any]]:
        """The reply as OpenAI chat messages: each generation's assistant message, followed by
        the ``tool`` messages of its calls."""
        out: list[dict[str, Any]] = []
        for turn in [*self.turns, Turn(self.reasoning, self.answer, self.calls, self.results, self.stats)]:
            out.append(turn.to_message())
            out += [tool_message(result) for result in turn.results]
        return out
