"""What each chat message is, as data: the ``kind`` of a reply's parts, carried in Gradio's
``ChatMessage`` metadata ``id`` (``"<kind>:<reply id>"``).

A reply is shown as several messages: its reasoning panel, its answer, and a note (figures, an
error, "Stopped", "Interrupted"). Only the answer goes back to the model; what a message is never
depends on its display title. The ``id`` carries it because Gradio's Chatbot keeps only its own
metadata keys (``title``, ``id``, ``parent_id``, ``log``, ``duration``, ``status``) on the way to
the browser and back.
"""
from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

from core.errors import PromptError
from core.events import StopReason

Kind = Literal["reasoning", "answer", "stats", "error", "stopped", "interrupted", "note"]
KINDS: tuple[str, ...] = get_args(Kind)
# the notes that end a reply, and how it ended ("stats": it finished and has figures; the others
# are the stop reasons of core.events.StopReason)
ENDINGS: tuple[str, ...] = ("stats", *get_args(StopReason))


def content_text(content: Any) -> str:
    """Flatten message content: a string, or a list of parts (``{"type": "text", "text"}``)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        return str(content.get("text", ""))
    if isinstance(content, Sequence):
        return "".join(content_text(part) for part in content)
    raise PromptError(f"message content must be text, got {type(content).__name__}")


def new_reply_id() -> str:
    return secrets.token_hex(4)


def message_id(kind: str, reply_id: str) -> str:
    assert kind in KINDS, kind
    return f"{kind}:{reply_id}"


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
    value = str(metadata_of(message).get("id") or "")
    return value.partition(":")[2] or None if ":" in value else None


def goes_to_model(message: Any) -> bool:
    """User, system and answer messages go back to the model; reasoning panels and notes never do."""
    return kind_of(message) in (None, "answer")


def is_pending(message: Any) -> bool:
    return metadata_of(message).get("status") == "pending"


# OpenAI message fields a history may carry besides role and content (tool loops, reasoning)
_OPENAI_FIELDS = ("tool_calls", "tool_call_id", "reasoning_content", "reasoning")


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
