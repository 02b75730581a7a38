"""A chat as a file: export to JSON or Markdown, import either back.

JSON (``{"format": "qwen3-playground-chat", "version": 2, "messages": [...]}``) holds the
messages exactly as the chat shows them: OpenAI-style ``role`` / ``content``, and for a reply's
parts (reasoning panels, answers, statistics, errors, "Stopped") a ``metadata`` whose ``id`` says
what the message is (``core.messages``) and whose ``title`` is for reading. A bare list of
messages imports too; version 1 files (no ids) are upgraded on import.

Markdown is for reading; it ends with the same JSON in an HTML comment (base64, invisible when
rendered), so a Markdown export imports back exactly. Edits to the readable part are not read.

Imports are checked: valid UTF-8, valid JSON, known roles, text content, bounded size; anything
else raises :class:`ChatFileError` with one line that says what is wrong.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from core.branches import Branches
from core.chat import ROLES, content_text, tool_calls_of
from core.errors import PlaygroundError, PromptError
from core.messages import KINDS, kind_of, message_id, new_reply_id, record_of
from core.values import check_depth

FORMAT = "qwen3-playground-chat"
VERSION = 2
MAX_IMPORT_BYTES = 16 * 2**20  # a chat file larger than this is refused unread
MAX_MESSAGES = 10_000
MARKER = "qwen3-playground-chat"
_EMBEDDED = re.compile(r"<!--\s*" + re.escape(MARKER) + r"\s+v(\d+)\s+base64:([A-Za-z0-9+/=\s]*?)-->")
_STATUSES = ("pending", "done")


class ChatFileError(PlaygroundError):
    """An imported chat file is unreadable or not a chat."""


# -- normalising ---------------------------------------------------------------------------
def _field(message: Any, name: str) -> Any:
    return message.get(name) if isinstance(message, Mapping) else getattr(message, name, None)


def _metadata(raw: Any, where: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raw = {k: v for k, v in vars(raw).items()} if hasattr(raw, "__dict__") else None
        if raw is None:
            raise ChatFileError(f"{where}: metadata must be an object")
    out: dict[str, Any] = {}
    ident = raw.get("id")
    if ident not in (None, ""):
        if not isinstance(ident, str) or ident.partition(":")[0] not in KINDS:
            raise ChatFileError(f"{where}: metadata.id must be '<kind>:<reply>' with a kind among {', '.join(KINDS)}")
        out["id"] = ident
    title = raw.get("title")
    if title not in (None, ""):
        if not isinstance(title, str):
            raise ChatFileError(f"{where}: metadata.title must be text")
        out["title"] = title
    for key in ("parent_id", "log"):
        value = raw.get(key)
        if value not in (None, ""):
            if not isinstance(value, str):
                raise ChatFileError(f"{where}: metadata.{key} must be text")
            out[key] = value
    status = raw.get("status")
    if status not in (None, ""):
        if status not in _STATUSES:
            raise ChatFileError(f"{where}: metadata.status must be one of {', '.join(_STATUSES)}")
        out["status"] = status
    duration = raw.get("duration")
    if duration is not None:
        if isinstance(duration, bool) or not isinstance(duration, (int, float)):
            raise ChatFileError(f"{where}: metadata.duration must be a number")
        out["duration"] = duration
    return out or None


def _openai_fields(message: Any, where: str) -> dict[str, Any]:
    """An OpenAI-style history's tool fields (``tool_calls``, ``tool_call_id``), checked."""
    out: dict[str, Any] = {}
    calls = _field(message, "tool_calls")
    if calls is not None:
        try:
            out["tool_calls"] = tool_calls_of({"tool_calls": calls}, 0)
        except (PromptError, AttributeError):
            raise ChatFileError(f"{where}: tool_calls must be a list of OpenAI tool calls") from None
    call_id = _field(message, "tool_call_id")
    if call_id is not None:
        if not isinstance(call_id, str):
            raise ChatFileError(f"{where}: tool_call_id must be text")
        out["tool_call_id"] = call_id
    return out


