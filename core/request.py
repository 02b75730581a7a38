"""A chat request, typed and checked once: what every backend's ``stream_chat`` receives.

The playground layer builds it at the edge (a UI event, an API call, the CLI) with
:func:`ChatRequest.build`; a backend takes it as it is and never validates it again.
"""
from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from core.catalog import ModelSpec
from core.chat import Message, model_messages
from core.errors import PlaygroundError
from core.settings import SCHEMA_BY_NAME, GenerationSettings
from core.tools import Toolbox
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


@dataclass(frozen=True)
class ChatRequest:
    """One reply to ask for: the model, the messages the model will read, how to sample."""

    spec: ModelSpec
    options: LoadOptions
    messages: tuple[Message, ...]  # after the history rules (core.chat), system prompt first
    settings: GenerationSettings  # validated for the mode; the seed is always set (per-request generator)
    thinking: bool  # what the model will do: the hard switch, unless the model always / never thinks
    system_prompt: str | None = None
    toolbox: Toolbox | None = None  # the tools the model may call (None: no tools, no tool loop)
    tools: tuple[dict[str, Any], ...] = ()  # the toolbox's tools as the chat template takes them
    loop_guard: bool = True  # stop a reply that repeats itself (core.loop_guard; the playground's chat)
    # the start of the assistant's reply, already written (markup included): the model continues
    # it (core.continuation); "" for a new reply
    continue_from: str = ""

    @classmethod
    def build(cls, spec: ModelSpec, options: LoadOptions, history: Sequence[Mapping[str, Any]],
              settings: GenerationSettings, thinking: bool = True,
              system_prompt: str | None = None, toolbox: Toolbox | None = None,
              loop_guard: bool = True, continue_from: str = "") -> ChatRequest:
        """Apply every rule once; raise a :class:`PlaygroundError` that says what is wrong."""
        effective = spec.effective_thinking(thinking)
        settings = settings.validate(effective)
        if settings.seed is None:  # drawn here, so a reply's figures can say which seed made it
            settings = replace(settings, seed=random.SystemRandom().randrange(SCHEMA_BY_NAME["seed"].maximum))
        messages = tuple(model_messages(history, system_prompt))
        tools = tuple(spec.to_openai() for spec in toolbox.specs()) if toolbox else ()
        if continue_from and messages[-1]["role"] != "user":
            raise PlaygroundError("only a reply to a user message can be continued")
        return cls(spec, options.validate(), messages, settings, effective, system_prompt or None,
                   toolbox if tools else None, tools, bool(loop_guard), continue_from)

    @property
    def message_list(self) -> list[Message]:
        return [dict(message) for message in self.messages]

    @property
    def tool_list(self) -> list[dict[str, Any]] | None:
        """The tools for the chat template / server (None without tools: nothing changes)."""
        return [dict(tool) for tool in self.tools] or None

    def continued(self, *messages: Message) -> ChatRequest:
        """The same request with the tool loop's new messages appended (assistant turn, results)."""
        return replace(self, messages=self.messages + tuple(messages))
