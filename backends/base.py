"""The one interface every backend implements.

A backend loads one model (with a progress callback), streams chat replies as events, describes
itself and unloads. Everything model-independent happens here, once, for every backend:
settings validation, the history rules (``core.chat``), the reasoning/answer split
(``core.reasoning``) and cancellation when the consumer goes away. A backend only implements
:meth:`Backend.load`, :meth:`Backend._generate`, :meth:`Backend.describe` and :meth:`Backend.unload`.
"""
from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from core.catalog import ModelSpec
from core.chat import Message, model_messages
from core.errors import BackendError, PlaygroundError, PromptError
from core.events import (AnswerDelta, BackendItem, ChatEvent, GenerationStats, Perplexity, RawDelta,
                         ReasoningDelta)
from core.hub import ProgressFn
from core.reasoning import ReasoningParser
from core.settings import GenerationSettings
from core.yarn import validate_factor


@dataclass(frozen=True)
class LoadOptions:
    """How to load a model; a backend ignores what does not apply to it."""

    yarn_factor: float = 1.0  # 1 = off; up to 4 (32768 x factor tokens of context)
    context_length: int | None = None  # cap on the context window (memory); None = full window
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N" | "mps"
    dtype: str = "auto"  # "auto" (the checkpoint's) | "bfloat16" | "float16" | "float32"
    threads: int | None = None  # CPU threads (llama.cpp); None = library default
    base_url: str | None = None  # remote servers
    api_key: str | None = field(default=None, repr=False)  # never shown back or logged

    def validate(self) -> LoadOptions:
        validate_factor(self.yarn_factor)
        if self.context_length is not None and self.context_length < 16:
            raise PlaygroundError(f"context length must be at least 16 tokens, got {self.context_length}")
        return self


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One line for a status bar."""
        parts = [self.model, self.backend, self.quantization or self.format, self.device,
                 f"{self.memory_bytes / 2**20:,.1f} MiB", f"context {self.context_window:,}"]
        if self.rope_scaling:
            parts.append(f"YaRN x{self.rope_scaling.get('factor')}")
        return " · ".join(parts + self.notes)


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

    def __init__(self) -> None:
        self.spec: ModelSpec | None = None
        self.options = LoadOptions()
        # One generation per model at a time: most libraries' model objects are not thread-safe.
        self._generation_lock = threading.Lock()

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
                  stop: StopSignal) -> Iterator[BackendItem]:
        """Yield the reply as :class:`RawDelta` (or pre-split deltas), then one GenerationStats.

        ``messages`` already follow the history rules. Check ``stop`` at every token and end
        the computation itself when it is set.
        """

    def count_tokens(self, text: str) -> int | None:
        """Tokens ``text`` takes for this model (plain text, no special tokens); None if unknown."""
        return None

    def perplexity(self, text: str) -> Perplexity:
        """Score ``text`` as plain text (no chat template): the number quantization users compare."""
        raise PlaygroundError(f"the {self.name} backend cannot score text")

    def effective_thinking(self, thinking: bool) -> bool:
        """Models that always (or never) think ignore the hard switch."""
        mode = self.spec.thinking if self.spec else "hybrid"
        return {"always": True, "never": False}.get(mode, thinking)

    def stream_chat(self, messages: Sequence[Mapping[str, Any]], settings: GenerationSettings, *,
                    thinking: bool = True, system_prompt: str | None = None,
                    stop: threading.Event | None = None) -> Iterator[ChatEvent]:
        """Stream a reply to ``messages`` as reasoning/answer deltas and final stats.

        Closing the iterator early (a UI's Stop, a client going away) stops the computation.
        """
        if not self.loaded:
            raise PlaygroundError("no model is loaded: load one first")
        thinking = self.effective_thinking(thinking)
        settings.validate(thinking)
        prompt = model_messages(messages, system_prompt)
        cancelled = threading.Event()
        parser = ReasoningParser(starts_in_reasoning=thinking)
        with self._generation_lock:
            items = self._generate(prompt, settings, thinking, StopSignal(stop, cancelled))
            try:
                for item in items:
                    if isinstance(item, RawDelta):
                        yield from parser.feed(item.text)
                    elif isinstance(item, (ReasoningDelta, AnswerDelta)):
                        yield item  # the backend's server already split them
                    elif isinstance(item, GenerationStats):
                        yield from parser.finalize()
                        if item.reasoning_tokens is None:
                            item.reasoning_tokens = self.count_tokens(parser.reasoning) if parser.reasoning else 0
                        yield item
                        return
                raise BackendError(f"{self.name} backend ended without statistics")
            except PlaygroundError:
                raise
            except Exception as exc:  # a library failing mid-stream: one clear message
                raise BackendError(f"{self.name} backend failed while generating: {exc}") from exc
            finally:  # stop the computation first, then wait for the backend to wind down
                cancelled.set()
                items.close()
