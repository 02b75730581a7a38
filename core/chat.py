"""Chat history rules shared by every backend and the UI.

A history is a list of OpenAI-style messages ``{"role", "content"}``; assistant messages may
carry their reasoning under ``"reasoning"`` (or ``"reasoning_content"``, as servers name it) and
``tool_calls``; ``tool`` messages carry results (``tool_call_id``).
Gradio-shaped histories are accepted too: content as a list of parts, and the playground's own
reasoning panels and notes (``core.messages``: shown, never sent to the model).
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from core.errors import PromptError
from core.messages import content_text, goes_to_model, unfold_tool_records
from core.reasoning import THINK_CLOSE, THINK_OPEN

ROLES = ("system", "user", "assistant", "tool")
SOFT_SWITCHES = ("/think", "/no_think")

Message = dict[str, Any]


def answer_only(content: str) -> str:
    """What an earlier assistant turn contributes to the prompt: its answer, no reasoning."""
    if THINK_CLOSE in content:  # like Qwen's reference code: split at the last </think>
        return content.rsplit(THINK_CLOSE, 1)[1].strip()
    if content.lstrip().startswith(THINK_OPEN):  # cut off while reasoning: no answer yet
        return ""
    return content


def reasoning_of(message: Mapping[str, Any]) -> str:
    """An assistant message's reasoning: its ``reasoning_content`` / ``reasoning`` field, else a
    ``<think>`` block written in its content (framing newlines removed, as the template does)."""
    for key in ("reasoning_content", "reasoning"):
        if isinstance(message.get(key), str):
            return message[key].strip("\n")
    content = content_text(message.get("content"))
    if THINK_CLOSE in content:
        return content.split(THINK_CLOSE)[0].split(THINK_OPEN)[-1].strip("\n")
    return ""


def tool_calls_of(message: Mapping[str, Any], index: int) -> list[dict[str, Any]]:
    """An assistant message's ``tool_calls`` in OpenAI's shape, arguments as a JSON string."""
    calls = message.get("tool_calls") or []
    if not isinstance(calls, Sequence) or isinstance(calls, str):
        raise PromptError(f"message {index}: tool_calls must be a list")
    out = []
    for call in calls:
        function = call.get("function", call) if isinstance(call, Mapping) else None
        name = function.get("name") if isinstance(function, Mapping) else None
        if not isinstance(name, str):
            raise PromptError(f"message {index}: each tool call needs a function name")
        arguments = function.get("arguments", {})
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)  # as the template's tojson writes it
        out.append({"id": str(call.get("id") or ""), "type": "function",
                    "function": {"name": name, "arguments": arguments}})
    return out


def model_messages(history: Sequence[Mapping[str, Any]], system_prompt: str | None = None) -> list[Message]:
    """Messages to render for the model, following Qwen3's rules (its chat template's):

    - assistant turns before the last user message keep their answer (and tool calls) only;
      those after it (the current tool loop) keep their reasoning as ``reasoning_content``;
    - ``tool`` messages carry results back, after an assistant turn with ``tool_calls`` (the
      playground's own tool-result messages are unfolded into both, ``core.messages``);
    - ``/think`` and ``/no_think`` are left exactly as typed (the model reads them);
    - an optional system prompt goes first unless the history already starts with one;
    - the conversation ends with a non-empty user message, or with tool results.
    """
    kept: list[tuple[int, Mapping[str, Any]]] = []
    for i, message in enumerate(unfold_tool_records(history)):
        if not isinstance(message, Mapping):
            raise PromptError(f"message {i} is not an object with 'role' and 'content'")
        if not goes_to_model(message):
            continue
        if message.get("role") not in ROLES:
            raise PromptError(f"message {i} has an unknown role {message.get('role')!r} "
                              f"(expected one of {', '.join(ROLES)})")
        kept.append((i, message))
    last_user = max((n for n, (_, m) in enumerate(kept) if m["role"] == "user"), default=-1)
    messages: list[Message] = []
    for n, (i, message) in enumerate(kept):
        role = message["role"]
        text = content_text(message.get("content"))
        if role == "tool":
            if not messages or not (messages[-1].get("tool_calls") or messages[-1]["role"] == "tool"):
                raise PromptError(f"message {i}: a tool result must follow an assistant message with tool_calls")
            messages.append({"role": "tool", "tool_call_id": str(message.get("tool_call_id") or ""), "content": text})
            continue
        if role != "assistant":
            messages.append({"role": role, "content": text})
            continue
        out: Message = {"role": "assistant", "content": answer_only(text)}
        reasoning = reasoning_of(message) if n > last_user else ""
        if reasoning:
            out["reasoning_content"] = reasoning
            out["content"] = out["content"].lstrip("\n")
        calls = tool_calls_of(message, i)
        if calls:
            out["tool_calls"] = calls
        messages.append(out)
    if system_prompt and system_prompt.strip() and not (messages and messages[0]["role"] == "system"):
        messages.insert(0, {"role": "system", "content": system_prompt})
    if not messages or messages[-1]["role"] not in ("user", "tool"):
        raise PromptError("the conversation must end with a user message")
    if messages[-1]["role"] == "user" and not messages[-1]["content"].strip():
        raise PromptError("the prompt is empty: type a message first")
    return messages


def latest_soft_switch(messages: Sequence[Mapping[str, Any]]) -> str | None:
    """The last ``/think`` or ``/no_think`` a user or system message ends with, if any.

    Qwen3 follows the latest such instruction (when ``enable_thinking`` is on); this is only for
    display: the switch itself reaches the model as typed.
    """
    for message in reversed(messages):
        if message.get("role") not in ("user", "system"):
            continue
        text = content_text(message.get("content")).rstrip()
        for switch in SOFT_SWITCHES:
            if text.endswith(switch):
                return switch
    return None

