"""What each chat message is, as data: the ``kind`` of a reply's parts, carried in Gradio's
``ChatMessage`` metadata ``id`` (``"<kind>:<reply id>"``).

A reply is shown as several messages: its reasoning panel, its answer, and a note (figures, an
error, "Stopped", "Interrupted"). Only the answer goes back to the model; what a message is never
depends on its display title. The ``id`` carries it because Gradio's Chatbot keeps only its own
metadata keys (``title``, ``id``, ``parent_id``, ``log``, ``duration``, ``status``) on the way to
the browser and back.

A tool call is two messages: the call (``tool_call:<reply>:<call id>``, shown, never sent) and,
nested in it (``parent_id``), its result, whose id carries the call as data:
``tool_result:<reply>:<record JSON>``, the record being one entry of ``app.py chat --json``'s
``tool_calls`` plus the call's ``id`` (and ``raw``, the model's text, for a call that did not
parse). :func:`unfold_tool_records` turns the records back into OpenAI ``tool_calls`` and ``tool``
messages, so a chat with tools goes back to the model by the template's rules.
"""
from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

from core.errors import PromptError
from core.events import StopReason

Kind = Literal["reasoning", "answer", "stats", "error", "stopped", "interrupted", "repeating", "note", "tool_call",
               "tool_result"]
KINDS: tuple[str, ...] = get_args(Kind)
# the notes that end a reply, and how it ended ("stats": it finished and has figures; the others
# are the stop reasons of core.events.StopReason; "repeating": the loop guard stopped it)
ENDINGS: tuple[str, ...] = ("stats", *get_args(StopReason))


def content_text(content: Any) -> str:
    """Flatten message content: a string, or one list of parts (``{"type": "text", "text"}`` or
    strings; a part without text, such as a file, adds nothing). Anything else, a list nested in
    a list included, is refused (``PromptError``)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = [content] if isinstance(content, Mapping) else content
    if not isinstance(parts, Sequence) or isinstance(parts, (bytes, bytearray)):
        raise PromptError(f"message content must be text, got {type(content).__name__}")
    texts = []
    for part in parts:
        text = part.get("text") if isinstance(part, Mapping) else part
        if text is None and isinstance(part, Mapping):
            continue
        if not isinstance(text, str):
            raise PromptError("message content must be text or a list of text parts "
                              "({\"type\": \"text\", \"text\": ...})")
        texts.append(text)
    return "".join(texts)


def new_reply_id() -> str:
    return secrets.token_hex(4)


def message_id(kind: str, reply_id: str, suffix: str = "") -> str:
    assert kind in KINDS, kind
    return f"{kind}:{reply_id}" + (f":{suffix}" if suffix else "")


def field(message: Any, name: str) -> Any:
    """A message's field, whether it is a dict or a Gradio message object."""
    return message.get(name) if isinstance(message, Mapping) else getattr(message, name, None)


def metadata_of(message: Any) -> dict[str, Any]:
    metadata = field(message, "metadata")
    if isinstance(metadata, Mapping):
        return dict(metadata)
    if metadata is not None and hasattr(metadata, "__dict__"):  # a Gradio metadata object
        return {k: v for k, v in vars(metadata).items() if v is not None}
    return {}


def kind_of(message: Any) -> str | None:
    """The assistant message's kind (None for user / system messages); a plain assistant
    message without an id (an OpenAI-style history) is an answer."""
    if field(message, "role") != "assistant":
        return None
    kind = str(metadata_of(message).get("id") or "").partition(":")[0]
    return kind if kind in KINDS else "answer"


def reply_id_of(message: Any) -> str | None:
    parts = str(metadata_of(message).get("id") or "").split(":", 2)
    return parts[1] or None if len(parts) > 1 else None


def goes_to_model(message: Any) -> bool:
    """User, system and answer messages go back to the model; reasoning panels and notes never do."""
    return kind_of(message) in (None, "answer")


def is_pending(message: Any) -> bool:
    return metadata_of(message).get("status") == "pending"


# OpenAI message fields a history may carry besides role and content (tool loops, reasoning)
_OPENAI_FIELDS = ("tool_calls", "tool_call_id", "reasoning_content", "reasoning")


def message_chars(message: Any) -> int:
    """Every character a message carries, shown or sent: its content, its metadata (titles,
    logs, a tool result's record...) and its tool and reasoning fields. What size limits count."""
    size = len(content_text(field(message, "content")))
    size += sum(len(value) if isinstance(value, str) else len(str(value)) for value in metadata_of(message).values())
    for name in _OPENAI_FIELDS:
        value = field(message, name)
        if isinstance(value, str):
            size += len(value)
        elif value is not None:
            try:
                size += len(json.dumps(value, ensure_ascii=False, default=str))
            except (TypeError, ValueError, RecursionError):
                raise PromptError(f"a message's {name} is not JSON data (or is nested too deeply)") from None
    return size


