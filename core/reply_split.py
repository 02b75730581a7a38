"""A streamed reply split into reasoning, answer and tool calls: the one pipeline every backend's
output goes through (``Backend.stream_chat``).

Raw text goes through the reasoning parser (``core.reasoning``); with tools offered, the answer
then goes through the tool-call parser (``core.tool_calls``), so a call drafted inside
``<think>...</think>`` stays reasoning. Deltas a server already split, and calls a server already
parsed, pass through (a server's answer text is still parsed for ``<tool_call>`` blocks, which
llama.cpp's server leaves in the content).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from core.events import AnswerDelta, RawDelta, ReasoningDelta
from core.reasoning import ReasoningParser, reply_markup
from core.tool_calls import ToolCallParser, split_unclosed_reasoning
from core.tools import ReasoningCut, ToolCall, ToolCallError


class ReplySplitter:
    """Feed a backend's items with :meth:`feed`; call :meth:`finish` once, at its statistics."""

    def __init__(self, starts_in_reasoning: bool, tools: bool) -> None:
        self._thinking = ReasoningParser(starts_in_reasoning)
        self._calls = ToolCallParser() if tools else None
        self.reasoning = ""  # all reasoning so far, in order (raw text's and a server's)
        self._server_answer = ""  # answer text a backend split itself, before tool-call parsing

    @property
    def in_reasoning(self) -> bool:
        """The reply so far opened its reasoning and has not closed it."""
        return self._thinking.in_reasoning and not self._server_answer

    def markup(self) -> str:
        """The reply so far as the model wrote it (what a continuation starts from), for a
        backend that streams pre-split deltas: ``<think>``, the reasoning, and once the answer
        began, ``</think>`` and the answer, framed as the chat template frames them."""
        return reply_markup(self.reasoning, self._server_answer or None)

    def feed(self, item: Any) -> list[Any]:
        if isinstance(item, RawDelta):
            return self._reasoned(self._answer_calls(self._thinking.feed(item.text)))
        if isinstance(item, ReasoningDelta):
            self.reasoning += item.text
            return [item]
        if isinstance(item, AnswerDelta):
            self._server_answer += item.text
            return self._answer_calls([item])
        if isinstance(item, (ToolCall, ToolCallError)):
            return [item]
        raise TypeError(f"unexpected backend item {item!r}")

    def finish(self, finish_reason: str) -> list[Any]:
        out = self._reasoned(self._answer_calls(self._thinking.finalize()))
        if self._calls is None:
            return out
        out += self._calls.finish()
        # A reply that never closed its reasoning but wrote complete calls in it (and ended by
        # itself, not cut off): its reasoning ends at the first call, and the calls run.
        if self._thinking.in_reasoning and finish_reason == "stop":
            reasoning, answer, calls, errors = split_unclosed_reasoning(self._thinking.reasoning)
            if calls or errors:
                out.append(ReasoningCut(reasoning, answer))
                out += sorted([*calls, *errors], key=lambda call: call.index)
        return out

    def _reasoned(self, events: list[Any]) -> list[Any]:
        self.reasoning += "".join(e.text for e in events if isinstance(e, ReasoningDelta))
        return events

    def _answer_calls(self, events: Iterable[Any]) -> list[Any]:
        return self._calls.feed_events(events) if self._calls else list(events)
