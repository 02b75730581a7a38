"""Chat history rules shared by every backend and the UI.

A history is a list of OpenAI-style messages ``{"role", "content"}``; assistant messages may
carry their reasoning under ``"reasoning"`` (or ``"reasoning_content"``, as servers name it).
Gradio-shaped histories are accepted too: content as a list of parts, and the playground's own
reasoning panels and notes (``core.messages``: shown, never sent to the model).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from core.errors import PromptError
from core.messages import content_text, goes_to_model
from core.reasoning import THINK_CLOSE, THINK_OPEN

ROLES = ("system", "user", "assistant")
SOFT_SWITCHES = ("/think", "/no_think")

Message = dict[str, str]


def answer_only(content: str) -> str:
    """What an earlier assistant turn contributes to the prompt: its answer, no reasoning."""
    if THINK_CLOSE in content:  # like Qwen's reference code: split at the last </think>
        return content.rsplit(THINK_CLOSE, 1)[1].strip()
    if content.lstrip().startswith(THINK_OPEN):  # cut off while reasoning: no answer yet
        return ""
    return content


def model_messages(history: Sequence[Mapping[str, Any]], system_prompt: str | None = None) -> list[Message]:
    """Messages to render for the model, following Qwen3's rules.

    - earlier assistant turns keep their final answer only (never their reasoning);
    - ``/think`` and ``/no_think`` are left exactly as typed (the model reads them);
    - an optional system prompt goes first unless the history already starts with one;
    - the conversation must end with a non-empty user message.
    """
    messages: list[Message] = []
    for i, message in enumerate(history):
        if not isinstance(message, Mapping):
            raise PromptError(f"message {i} is not an object with 'role' and 'content'")
        if not goes_to_model(message):
            continue
        role = message.get("role")
        if role not in ROLES:
            raise PromptError(f"message {i} has an unknown role {role!r} (expected one of {', '.join(ROLES)})")
        text = content_text(message.get("content"))
        if role == "assistant":
            text = answer_only(text)
        messages.append({"role": role, "content": text})
    if system_prompt and system_prompt.strip() and not (messages and messages[0]["role"] == "system"):
        messages.insert(0, {"role": "system", "content": system_prompt})
    if not messages or messages[-1]["role"] != "user":
        raise PromptError("the conversation must end with a user message")
    if not messages[-1]["content"].strip():
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

