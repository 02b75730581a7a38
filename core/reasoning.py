"""Incremental split of Qwen3 output into reasoning and answer.

Qwen3 writes ``<think>\\n...\\n</think>\\n\\n`` and then the answer. The parser is fed text
chunks as they stream; a tag may arrive split across chunks at any position. Cases handled:
- the opening ``<think>`` is in the output (hybrid Qwen3 with thinking on);
- it is missing because the chat template already put it in the prompt (Thinking-2507, or any
  prompt that opens a block): construct with ``starts_in_reasoning=True``;
- an empty block (``/no_think`` in thinking mode), no block at all (thinking off);
- a reply cut off inside the reasoning: ``finalize`` keeps what was reasoned.
Whitespace that only frames the tags (the newlines after ``<think>``, before ``</think>`` and
before the answer, and trailing whitespace at the very end) is not emitted.
Text after the first ``</think>`` is answer, verbatim: the reference code splits at the last
``</think>``, which a streaming parser cannot know in advance; Qwen3 writes only one.
"""
from __future__ import annotations

from core.events import AnswerDelta, ReasoningDelta

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
# Qwen's own text for ending the reasoning at a thinking budget (the Qwen3 docs' "thinking budget"
# recipe): appended as if the model had written it, then the model goes on to its answer
EARLY_STOP_TEXT = ("\n\nConsidering the limited time by the user, I have to give the solution based on the thinking "
                   "directly now.\n</think>\n\n")
EARLY_STOP_SENTENCE = EARLY_STOP_TEXT.split(THINK_CLOSE)[0]  # the text before its closing tag

Delta = ReasoningDelta | AnswerDelta


def reply_markup(reasoning: str, answer: str | None = None) -> str:
    """A thinking reply as the model writes it, framed as the chat template frames it:
    ``<think>``, the reasoning, and once the answer began (``answer`` not None), ``</think>``
    and the answer. What a continuation of the reply starts from."""
    text = f"{THINK_OPEN}\n{reasoning}"
    return text + f"\n{THINK_CLOSE}\n\n{answer}" if answer is not None else text


def _tag_prefix_len(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


class ReasoningParser:
    """Feed chunks with :meth:`feed`, then call :meth:`finalize` once at the end."""

    def __init__(self, starts_in_reasoning: bool = False) -> None:
        self._starts_in_reasoning = starts_in_reasoning
        self._state = "start"  # "start" -> "reasoning" -> "answer" (or "start" -> "answer")
        self._pending = ""  # text held back: a possible partial tag or framing whitespace
        self._emitted = {"reasoning": False, "answer": False}
        self.reasoning = ""  # everything emitted so far, for callers that want the totals
        self.answer = ""
        self.saw_close = False

    @property
    def in_reasoning(self) -> bool:
        return self._state == "reasoning" or (self._state == "start" and self._starts_in_reasoning)

    def feed(self, text: str) -> list[Delta]:
        self._pending += text
        out: list[Delta] = []
        while True:
            if self._state == "start":
                head = self._pending.lstrip()
                if head.startswith(THINK_OPEN):
                    self._pending = head[len(THINK_OPEN):]
                    self._state = "reasoning"
                    continue
                if THINK_OPEN.startswith(head):  # empty, or a partial opening tag: wait
                    return out
                self._state = "reasoning" if self._starts_in_reasoning else "answer"
            if self._state == "reasoning":
                idx = self._pending.find(THINK_CLOSE)
                if idx >= 0:
                    self._emit(out, "reasoning", self._pending[:idx], final=True)
                    self._pending = self._pending[idx + len(THINK_CLOSE):]
                    self.saw_close = True
                    self._state = "answer"
                    continue
                keep = _tag_prefix_len(self._pending, THINK_CLOSE)
                body = self._pending[: len(self._pending) - keep]
                self._pending = self._emit(out, "reasoning", body) + self._pending[len(body):]
                return out
            # answer
            self._pending = self._emit(out, "answer", self._pending)
            return out

    def finalize(self) -> list[Delta]:
        """Flush what is held back; a reply cut off mid-reasoning stays reasoning."""
        out: list[Delta] = []
        if self._state == "start":
            self._state = "reasoning" if self._starts_in_reasoning else "answer"
        self._emit(out, self._state, self._pending, final=True)
        self._pending = ""
        return out

    def _emit(self, out: list[Delta], kind: str, text: str, final: bool = False) -> str:
        """Emit ``text`` minus framing whitespace; return the trailing whitespace held back."""
        if not self._emitted[kind]:
            text = text.lstrip()
        body = text.rstrip()
        held = "" if final else text[len(body):]
        if body:
            self._emitted[kind] = True
            if kind == "reasoning":
                self.reasoning += body
                delta: Delta = ReasoningDelta(body)
            else:
                self.answer += body
                delta = AnswerDelta(body)
            if out and type(out[-1]) is type(delta):
                out[-1] = type(delta)(out[-1].text + body)
            else:
                out.append(delta)
        return held


def split_reasoning(text: str, starts_in_reasoning: bool = False) -> tuple[str, str]:
    """Split a complete reply into ``(reasoning, answer)``."""
    parser = ReasoningParser(starts_in_reasoning)
    parser.feed(text)
    parser.finalize()
    return parser.reasoning, parser.answer