def _legacy_kind(title: str) -> str:
    """What a version-1 note was, from its title (the only place titles are read: version 1
    files had no ids)."""
    if title.startswith(("Thinking", "Thought")):
        return "reasoning"
    return {"Error": "error", "Stopped": "stopped", "Interrupted": "interrupted"}.get(title, "stats")


def normalise(messages: Sequence[Any]) -> list[dict[str, Any]]:
    """Plain messages (role, content as text, the OpenAI tool fields, metadata with
    id/parent_id/title/log/status/duration only; a tool result's call record checked); a version-1
    note gets its id; a reasoning panel or tool call left "pending" (the page went away mid-reply)
    becomes a finished one."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ChatFileError("a chat is a list of messages")
    if len(messages) > MAX_MESSAGES:
        raise ChatFileError(f"the chat has {len(messages):,} messages; at most {MAX_MESSAGES:,} can be imported")
    out = []
    reply_id = new_reply_id()
    for i, message in enumerate(messages):
        where = f"message {i + 1}"
        if not isinstance(message, Mapping) and not hasattr(message, "role"):
            raise ChatFileError(f"{where} is not an object with 'role' and 'content'")
        role = _field(message, "role")
        if role not in ROLES:
            raise ChatFileError(f"{where} has an unknown role {role!r} (expected one of {', '.join(ROLES)})")
        try:
            text = content_text(_field(message, "content"))
        except PromptError:
            raise ChatFileError(f"{where}: content must be text") from None
        item: dict[str, Any] = {"role": role, "content": text}
        item.update(_openai_fields(message, where))
        metadata = _metadata(_field(message, "metadata"), where)
        if role == "user":
            reply_id = new_reply_id()
        if metadata and role == "assistant" and "id" not in metadata and metadata.get("title"):
            metadata["id"] = message_id(_legacy_kind(metadata["title"]), reply_id)
        if metadata:
            if metadata.get("status") == "pending":  # the page went away mid-reply
                metadata["status"] = "done"
                if kind_of(item | {"metadata": metadata}) == "reasoning":
                    metadata["title"] = "Thought (interrupted)"
                else:  # a tool call that never finished
                    metadata["log"] = "interrupted"
            item["metadata"] = metadata
            try:
                record_of(item)
            except PromptError as exc:
                raise ChatFileError(f"{where}: {exc}") from None
        out.append(item)
    return out


# -- export --------------------------------------------------------------------------------
def to_dict(history: Sequence[Any], model: str | None = None, branches: Branches | None = None) -> dict[str, Any]:
    """The export: the messages shown, and under "branches" the alternatives not shown (those
    still reachable from them, ``core.branches``) when there are any."""
    data: dict[str, Any] = {"format": FORMAT, "version": VERSION,
                            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if model:
        data["model"] = model
    data["messages"] = normalise(history)
    kept = branches.pruned(data["messages"]) if branches is not None else None
    if kept is not None and kept.forks:
        data["branches"] = kept.to_data()
    return data


def to_json(history: Sequence[Any], model: str | None = None, branches: Branches | None = None) -> str:
    return json.dumps(to_dict(history, model, branches), ensure_ascii=False, indent=2) + "\n"


def _quote(text: str) -> str:
    return "\n".join("> " + line if line else ">" for line in text.splitlines()) or ">"


def to_markdown(history: Sequence[Any], model: str | None = None, branches: Branches | None = None) -> str:
    """A readable transcript of the path shown (reasoning as quotes, notes in italics) that
    imports back exactly, alternatives included (in the data at its end)."""
    data = to_dict(history, model, branches)
    head = f"*Exported {data['exported_at'].replace('T', ' ').rstrip('Z')} UTC"
    lines = ["# Qwen3 Playground chat", "", head + (f" · model `{model}`*" if model else "*"), ""]
    for message in data["messages"]:
        title = (message.get("metadata") or {}).get("title") or ""
        text = message["content"]
        kind = kind_of(message)
        if kind is None:
            lines += [f"**{message['role'].capitalize()}**", "", text, ""]
        elif kind == "reasoning":
            lines += [f"**Assistant** · *{title}*", "", _quote(text), ""]
        elif kind == "answer":
            lines += ["**Assistant**", "", text, ""]
        elif kind == "tool_call":
            lines += [f"**Tool call** · *{title}*", "", text, ""]
        elif kind == "tool_result":
            lines += [f"*{title}*", "", _quote(record_of(message)["result"]), ""]
        else:
            lines += [f"*{title}*" + (f"  \n{text}" if text else ""), ""]
    payload = base64.b64encode(json.dumps(data, ensure_ascii=False).encode("utf-8")).decode("ascii")
    lines += ["---", "", f"<!-- {MARKER} v{VERSION} base64:{payload} -->", ""]
    return "\n".join(lines)


# -- import --------------------------------------------------------------------------------
def _decode(data: bytes) -> str:
    if len(data) > MAX_IMPORT_BYTES:
        raise ChatFileError(f"the file is {len(data):,} bytes; a chat file may be at most {MAX_IMPORT_BYTES:,}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ChatFileError(f"the file is not UTF-8 text (byte 0x{data[exc.start]:02x} at position "
                            f"{exc.start:,} cannot be decoded): export the chat again") from None


def _tree_of(data: Any) -> tuple[list[dict[str, Any]], Branches]:
    messages = normalise(_messages_of(data))
    try:
        branches = Branches.from_data(data.get("branches") if isinstance(data, Mapping) else None, normalise)
    except PromptError as exc:
        raise ChatFileError(str(exc)) from None
    return messages, branches


def _messages_of(data: Any) -> list[Any]:
    try:  # before anything recursive (json.dumps of a tool call's arguments) reads it
        check_depth(data, "the chat")
    except PlaygroundError as exc:
        raise ChatFileError(str(exc)) from None
    if isinstance(data, list):
        return data
    if isinstance(data, Mapping):
        if data.get("format") not in (None, FORMAT):
            raise ChatFileError(f"this is a {data.get('format')!r} file, not a chat export")
        version = data.get("version", VERSION)
        if not isinstance(version, int) or version > VERSION:
            raise ChatFileError(f"this chat export has version {version!r}; this playground reads up to {VERSION}")
        if "messages" in data:
            return data["messages"]
    raise ChatFileError("the JSON holds no chat: expected {\"messages\": [...]} or a list of messages")


def parse(data: bytes | str) -> list[dict[str, Any]]:
    """A chat file's messages (JSON export, Markdown export, or a bare JSON list of messages)."""
    return parse_tree(data)[0]


def parse_tree(data: bytes | str) -> tuple[list[dict[str, Any]], Branches]:
    """A chat file's messages and the alternatives it keeps (none in an older file)."""
    text = _decode(data) if isinstance(data, (bytes, bytearray)) else data
    stripped = text.lstrip()
    if not stripped:
        raise ChatFileError("the file is empty")
    if stripped[0] in "[{":
        try:
            loaded = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise ChatFileError(f"the file is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
        except RecursionError:
            raise ChatFileError("the file is not valid JSON: nested too deeply") from None
        return _tree_of(loaded)
    found = _EMBEDDED.findall(text)
    if not found:
        raise ChatFileError("this is neither a JSON chat export nor a Markdown export of this playground "
                            "(a Markdown export ends with the chat's data in a comment)")
    version, payload = found[-1]  # the last one: the exporter writes it after all the messages
    try:
        loaded = json.loads(base64.b64decode("".join(payload.split()), validate=True).decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ChatFileError("the chat data at the end of this Markdown file is damaged") from None
    return _tree_of(loaded)
