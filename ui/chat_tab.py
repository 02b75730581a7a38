"""The chat: streaming replies with a reasoning panel, Stop, Regenerate, Clear.

The handlers only move the core's events into chat messages: the backend's ``stream_chat``
applies the history rules and splits reasoning from answer; closing it (Stop: Gradio closes
this generator) stops the computation.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr

from core.chat import content_text
from core.errors import PlaygroundError
from core.events import AnswerDelta, GenerationStats, ReasoningDelta, Reply
from ui.context import AppContext, gradio_progress
from ui.formatting import (answer_message, close_pending_thoughts, error_message, finish_thought, info_message,
                           is_pending_thought, split_last_turn, stats_details, stats_line, thought_message,
                           user_message, values_to_settings)

History = list[Any]


@dataclass
class ChatTab:
    chatbot: gr.Chatbot
    message: gr.Textbox
    send: gr.Button
    stop: gr.Button
    regenerate: gr.Button
    clear: gr.Button


def build_chat_tab() -> ChatTab:
    chatbot = gr.Chatbot(label="Chat", height=560, elem_id="chatbot", buttons=["copy", "copy_all"],
                         placeholder="Ask something. With **Thinking** on, the reasoning streams into a "
                                     "panel above the answer.")
    with gr.Row():
        message = gr.Textbox(label="message", show_label=False, scale=5, elem_id="message", autofocus=True, lines=1,
                             placeholder="Type a message and press Enter (end it with /think or /no_think "
                                         "to switch thinking per message)")
        send = gr.Button("Send", variant="primary", scale=1, min_width=80, elem_id="send")
        stop = gr.Button("Stop", variant="stop", scale=1, min_width=80, elem_id="stop")
    with gr.Row():
        regenerate = gr.Button("Regenerate", size="sm", elem_id="regenerate")
        clear = gr.Button("Clear", size="sm", elem_id="clear")
    return ChatTab(chatbot, message, send, stop, regenerate, clear)


def stream_reply(ctx: AppContext, history: History, system_prompt: str, thinking: bool,
                 settings_values: tuple[Any, ...], model: str, yarn_factor: float,
                 progress: Any = None) -> Iterator[History]:
    """Stream the assistant's turn for ``history`` (which ends with the user's message).

    Yields the whole history after each change: a thought message ("Thinking…", pending) that
    collapses to "Thought for N s" when the answer starts, the answer, then a stats note. A
    ``PlaygroundError`` becomes an error note; everything before it is kept.
    """
    thought: dict[str, Any] | None = None
    answer: dict[str, Any] | None = None
    reply = Reply()
    started = time.perf_counter()
    try:
        settings = values_to_settings(*settings_values)  # validated by stream_chat
        with ctx.lease(model, float(yarn_factor or 1.0), gradio_progress(progress) if progress else None) as backend:
            started = time.perf_counter()
            stream = backend.stream_chat(history, settings, thinking=bool(thinking),
                                         system_prompt=system_prompt or None)
            try:
                for event in stream:
                    reply.add(event)
                    if isinstance(event, ReasoningDelta):
                        if thought is None:
                            thought = thought_message("")
                            history.append(thought)
                        thought["content"] = reply.reasoning
                    elif isinstance(event, AnswerDelta):
                        if thought is not None and is_pending_thought(thought):
                            finish_thought(thought, time.perf_counter() - started)
                        if answer is None:
                            answer = answer_message("")
                            history.append(answer)
                        answer["content"] = reply.answer
                    elif isinstance(event, GenerationStats):
                        continue
                    yield history
            finally:  # Stop / client gone: closing the stream ends the generation
                stream.close()
            summary = _summary(backend)
        if thought is not None and is_pending_thought(thought):  # cut off while reasoning
            finish_thought(thought, time.perf_counter() - started, cut_off=True)
        if answer is None and thought is None:
            history.append(answer_message(""))
        history.append(info_message(stats_line(reply.stats), stats_details(reply.stats, summary)))
        yield history
    except PlaygroundError as exc:
        if thought is not None and is_pending_thought(thought):
            finish_thought(thought, time.perf_counter() - started, cut_off=True)
        gr.Warning(str(exc))
        history.append(error_message(exc))
        yield history


def _summary(backend: Any) -> str:
    try:
        return backend.describe().summary()
    except PlaygroundError as exc:
        return str(exc)


def make_chat_handlers(ctx: AppContext):
    """(chat, regenerate) for the API (typed, for ``gr.api``), (submit, respond, regenerate_ui) for the UI."""

    def answer(history: History, system_prompt: str, thinking: bool, values: tuple[Any, ...], model: str,
               yarn_factor: float, progress: Any = None) -> Iterator[History]:
        """Answer the user message that ends ``history``; a history ending otherwise is left as is."""
        history = list(history or [])
        if not history or _role(history[-1]) != "user":
            yield history
            return
        yield from stream_reply(ctx, history, system_prompt, thinking, values, model, yarn_factor, progress)

    # -- the API: stateless, the session's model is a parameter ----------------------------
    def chat(message: str, history: list[dict] | None = None, system_prompt: str = "", thinking: bool = True,
             temperature: float = 0.6, top_p: float = 0.95, top_k: int = 20, min_p: float = 0.0,
             presence_penalty: float = 0.0, max_new_tokens: int = 32768, seed: int = -1,
             model: str = "tiny-bf16", yarn_factor: float = 1.0) -> Iterator[list[dict]]:
        """Send `message` after `history` (OpenAI-style messages); streams the updated history.

        A reply is a thought message (the reasoning; metadata.title "Thinking…" while it streams,
        then "Thought for N s" with metadata.duration) when thinking, the answer message, then a
        stats note (metadata.title: prompt / completion tokens, time to first token, tokens/s).
        Messages with a metadata.title are never sent back to the model. seed -1 = random.
        """
        text = content_text(message)
        if not text.strip():
            gr.Warning("Type a message first.")
            yield list(history or [])
            return
        history = [*(history or []), user_message(text)]
        yield history
        values = (temperature, top_p, top_k, min_p, presence_penalty, max_new_tokens, seed)
        yield from answer(history, system_prompt, thinking, values, model, yarn_factor)

    def regenerate(history: list[dict], system_prompt: str = "", thinking: bool = True,
                   temperature: float = 0.6, top_p: float = 0.95, top_k: int = 20, min_p: float = 0.0,
                   presence_penalty: float = 0.0, max_new_tokens: int = 32768, seed: int = -1,
                   model: str = "tiny-bf16", yarn_factor: float = 1.0) -> Iterator[list[dict]]:
        """Drop the last reply and answer the last user message again (streams the history)."""
        before, last = split_last_turn(history)
        if last is None:
            gr.Warning("Nothing to regenerate yet.")
            yield list(history or [])
            return
        values = (temperature, top_p, top_k, min_p, presence_penalty, max_new_tokens, seed)
        yield from answer([*before, user_message(content_text(last))], system_prompt, thinking, values, model,
                          yarn_factor)

    # -- the UI: the message moves into the chat at once, then the reply streams -----------
    def submit(message: str, history: History) -> tuple[str, History]:
        text = content_text(message)
        if not text.strip():
            return message, list(history or [])
        return "", [*(history or []), user_message(text)]

    def respond(history: History, system_prompt: str, thinking: bool, *rest: Any,
                progress=gr.Progress()) -> Iterator[History]:
        *values, model, yarn_factor = rest
        yield from answer(history, system_prompt, thinking, tuple(values), model, yarn_factor, progress)

    def regenerate_ui(history: History, system_prompt: str, thinking: bool, *rest: Any,
                      progress=gr.Progress()) -> Iterator[History]:
        before, last = split_last_turn(history)
        if last is None:
            gr.Warning("Nothing to regenerate yet.")
            yield list(history or [])
            return
        *values, model, yarn_factor = rest
        yield from answer([*before, user_message(content_text(last))], system_prompt, thinking, tuple(values),
                          model, yarn_factor, progress)

    return chat, regenerate, submit, respond, regenerate_ui


def _role(message: Any) -> Any:
    return message.get("role") if isinstance(message, dict) else getattr(message, "role", None)


def stopped(history: History) -> History:
    """Stop: the generator is closed by Gradio; panels still spinning are marked stopped."""
    return close_pending_thoughts(history)


def clear() -> tuple[History, str]:
    return [], ""
