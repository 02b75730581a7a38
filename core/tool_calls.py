"""Incremental parsing of Qwen3's Hermes tool calls out of the answer text.

Qwen3 calls tools by writing, after its reasoning, one or more blocks
``<tool_call>\\n{"name": "...", "arguments": {...}}\\n</tool_call>`` (the official chat template
tells it to). :class:`ToolCallParser` sits AFTER the reasoning split of ``core.reasoning``: it
parses only answer text (:class:`~core.events.AnswerDelta`) and passes reasoning through
untouched, so a call drafted inside ``<think>...</think>`` stays reasoning and never becomes a
call. It is fed text as it streams, in any chunks (a tag may be cut anywhere), and yields:

- :class:`~core.events.AnswerDelta` for plain answer text, as soon as it is certain not to be
  the start of a ``<tool_call>`` tag (only a possible tag prefix, and whitespace, are held back);
- :class:`ToolCall` for each complete block that parses;
- :class:`ToolCallError` for a block that does not (the tool loop sends its ``message`` back to
  the model as the call's error result).

Rules, decided conservatively:

- A ``<tool_call>`` tag opens a block only when what follows it (after spaces or tabs) is ``{``
  or a line break, as the template writes it. Otherwise it is text that mentions the tag ("use
  the <tool_call> tag") and stays in the answer, verbatim. A ``</tool_call>`` outside a block is
  plain text too.
- The end of a block is searched JSON-aware: ``</tool_call>`` inside a JSON string value (say a
  code argument that mentions the tag) does not end it. If the block's quotes never balance and
  the reply ends, the block ends at the first literal ``</tool_call>`` after all (so one stray
  quote cannot swallow the rest of the reply); that block is then an error, and the text after
  it is parsed as usual.
- Whitespace touching a block frames it and is not emitted: whitespace-only text between calls
  is dropped, and so is whitespace at the start and end of the answer (as ``core.reasoning``
  does). When answer text resumes after block(s), it is separated from the answer text before
  them by the whitespace that followed the last block, or else the one that preceded the first.
- Arguments: ``json.loads`` first. If that fails, these slips are repaired, only outside JSON
  strings, and the call is accepted if the repaired text parses: trailing commas before ``}`` or
  ``]``; exactly one missing ``}`` at the very end of the block; Python's bare ``True``,
  ``False``, ``None`` (JSON has no bare words, so these can mean nothing else). Single-quoted
  (Python-style) strings, two or more missing closers, ``NaN``/``Infinity``, code fences,
  unbalanced brackets are NOT repaired: they are errors. ``"arguments"`` may be a JSON string
  holding an object (decoded strictly); absent, it means ``{}`` only if the object has no other
  key besides ``"name"``. A missing or empty ``"name"`` is an error.
- :meth:`ToolCallParser.finish` ends the stream: an unterminated block (the reply ended after
  ``<tool_call>``, with or without content) is a :class:`ToolCallError` "the reply ended inside
  a tool call", even if its JSON looks complete (it may have been cut by the token limit); held
  text that turned out not to be a tag is released as answer text.

One model habit is handled as vLLM's and llama.cpp's Qwen3 parsers do: a reply that never closes
its reasoning (no ``</think>``: everything streamed as reasoning) but holds complete
``<tool_call>`` blocks. Its reasoning ends at the first block and those calls are real. That can
only be decided when the stream has ended (a drafted call followed by ``</think>`` is reasoning),
so it is a separate step on the final reasoning text: :func:`split_unclosed_reasoning`. Streamed,
compose the pieces like this (``parse_reply`` does the same on a whole text)::

    thinking = ReasoningParser(starts_in_reasoning)
    tools = ToolCallParser()
    for chunk in stream:
        for event in tools.feed_events(thinking.feed(chunk)):
            ...  # ReasoningDelta, AnswerDelta, ToolCall, ToolCallError
    for event in tools.feed_events(thinking.finalize()) + tools.finish():
        ...
    if thinking.in_reasoning:  # the reply ended inside its reasoning
        reasoning, answer, calls, errors = split_unclosed_reasoning(thinking.reasoning)
        # replace the reasoning shown with ``reasoning``; run ``calls``
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Union

from core.events import AnswerDelta, ReasoningDelta
from core.reasoning import ReasoningParser
from core.tools import ToolCall, ToolCallError, new_call_id

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"

UNTERMINATED = "the reply ended inside a tool call"
_PYTHON_WORDS = {"True": "true", "False": "false", "None": "null"}


ToolEvent = Union[AnswerDelta, ToolCall, ToolCallError]


class ToolCallParser:
    """Feed answer text with :meth:`feed` (or chat events with :meth:`feed_events`), then call
    :meth:`finish` once at the end.

    Only answer text is parsed: reasoning never holds calls (see the module's docstring for the
    one exception, :func:`split_unclosed_reasoning`). ``new_id`` makes call ids (tests pass a
    deterministic one). The totals are kept in ``answer``, ``calls`` and ``errors``.
    """

    def __init__(self, new_id: Callable[[], str] = new_call_id) -> None:
        self._new_id = new_id
        self._mode = "text"  # "text" -> "open" (after <tool_call>, deciding) -> "block" -> "text"
        self._buf = ""  # text mode: undecided text; open/block mode: the block after its opening tag
        self._scan = 0  # block mode: how far the closing-tag search has read
        self._in_string = False  # block mode: inside a JSON string at self._scan
        self._escape = False
        self._ws = ""  # whitespace held back (not yet known to be inside the answer)
        self._ws_before = ""  # whitespace that preceded the current run of blocks
        self._after_block = False  # no answer text since the last block
        self._finished = False
        self._closed_blocks = 0  # blocks that ended with their closing tag
        self.answer = ""
        self.calls: list[ToolCall] = []
        self.errors: list[ToolCallError] = []

    @property
    def in_tool_call(self) -> bool:
        """True while a block has opened and not ended (a UI may show "calling a tool...")."""
        return self._mode == "block"

    def feed(self, text: str) -> list[ToolEvent]:
        """Parse more answer text (text outside ``<think>...</think>`` only)."""
        if self._finished:
            raise ValueError("ToolCallParser.feed after finish")
        out: list[ToolEvent] = []
        self._buf += text
        self._process(out)
        return out

    def feed_event(self, event: Any) -> list[Any]:
        """Parse an ``AnswerDelta``; pass anything else (``ReasoningDelta``, stats) through as is."""
        if isinstance(event, AnswerDelta):
            return self.feed(event.text)
        return [event]

    def feed_events(self, events: Iterable[Any]) -> list[Any]:
        """:meth:`feed_event` over a sequence, e.g. what ``ReasoningParser.feed`` returned."""
        out: list[Any] = []
        for event in events:
            for item in self.feed_event(event):
                _append(out, item)
        return out

    def finish(self) -> list[ToolEvent]:
        """End of the stream: resolve what is held back (see the module's docstring)."""
        if self._finished:
            return []
        self._finished = True
        out: list[ToolEvent] = []
        # quotes that never balanced: the block ends at the first literal closing tag after all
        while self._mode == "block" and TOOL_CALL_CLOSE in self._buf:
            self._end_block(out, self._buf.find(TOOL_CALL_CLOSE))
            self._process(out)
        if self._mode == "text":
            self._text(out, self._buf)
        else:
            self._emit_block(out, TOOL_CALL_OPEN + self._buf, error=UNTERMINATED)
        self._buf = ""
        self._ws = ""  # trailing whitespace frames the end of the answer
        return out

    # -- the state machine ------------------------------------------------------------------

    def _process(self, out: list[ToolEvent]) -> None:
        while True:
            if self._mode == "text":
                idx = self._buf.find(TOOL_CALL_OPEN)
                if idx < 0:
                    keep = _open_prefix_len(self._buf)
                    self._text(out, self._buf[: len(self._buf) - keep])
                    self._buf = self._buf[len(self._buf) - keep:]
                    return
                self._text(out, self._buf[:idx])
                self._buf = self._buf[idx + len(TOOL_CALL_OPEN):]
                self._mode = "open"
            if self._mode == "open":
                head = self._buf.lstrip(" \t")
                if not head:
                    return  # wait for what follows the tag
                if head[0] in "{\r\n":
                    self._mode = "block"
                    self._scan, self._in_string, self._escape = 0, False, False
                    if not self._after_block:
                        self._ws_before = self._ws
                    self._ws = ""
                else:  # the tag is mentioned in text, not a call
                    self._mode = "text"
                    self._text(out, TOOL_CALL_OPEN)
                    continue
            # block: find the closing tag outside JSON strings
            end = self._find_close()
            if end < 0:
                return
            self._end_block(out, end)

    def _find_close(self) -> int:
        buf, i = self._buf, self._scan
        in_string, escape = self._in_string, self._escape
        while i < len(buf):
            c = buf[i]
            if in_string:
                if escape:
                    escape = False
                elif c == "\\":
                    escape = True
                elif c == '"':
                    in_string = False
            elif c == '"':
                in_string = True
            elif c == "<":
                if buf.startswith(TOOL_CALL_CLOSE, i):
                    return i
                if TOOL_CALL_CLOSE.startswith(buf[i:]):
                    break  # a possible partial closing tag: read it again with more text
            i += 1
        self._scan, self._in_string, self._escape = i, in_string, escape
        return -1

    def _end_block(self, out: list[ToolEvent], end: int) -> None:
        body = self._buf[:end]
        self._buf = self._buf[end + len(TOOL_CALL_CLOSE):]
        self._mode = "text"
        self._closed_blocks += 1
        self._emit_block(out, TOOL_CALL_OPEN + body + TOOL_CALL_CLOSE, body=body)

    def _emit_block(self, out: list[ToolEvent], raw: str, body: str = "", error: str | None = None) -> None:
        index = len(self.calls) + len(self.errors)
        name: str | None = None
        if error is None:
            parsed = _parse_block(body)
            if isinstance(parsed, tuple):
                call = ToolCall(self._new_id(), parsed[0], parsed[1], raw, index)
                self.calls.append(call)
                out.append(call)
                self._after_block = True
                return
            error, name = parsed.message, parsed.name
        err = ToolCallError(raw, error, index, self._new_id(), name)
        self.errors.append(err)
        out.append(err)
        self._after_block = True

    def _text(self, out: list[ToolEvent], text: str) -> None:
        """Emit text known not to be a tag, holding back trailing whitespace."""
        text = self._ws + text
        body = text.rstrip()
        self._ws = text[len(body):]
        if not body:
            return
        core = body.lstrip()
        lead = body[: len(body) - len(core)]
        if not self.answer:
            lead = ""  # whitespace at the start of the answer frames it
        elif self._after_block:
            lead = lead or self._ws_before  # answer text resumes after block(s)
        self._after_block = False
        piece = lead + core
        self.answer += piece
        _append(out, AnswerDelta(piece))


def _open_prefix_len(text: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``<tool_call>``."""
    for n in range(min(len(TOOL_CALL_OPEN) - 1, len(text)), 0, -1):
        if text.endswith(TOOL_CALL_OPEN[:n]):
            return n
    return 0


def _append(out: list[Any], event: Any) -> None:
    """Append, merging consecutive answer (or reasoning) text into one delta."""
    if out and isinstance(event, (AnswerDelta, ReasoningDelta)) and type(out[-1]) is type(event):
        out[-1] = type(event)(out[-1].text + event.text)
    else:
        out.append(event)


# -- one block's JSON ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _BlockError:
    message: str
    name: str | None = None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _loads(text: str) -> Any:
    return json.loads(text, parse_constant=_reject_constant)


def _repair(text: str) -> str | None:
    """``text`` with the tolerated slips fixed (outside strings), or None if it cannot be."""
    out: list[str] = []
    stack: list[str] = []
    in_string = escape = False
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if in_string:
            if escape:
                escape = False
            elif c == "\\":
                escape = True
            elif c == '"':
                in_string = False
            out.append(c)
            i += 1
            continue
        if c == '"':
            in_string = True
        elif c in "{[":
            stack.append(c)
        elif c in "}]":
            if not stack or stack.pop() != ("{" if c == "}" else "["):
                return None
        elif c == ",":
            j = i + 1
            while j < n and text[j] in " \t\r\n":
                j += 1
            if j < n and text[j] in "}]":
                i += 1  # a trailing comma
                continue
        elif c.isalpha() or c == "_":
            j = i
            while j < n and (text[j].isalnum() or text[j] == "_"):
                j += 1
            word = text[i:j]
            out.append(_PYTHON_WORDS.get(word, word))
            i = j
            continue
        out.append(c)
        i += 1
    if in_string:
        return None
    if stack == ["{"]:
        out.append("}")  # one missing closing brace at the very end
    elif stack:
        return None
    return "".join(out)


def _json_error(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} (line {exc.lineno}, column {exc.colno})"
    return str(exc)


def _parse_block(body: str) -> tuple[str, dict[str, Any]] | _BlockError:
    """``(name, arguments)`` from the JSON between the tags, or why it cannot be run."""
    text = body.strip()
    if not text:
        return _BlockError("the tool call is empty: expected {\"name\": ..., \"arguments\": {...}}")
    try:
        value = _loads(text)
    except ValueError as exc:
        repaired = _repair(text)
        value = None
        if repaired is not None and repaired != text:
            try:
                value = _loads(repaired)
            except ValueError:
                pass
        if value is None:
            return _BlockError(f"the tool call is not valid JSON: {_json_error(exc)}")
    if not isinstance(value, dict):
        return _BlockError(f"the tool call must be a JSON object, got {_json_type(value)}")
    name = value.get("name")
    if name is None:
        return _BlockError("the tool call has no \"name\"")
    if not isinstance(name, str):
        return _BlockError(f"the tool call's \"name\" must be a string, got {_json_type(name)}")
    if not name.strip():
        return _BlockError("the tool call's \"name\" is empty")
    if "arguments" not in value:
        others = sorted(k for k in value if k != "name")
        if others:
            return _BlockError(f"the call of {name!r} has no \"arguments\" (it has {', '.join(map(repr, others))})", name)
        return name, {}
    arguments = value["arguments"]
    if isinstance(arguments, str):
        try:
            arguments = _loads(arguments)
        except ValueError as exc:
            return _BlockError(f"the \"arguments\" of {name!r} are a string that is not a JSON object: {_json_error(exc)}", name)
    if not isinstance(arguments, dict):
        return _BlockError(f"the \"arguments\" of {name!r} must be a JSON object, got {_json_type(arguments)}", name)
    return name, arguments


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def call_from_parts(call_id: str, name: str, arguments: str, index: int) -> ToolCall | ToolCallError:
    """A call a server parsed itself (OpenAI ``tool_calls``: a name and the arguments' JSON text),
    checked by the same rules (and tolerated slips) as a ``<tool_call>`` block."""
    body = '{"name": ' + json.dumps(name, ensure_ascii=False) + ', "arguments": ' + (arguments.strip() or "{}") + "}"
    parsed = _parse_block(body)
    if isinstance(parsed, tuple):
        return ToolCall(call_id or new_call_id(), parsed[0], parsed[1], "", index)
    return ToolCallError(f"<tool_call>\n{body}\n</tool_call>", parsed.message, index, call_id or new_call_id(), name)


# -- whole texts ----------------------------------------------------------------------------------


def parse_tool_calls(text: str, new_id: Callable[[], str] = new_call_id) -> tuple[str, list[ToolCall], list[ToolCallError]]:
    """Parse a complete answer text: ``(answer_text, calls, errors)``, as the streaming parser would."""
    parser = ToolCallParser(new_id)
    parser.feed(text)
    parser.finish()
    return parser.answer, parser.calls, parser.errors


def split_unclosed_reasoning(
    reasoning: str, new_id: Callable[[], str] = new_call_id
) -> tuple[str, str, list[ToolCall], list[ToolCallError]]:
    """The final reasoning of a reply that never closed ``</think>``:
    ``(reasoning_before, answer, calls, errors)``.

    If it holds at least one complete ``<tool_call>...</tool_call>`` block, the reasoning ends
    at the first block, the blocks are calls (or errors) and any other text after the first
    block is answer text. Otherwise it is returned unchanged, with no answer and no calls (a
    reply cut off while reasoning, perhaps mentioning the tag).
    """
    parser = ToolCallParser(new_id)
    events = parser.feed(reasoning) + parser.finish()
    if not parser._closed_blocks:
        return reasoning, "", [], []
    first = next(i for i, e in enumerate(events) if not isinstance(e, AnswerDelta))
    before = "".join(e.text for e in events[:first] if isinstance(e, AnswerDelta))
    after = "".join(e.text for e in events[first:] if isinstance(e, AnswerDelta)).lstrip()
    return before, after, parser.calls, parser.errors


@dataclass(frozen=True)
class ParsedReply:
    """A whole reply split into reasoning, answer text and tool calls."""

    reasoning: str
    answer: str
    calls: tuple[ToolCall, ...] = field(default_factory=tuple)
    errors: tuple[ToolCallError, ...] = field(default_factory=tuple)


def parse_reply(text: str, starts_in_reasoning: bool = False, new_id: Callable[[], str] = new_call_id) -> ParsedReply:
    """Split a complete raw reply: reasoning (``core.reasoning``), then the answer's tool calls,
    then the unclosed-reasoning habit (:func:`split_unclosed_reasoning`)."""
    thinking = ReasoningParser(starts_in_reasoning)
    tools = ToolCallParser(new_id)
    tools.feed_events(thinking.feed(text))
    tools.feed_events(thinking.finalize())
    tools.finish()
    if thinking.in_reasoning:
        reasoning, answer, calls, errors = split_unclosed_reasoning(thinking.reasoning, new_id)
        return ParsedReply(reasoning, answer, tuple(calls), tuple(errors))
    return ParsedReply(thinking.reasoning, tools.answer, tuple(tools.calls), tuple(tools.errors))
