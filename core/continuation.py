"""Continuing a reply that was cut short: by Stop, by max_new_tokens, by the thinking budget, by
a reload or an error.

The reply's own messages say what it had written (its reasoning panel and answer, by kind) and
how it ended (its last note: ``stopped``, ``interrupted``, ``error``, or figures whose id says
``length`` or ``budget``). The model continues from exactly that text: the backend puts it after
the prompt as the start of the assistant's turn (``ChatRequest.continue_from``), so the reasoning
and the answer go on where they ended instead of starting again. After a thinking budget the
model thinks on: its reasoning as it was before Qwen's early-stop text was inserted, without the
answer that text led to.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.errors import PromptError
from core.messages import content_text, field, kind_of, metadata_of, reply_id_of
from core.reasoning import EARLY_STOP_SENTENCE, reply_markup

# the text a continuation starts from goes to the model as the model's own markup: a reply whose
# text spells a control token (an imported or hand-made chat's) is not continued
_CONTROL_SPELLING = re.compile(r"<\|[a-z_]+\|>|</?(?:think|tool_call|tool_response)>")
LENGTH = "length"  # the suffix of a figures note's id when max_new_tokens ended the reply
BUDGET = "budget"  # ... when the thinking budget ended its reasoning (and it answered)
CUT_ENDINGS = ("stopped", "interrupted", "error")


def stats_suffix(finish_reason: str | None, budget_cut: bool = False) -> str:
    """What a figures note's id carries after the reply id: "length" when the reply hit
    max_new_tokens (its answer goes on), else "budget" when the thinking budget cut its reasoning."""
    return LENGTH if finish_reason == LENGTH else BUDGET if budget_cut else ""


def _suffix(note: Any) -> str:
    parts = str(metadata_of(note).get("id") or "").split(":", 2)
    return parts[2] if len(parts) == 3 else ""


def was_cut(note: Any) -> bool:
    """The note that ends a reply says it was cut short (it can be continued)."""
    kind = kind_of(note)
    return kind in CUT_ENDINGS or (kind == "stats" and _suffix(note) in (LENGTH, BUDGET))


@dataclass(frozen=True)
class Continuation:
    """The last reply of a chat, cut short, as the model will continue it."""

    reply_id: str
    kept: list[Any]  # the chat without the note that ended the reply
    prompt: list[Any]  # the chat up to the user message the reply answers
    reasoning: str | None  # its reasoning panel's text (None: it had none)
    answer: str | None  # its answer's text (None: it had not started one)

    @property
    def thinking(self) -> bool | None:
        """The mode it was written in, when its messages say so (None: nothing written yet)."""
        if self.reasoning is not None:
            return True
        return False if self.answer is not None else None

    @property
    def markup(self) -> str:
        """The reply so far as the model wrote it: where the continuation starts."""
        if self.reasoning is not None:
            return reply_markup(self.reasoning, self.answer)
        return self.answer or ""


def continuation_of(history: Sequence[Any]) -> Continuation:
    """The chat's last reply, to continue; a ``PromptError`` says why it cannot be."""
    messages = list(history or [])
    if not messages or kind_of(messages[-1]) is None:
        raise PromptError("there is no reply to continue")
    note = messages[-1]
    if not was_cut(note):
        raise PromptError("the last reply ended by itself: only a reply cut short (Stop, max new tokens, "
                          "a reload or an error) can be continued")
    reply_id = reply_id_of(note)
    start = len(messages) - 1
    while start > 0 and kind_of(messages[start - 1]) is not None and reply_id_of(messages[start - 1]) == reply_id:
        start -= 1
    if start == 0 or field(messages[start - 1], "role") != "user":
        raise PromptError("the last reply does not follow a user message: there is nothing to continue")
    parts: dict[str, str] = {}
    kept = messages[:-1]
    if _suffix(note) == BUDGET:  # think on: the reasoning before the inserted text, no answer
        kept = [m for m in kept[:start]] + [m for m in kept[start:] if kind_of(m) != "answer"]
    for message in kept[start:]:
        kind = kind_of(message)
        if kind in ("tool_call", "tool_result"):
            raise PromptError("a reply that called tools cannot be continued: regenerate it")
        if kind in ("reasoning", "answer"):
            if kind in parts:
                raise PromptError(f"the last reply has two {kind} messages: regenerate it")
            parts[kind] = content_text(field(message, "content"))
            if _CONTROL_SPELLING.search(parts[kind]):
                raise PromptError(f"the last reply's {kind} spells a control token: regenerate it instead")
    answer = parts.get("answer") if parts.get("answer") or "reasoning" in parts else None  # an empty placeholder: nothing
    reasoning = parts.get("reasoning")
    if _suffix(note) == BUDGET and reasoning is not None:
        reasoning = without_early_stop(reasoning)
    return Continuation(reply_id, kept, messages[:start], reasoning, answer)


def without_early_stop(reasoning: str) -> str:
    """A reasoning the thinking budget cut, as the model had written it: Qwen's early-stop text
    (which the playground inserted, ``core.reasoning``) taken off its end."""
    sentence = EARLY_STOP_SENTENCE.strip()
    head, found, tail = reasoning.rpartition(sentence)
    return head.rstrip() if found and not tail.strip() else reasoning
