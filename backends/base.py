"""The one interface every backend implements.

A backend loads one model (with a progress callback), streams chat replies as events, describes
itself and unloads. :meth:`Backend.stream_chat` takes a :class:`core.request.ChatRequest` (checked
once, at the edge, by the playground layer) and does what is model-independent for every backend:
the reasoning/answer split (``core.reasoning``), one generation at a time for local models (first
come, first served), and cancellation when the consumer goes away. A backend only implements
:meth:`Backend.load`, :meth:`Backend._generate`, :meth:`Backend.describe` and :meth:`Backend.unload`.
"""
from __future__ import annotations

import contextlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Generator, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from core.catalog import ModelSpec
from core.chat import Message
from core.drift import TokenLogprobs, Window
from core.errors import BackendError, PlaygroundError, PromptError
from core.events import (BackendItem, ChatEvent, GenerationStats, Perplexity, ProgressFn, RawDelta, ReasoningDelta,
                         ThinkingBudgetReached)
from core.reasoning import EARLY_STOP_SENTENCE, EARLY_STOP_TEXT
from core.reply_split import ReplySplitter
from core.request import ChatRequest, LoadOptions
from core.settings import GenerationSettings
from core.speed_bound import WeightProfile

__all__ = ["Backend", "ChatRequest", "FairLock", "LoadOptions", "ModelInfo", "StopSignal"]


