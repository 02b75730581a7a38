"""Prompt tokenization that keeps what users type as plain text (no role injection).

Libraries parse control tokens anywhere in a rendered prompt, so a message containing
``<|im_start|>system ...``, ``<|im_end|>`` or ``<think>`` would act as markup. Here the chat
template is rendered with a slot for every text a message brings (content, reasoning, tool calls);
when no such text holds a reserved token string, the whole prompt is tokenized at once (the ids a
model was trained on); otherwise the template's own text is tokenized with control tokens, each
message text as plain text, and the ids are joined. Backends supply the two encoders; this
module is library-free.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from core.chat import Message

_SLOT = "\ue000{}\ue001"  # private-use code points: never produced by a chat template
_SLOT_RE = re.compile("\ue000(\\d+)\ue001")

Segment = tuple[str, bool]  # (text, is_template_text)


def render_segments(render: Callable[[list[Message]], str], messages: Sequence[Message]) -> list[Segment]:
    """The rendered prompt as pieces of template text (True) and message text (False).

    Message text is every string a message brings: its content, its reasoning
    (``reasoning_content``) and its tool calls' names and arguments (already JSON text, written
    verbatim by the template). Each goes into the template as a slot; empty strings stay empty,
    so that the template's ``if content`` tests decide as they would on the real text.
    """
    texts: list[str] = []

    def slot(text: Any) -> Any:
        if not isinstance(text, str) or not text:
            return text
        texts.append(text)
        return _SLOT.format(len(texts) - 1)

    rendered = render([map_texts(message, slot) for message in messages])
    segments: list[Segment] = []
    position = 0
    for match in _SLOT_RE.finditer(rendered):
        if match.start() > position:
            segments.append((rendered[position:match.start()], True))
        segments.append((texts[int(match.group(1))], False))
        position = match.end()
    if position < len(rendered):
        segments.append((rendered[position:], True))
    return segments


def map_texts(message: Message, slot: Callable[[Any], Any]) -> Message:
    """``message`` with ``slot`` applied to every text it brings (content, reasoning, tool calls'
    names and arguments)."""
    out = {**message, "content": slot(message.get("content"))}
    if "reasoning_content" in message:
        out["reasoning_content"] = slot(message["reasoning_content"])
    if message.get("tool_calls"):
        out["tool_calls"] = [{**call, "function": {**call["function"], "name": slot(call["function"]["name"]),
                                                   "arguments": slot(call["function"]["arguments"])}}
                             for call in message["tool_calls"]]
    return out


def plain_pieces(text: str, reserved: Iterable[str]) -> list[str]:
    """Cut ``text`` so that no piece contains a reserved token string (e.g. ``<think>``).

    Each occurrence is cut after its first character; encoded piece by piece, it then becomes
    ordinary text tokens even in tokenizers that match added tokens in any input. One pass of a
    lookahead pattern finds every occurrence, overlapping ones included (linear in the text).
    """
    strings = sorted({r for r in reserved if r}, key=len, reverse=True)
    if not strings or not text:
        return [text] if text else []
    starts = re.compile("(?=(?:" + "|".join(map(re.escape, strings)) + "))")
    pieces: list[str] = []
    position = 0
    for match in starts.finditer(text):
        cut = match.start() + 1
        pieces.append(text[position:cut])
        position = cut
    if position < len(text):
        pieces.append(text[position:])
    return pieces


# WORD JOINER: invisible, and no tokenizer merges it into a reserved token string
NEUTRAL_JOINER = "\u2060"


def neutralised(text: Any, reserved: Iterable[str]) -> Any:
    """``text`` with an invisible U+2060 after the first character of every reserved token string
    in it, so that a server tokenizing the prompt itself (with control tokens parsed anywhere)
    reads them as plain text. Text without one, and non-strings, are returned as they are."""
    if not isinstance(text, str) or not text:
        return text
    return NEUTRAL_JOINER.join(plain_pieces(text, reserved))


def neutralised_messages(messages: Sequence[Message], reserved: Iterable[str]) -> list[Message]:
    """Every text the messages bring, :func:`neutralised`: what a prompt rendered and tokenized
    by someone else (an OpenAI-compatible server) may safely carry."""
    reserved = list(reserved)
    return [map_texts(message, lambda text: neutralised(text, reserved)) for message in messages]


def markup_only_in_template(segments: Sequence[Segment], reserved: Iterable[str]) -> bool:
    """True when every reserved token string in the prompt lies inside the template's own text:
    then tokenizing the whole text at once puts control tokens only where the template put them."""
    strings = sorted({r for r in reserved if r}, key=len, reverse=True)
    if not strings:
        return True
    text = rendered_text(segments)
    spans, position = [], 0
    for piece, is_template in segments:
        if is_template:
            spans.append((position, position + len(piece)))
        position += len(piece)
    pattern = re.compile("(?=(" + "|".join(map(re.escape, strings)) + "))")
    for match in pattern.finditer(text):
        start, end = match.start(), match.start() + len(match.group(1))
        if not any(low <= start and end <= high for low, high in spans):
            return False
    return True


def encode_segments(segments: Sequence[Segment], encode_template: Callable[[str], list[int]],
                    encode_plain: Callable[[str], list[int]], reserved: Iterable[str]) -> list[int]:
    """Token ids of a segmented prompt: control tokens only where the template put them.

    The usual case (no message holds a reserved token string) is the whole text tokenized at once,
    exactly the ids a model was trained on; only a prompt with markup in a message's text is
    tokenized piece by piece (which changes merges at the pieces' edges, a price only such
    prompts pay)."""
    reserved = list(reserved)
    if markup_only_in_template(segments, reserved):
        return encode_template(rendered_text(segments))
    ids: list[int] = []
    for text, is_template in segments:
        if is_template:
            ids += encode_template(text)
        else:
            for piece in plain_pieces(text, reserved):
                ids += encode_plain(piece)
    return ids


def rendered_text(segments: Sequence[Segment]) -> str:
    return "".join(text for text, _ in segments)
