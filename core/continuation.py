"""Continuing a reply that was cut short: by Stop, by max_new_tokens, by a reload or an error.

The reply's own messages say what it had written (its reasoning panel and answer, by kind) and
how it ended (its last note: ``stopped``, ``interrupted``, ``error``, or figures whose id says
``length``). The model continues from exactly that text: the backend puts it after the prompt
as the start of the assistant's turn (``ChatRequest.continue_from``), so the reasoning and the
answer go on where they ended instead of starting again.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.errors import PromptError
from core.messages import content_text, field, kind_of, metadata_of, reply_id_of
from core.reasoning import reply_markup

# the text a continuation starts from goes to the model as the model's own markup: a reply whose
# text spells a control token (an imported or hand-made chat's) is not continued
_CONTROL_SPELLING = re.compile(r"<\|[a-z_]+\|>|</?(?:think|tool_call|tool_response)>")
LENGTH = "length"  # the suffix of a figures note's id when max_new_tokens ended the reply
CUT_ENDINGS = ("stopped", "interrupted", "error")


def stats_suffix(finish_reason: str | None) -> str:
    """What a figures note's id carries after the reply id: "length" when the reply hit max_new_tokens."""
    return LENGTH if finish_reason == LENGTH else ""


def was_cut(note: Any) -> bool:
    """The note that ends a reply says it was cut short (it can be continued)."""
    kind = kind_of(note)
    return kind in CUT_ENDINGS or (kind == "stats" and str(metadata_of(note).get("id") or "").endswith(f":{LENGTH}"))


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
    for message in messages[start:-1]:
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
    return Continuation(reply_id, messages[:-1], messages[:start], parts.get("reasoning"), answer)