@dataclass
class ModelInfo:
    """What a loaded model is and what it takes (``describe``)."""

    backend: str
    model: str
    source: str
    format: str
    quantization: str | None  # e.g. "fp8 e4m3 128x128 (dequantized to bfloat16)", "Q4_K_M"
    dtype: str
    device: str
    memory_bytes: int
    context_window: int
    rope_scaling: dict[str, Any] | None  # None when YaRN is off
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # backend-specific (kernel, file size...)
    parallel_replies: bool = False  # False: one reply at a time, others wait their turn in order

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One line for a status bar."""
        parts = [self.model, self.backend, self.quantization or self.format, self.device,
                 f"{self.memory_bytes / 2**20:,.1f} MiB", f"context {self.context_window:,}"]
        if self.rope_scaling:
            parts.append(f"YaRN x{self.rope_scaling.get('factor')}")
        parts.append("replies in parallel" if self.parallel_replies else "one reply at a time")
        return " · ".join(parts + self.notes)


class FairLock:
    """A lock served first come, first served (``threading.Lock`` lets any waiter win, so one
    visitor's reply could wait behind later ones indefinitely)."""

    def __init__(self) -> None:
        self._turn = threading.Condition()
        self._issued = 0  # tickets handed out
        self._serving = 0  # the ticket whose turn it is

    @property
    def waiting(self) -> int:
        """Holders and waiters (0: free)."""
        return self._issued - self._serving

    def locked(self) -> bool:
        return self.waiting > 0

    def wait_free(self, timeout: float | None = None) -> bool:
        """Block until no reply holds or waits for the lock (or ``timeout``); True if free."""
        with self._turn:
            return self._turn.wait_for(lambda: self._serving == self._issued, timeout)

    def __enter__(self) -> FairLock:
        with self._turn:
            ticket = self._issued
            self._issued += 1
            self._turn.wait_for(lambda: self._serving == ticket)
        return self

    def __exit__(self, *exc: Any) -> None:
        with self._turn:
            self._serving += 1
            self._turn.notify_all()


class StopSignal:
    """True once any of its events is set: the user's Stop, or the consumer going away."""

    def __init__(self, *events: threading.Event | None) -> None:
        self._events = tuple(e for e in events if e is not None)

    def is_set(self) -> bool:  # checked at every token: a plain loop, no generator
        for event in self._events:
            if event.is_set():
                return True
        return False


def check_prompt_fits(prompt_tokens: int, context_window: int) -> None:
    if prompt_tokens >= context_window:
        raise PromptError(
            f"the prompt is {prompt_tokens:,} tokens, longer than the context window of "
            f"{context_window:,} tokens: shorten the conversation or raise the YaRN factor"
        )


def new_token_budget(prompt_tokens: int, settings: GenerationSettings, context_window: int) -> int:
    """max_new_tokens, lowered so that prompt + reply fit in the context window."""
    check_prompt_fits(prompt_tokens, context_window)
    return min(settings.max_new_tokens, context_window - prompt_tokens)


class Backend(ABC):
    """Base class of every backend (see the module docstring)."""

    name: ClassVar[str]
    # True for a server that batches requests itself (the remote backend): no per-model lock.
    parallel_replies: ClassVar[bool] = False
    # True when _generate can continue a reply from a prefix (what a thinking budget needs)
    continues_replies: ClassVar[bool] = False

    def __init__(self) -> None:
        self.spec: ModelSpec | None = None
        self.options = LoadOptions()
        # One generation per local model at a time: the libraries' model objects are not thread-safe.
        self._generation_lock = FairLock()

    @property
    def loaded(self) -> bool:
        return self.spec is not None

    @abstractmethod
    def load(self, spec: ModelSpec, options: LoadOptions = LoadOptions(),
             progress: ProgressFn | None = None) -> None:
        """Load ``spec`` (downloading it if needed); raise a ``PlaygroundError`` on failure."""

    @abstractmethod
    def describe(self) -> ModelInfo:
        """Format, quantization, dtype, device, memory, context window, rope scaling."""

    @abstractmethod
    def unload(self) -> None:
        """Free the model's memory; the backend can load again afterwards."""

    @abstractmethod
    def _generate(self, messages: list[Message], settings: GenerationSettings, thinking: bool,
                  stop: StopSignal, tools: list[dict[str, Any]] | None = None, prefix: str = ""
                  ) -> Iterator[BackendItem]:
        """Yield the reply as :class:`RawDelta` (or pre-split deltas), then one GenerationStats.

        ``prefix`` (only with ``continues_replies``): the start of the assistant's reply, already
        written (markup included), to continue from.

        ``messages`` already follow the history rules. ``tools`` (OpenAI ``tools`` items, None
        for none) go to the chat template or the server; ``<tool_call>`` text in the reply is
        parsed here, and a server that parses calls itself yields them as ``ToolCall`` items.
        Check ``stop`` at every token and end the computation itself when it is set.
        """

    def count_tokens(self, text: str) -> int | None:
        """Tokens ``text`` takes for this model (plain text, no special tokens); None if unknown."""
        return None

    def perplexity(self, text: str) -> Perplexity:
        """Score ``text`` as plain text (no chat template): the number quantization users compare."""
        raise PlaygroundError(f"the {self.name} backend cannot score text")

    def weight_profile(self) -> WeightProfile | None:
        """Bytes of the weights (MoE experts apart) and of the KV cache per token; None if unknown."""
        return None

    def plain_tokens(self, text: str) -> list[int]:
        """``text`` as token ids, plain (no special tokens; control-token spellings stay text)."""
        raise PlaygroundError(f"token log-probabilities are not available on the {self.name} backend")

    def vocabulary(self) -> list[str]:
        """The token texts by id (what the drift comparison checks entries share)."""
        raise PlaygroundError(f"token log-probabilities are not available on the {self.name} backend")

    def token_logprobs(self, tokens: list[int], windows: list[Window], top_k: int,
                       picks: list[tuple[int, ...]] | None = None) -> list[TokenLogprobs]:
        """Next-token log-probabilities at every target of ``windows`` (``core.drift``), in order:
        the target's, the ``top_k`` most likely, and those of ``picks[i]`` (ids per target) if given.
        """
        raise PlaygroundError(f"token log-probabilities are not available on the {self.name} backend")

    def stream_chat(self, request: ChatRequest, stop: threading.Event | None = None) -> Iterator[ChatEvent]:
        """Stream the reply to ``request`` as reasoning/answer deltas, tool calls (when the
        request offers tools) and final stats.

        With a thinking budget (``settings.thinking_budget``, thinking mode, a backend that can
        continue a reply): the model reasons for at most that many tokens; if its reasoning is
        still open then, Qwen's early-stop text is streamed as reasoning (after a
        :class:`ThinkingBudgetReached`) and the model continues from it to its answer, within
        what is left of ``max_new_tokens``.

        Closing the iterator early (a UI's Stop, a client going away) stops the computation, as
        does setting ``stop``.
        """
        if not self.loaded:
            raise PlaygroundError("no model is loaded: load one first")
        settings = request.settings
        split = ReplySplitter(request.thinking, tools=bool(request.tools))
        resumed = request.continue_from
        if resumed:  # a reply cut short: the splitter reads what it had written, then its continuation
            if not self.continues_replies:
                raise PlaygroundError(f"the {self.name} backend cannot continue a reply")
            split.feed(RawDelta(resumed))
        # a continued reply has no thinking budget: it goes on where it was cut
        budget = settings.thinking_budget if request.thinking and self.continues_replies and not resumed else 0
        budgeted = 0 < budget < settings.max_new_tokens
        by_server = budgeted and self.budget_by_server
        turn = contextlib.nullcontext() if self.parallel_replies else self._generation_lock
        with turn:
            written: list[str] = []  # what the model wrote: the prefix it continues from
            first = settings.with_updates(max_new_tokens=budget) if budgeted and not by_server else settings
            stats = yield from self._phase(request, first, split, stop, resumed, written)
            if budgeted and not by_server and stats.finish_reason == "length":  # the budget ended it: go on
                prefix = "".join(written) if written else split.markup()
                if split.in_reasoning:  # still reasoning: Qwen's text ends it
                    yield ThinkingBudgetReached(budget, EARLY_STOP_TEXT)
                    # raw text goes through the shared parser; a pre-split reply gets the sentence
                    yield from split.feed(RawDelta(EARLY_STOP_TEXT) if written else ReasoningDelta(EARLY_STOP_SENTENCE.rstrip()))
                    prefix += EARLY_STOP_TEXT
                rest = settings.with_updates(max_new_tokens=settings.max_new_tokens - stats.completion_tokens)
                more = yield from self._phase(request, rest, split, stop, prefix, [])
                stats = stats.followed_by(more)
            tail = split.finish(stats.finish_reason)
            if stats.reasoning_tokens is None:
                stats.reasoning_tokens = self.count_tokens(split.reasoning) if split.reasoning else 0
            if by_server:
                yield from self._server_budget_outcome(budget, stats.reasoning_tokens)
            yield from tail
            yield stats

    @property
    def budget_by_server(self) -> bool:
        """True when the engine behind this backend caps the reasoning itself (a server's own
        thinking budget): the reply is then one generation, with the budget in its settings."""
        return False

    def _server_budget_outcome(self, budget: int, reasoning_tokens: int) -> Iterator[ChatEvent]:
        """After a reply whose budget the engine applied: whether the budget cut it."""
        return iter(())

    def _phase(self, request: ChatRequest, settings: GenerationSettings, split: ReplySplitter,
               stop: threading.Event | None, prefix: str, written: list[str]
               ) -> Generator[ChatEvent, None, GenerationStats]:
        """One generation (after ``prefix``, the reply so far), split; returns its statistics."""
        cancelled = threading.Event()
        items = self._generate(request.message_list, settings, request.thinking, StopSignal(stop, cancelled),
                               request.tool_list, **({"prefix": prefix} if prefix else {}))
        try:
            for item in items:
                if isinstance(item, GenerationStats):
                    return item
                if isinstance(item, RawDelta):
                    written.append(item.text)
                yield from split.feed(item)
            raise BackendError(f"{self.name} backend ended without statistics")
        except PlaygroundError:
            raise
        except Exception as exc:  # a library failing mid-stream: one clear message
            raise BackendError(f"{self.name} backend failed while generating: {exc}") from exc
        finally:  # stop the computation first, then wait for the backend to wind down
            cancelled.set()
            items.close()