def plain_history(history: list[Any] | None) -> list[dict[str, Any]]:
    """A chat history as plain JSON data (role, content as text, metadata and the OpenAI fields
    of tool loops), whatever Gradio gave."""
    out = []
    for message in history or []:
        item: dict[str, Any] = {"role": field(message, "role"), "content": content_text(field(message, "content"))}
        item.update({name: field(message, name) for name in _OPENAI_FIELDS if field(message, name) is not None})
        metadata = metadata_of(message)
        if metadata:
            item["metadata"] = metadata
        out.append(item)
    return out


# -- tool calls ------------------------------------------------------------------------------
RECORD_KEYS = ("id", "name", "arguments", "result", "error", "round", "duration_s", "truncated")


def tool_record(call: Mapping[str, Any], result: Mapping[str, Any]) -> dict[str, Any]:
    """The data of one call and its result: ``call`` in OpenAI's ``tool_calls`` shape (arguments as
    JSON text), ``result`` a ``ToolResult.to_dict()``."""
    function = call.get("function") or {}
    record = {"id": str(call.get("id") or ""), "name": function.get("name") or result.get("name"),
              "arguments": result.get("arguments"), "result": str(result.get("content", "")),
              "error": result.get("error"), "round": int(result.get("round", 1)),
              "duration_s": round(float(result.get("duration_s", 0.0)), 3), "truncated": bool(result.get("truncated"))}
    if record["arguments"] is None:  # it did not parse: the model's own text goes back to it
        record["raw"] = str(function.get("arguments", ""))
    return record


def tool_result_id(reply_id: str, record: Mapping[str, Any]) -> str:
    return message_id("tool_result", reply_id, json.dumps(record, ensure_ascii=False, separators=(",", ":")))


def record_of(message: Any) -> dict[str, Any] | None:
    """The call record a ``tool_result`` message carries (None for other messages); raises
    ``PromptError`` for a damaged one."""
    if kind_of(message) != "tool_result":
        return None
    parts = str(metadata_of(message).get("id") or "").split(":", 2)
    try:
        record = json.loads(parts[2]) if len(parts) == 3 else None
    except (json.JSONDecodeError, RecursionError):
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("name"), str) or \
            not isinstance(record.get("result"), str) or not isinstance(record.get("id"), str):
        raise PromptError("a tool result message's metadata.id does not hold its call record")
    if record.get("arguments") is not None and not isinstance(record["arguments"], dict):
        raise PromptError("a tool call record's arguments must be an object")
    if not isinstance(record.get("round", 1), int) or isinstance(record.get("round", 1), bool):
        raise PromptError("a tool call record's round must be a whole number")
    return record


def _call_of(record: Mapping[str, Any]) -> dict[str, Any]:
    arguments = record.get("raw", "") if record.get("arguments") is None else \
        json.dumps(record["arguments"], ensure_ascii=False)  # as the template's tojson writes it
    return {"id": record["id"], "type": "function", "function": {"name": record["name"], "arguments": arguments}}


def unfold_tool_records(history: Sequence[Any]) -> list[Any]:
    """``history`` with each round's tool results turned back into OpenAI messages: the round's
    assistant message gets the ``tool_calls`` (its answer text, if the model wrote one before the
    calls, stays its content), followed by one ``tool`` message per call. Other messages are
    returned unchanged (a history without tool results is returned as is)."""
    out: list[Any] = []
    results: list[dict[str, Any]] = []
    turn: tuple[str | None, int] | None = None  # (reply id, round) of the assistant message taking calls
    last_model: dict[str, Any] | None = None  # the last message that goes to the model, as copied to out
    for message in history:
        record = record_of(message)
        if record is None:
            if goes_to_model(message):
                out.extend(results)
                results, turn = [], None
                last_model = dict(message) if kind_of(message) == "answer" and isinstance(message, Mapping) else None
                out.append(last_model if last_model is not None else message)
            else:
                out.append(message)
            continue
        key = (reply_id_of(message), int(record.get("round", 1)))
        if turn != key:
            out.extend(results)
            results = []
            same_reply = last_model is not None and reply_id_of(last_model) == key[0] and not last_model.get("tool_calls")
            if not same_reply:
                last_model = {"role": "assistant", "content": "", "metadata": {"id": message_id("answer", key[0] or "")}}
                out.append(last_model)
            last_model["tool_calls"] = []
            turn = key
        last_model["tool_calls"].append(_call_of(record))
        results.append({"role": "tool", "tool_call_id": record["id"], "content": record["result"]})
    out.extend(results)
    return out
