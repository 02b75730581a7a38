"""The chat: streaming replies with a reasoning panel, Stop, Regenerate, Clear.

The handlers only move the core's events into chat messages: the backend's ``stream_chat``
applies the history rules and splits reasoning from answer; closing it (Stop: Gradio closes
this generator) stops the computation.
"""
from __future__ import annotations

import base64
import binascii
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from dataclasses import dataclass
from typing import Any

import gradio as gr

from core import chat_io
from core.chat import content_text
from core.errors import PlaygroundError
from core.events import AnswerDelta, GenerationStats, ReasoningDelta, Reply
from ui.context import AppContext, gradio_progress, plain_history
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
    export: gr.Button
    import_file: gr.UploadButton
    json_file: gr.File
    markdown_file: gr.File
    autosave: gr.Timer  # copies the chat into the browser's localStorage (no server round trip)


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
        export = gr.Button("Export chat", size="sm", elem_id="export-chat")
        import_file = gr.UploadButton("Import chat", size="sm", file_types=[".json", ".md"], file_count="single",
                                      type="filepath", elem_id="import-chat")
    with gr.Row():
        json_file = gr.File(label="Chat (JSON)", visible=False, interactive=False, elem_id="chat-json")
        markdown_file = gr.File(label="Chat (Markdown)", visible=False, interactive=False, elem_id="chat-markdown")
    autosave = gr.Timer(AUTOSAVE_S)
    return ChatTab(chatbot, message, send, stop, regenerate, clear, export, import_file, json_file, markdown_file,
                   autosave)


# The chat kept in the browser's localStorage, as the JSON of the chat's messages, under one key
# per site: it survives a reload and a restart of the server, and never leaves the user's browser
# except in that user's own requests. (Gradio's BrowserState is not used: its change events miss
# the streamed updates of a reply, and a chat's initial empty value can overwrite the stored
# chat before it is read back.) A timer copies the chat while a reply streams: the browser
# itself does it, no request reaches the server; a copy is written only when the chat changed.
STORAGE_KEY = "qwen3-playground-chat"
AUTOSAVE_S = 1.0
SAVE_JS = f"""(history) => {{
  if (window.__qwen3ChatRestored) {{
    const text = JSON.stringify(history ?? []);
    if (text !== window.__qwen3ChatSaved) {{
      try {{ localStorage.setItem("{STORAGE_KEY}", text); window.__qwen3ChatSaved = text; }}
      catch (error) {{ console.error("could not keep the chat in localStorage", error); }}
    }}
  }}
  return [];
}}"""
READ_JS = f"""(history) => {{
  let saved = [];
  try {{ saved = JSON.parse(localStorage.getItem("{STORAGE_KEY}") || "[]"); }}
  catch (error) {{ console.error("the chat kept in localStorage is unreadable", error); }}
  return [saved];
}}"""
RESTORED_JS = "() => { window.__qwen3ChatRestored = true; return []; }"
INTERRUPTED_TITLE = "Interrupted"
INTERRUPTED_NOTE = "The page was closed or reloaded before this reply ended; what had streamed is kept."


def stream_reply(ctx: AppContext, history: History, system_prompt: str, thinking: bool,
                 settings_values: tuple[Any, ...], model: str, yarn_factor: float,
                 progress: Any = None) -> Iterator[History]:
    """Stream the assistant's turn for ``history`` (which ends with the user's message).

    Yields the whole history after each change: a thought message ("Thinking…", pending) that
    collapses to "Thought for N s" when the answer starts, the answer, then a stats note. The
    request is checked first (sizes, settings, model: ``AppContext.check_request``), before any
    model loads. A failure becomes an error note; everything before it (a partial reply too)
    is kept, and the note says the reply was cut short.
    """
    thought: dict[str, Any] | None = None
    answer: dict[str, Any] | None = None
    reply = Reply()
    started = time.perf_counter()
    try:
        request = ctx.check_request(history, system_prompt, thinking, settings_values, model, yarn_factor)
        with ctx.lease(model, request.yarn_factor, gradio_progress(progress) if progress else None) as backend:
            started = time.perf_counter()
            stream = ctx.generate(model, request.yarn_factor, plain_history(history), request.settings.to_dict(),
                                  bool(thinking), system_prompt or None,
                                  max_new_tokens=request.settings.max_new_tokens)
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
    except Exception as exc:  # PlaygroundError: said plainly; anything else: a bug or a lost GPU slot
        if thought is not None and is_pending_thought(thought):
            finish_thought(thought, time.perf_counter() - started, cut_off=True)
        message = str(exc) if isinstance(exc, PlaygroundError) else f"unexpected error: {type(exc).__name__}: {exc}"
        gr.Warning(message)
        history.append(error_message(message + (CUT_SHORT if thought is not None or answer is not None else "")))
        yield history


CUT_SHORT = "\n\nThe reply above was cut short by this error; what it had streamed is kept."


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
        try:  # a message over the size limit is refused as it arrives (not echoed back)
            ctx.config.check_message(text)
        except PlaygroundError as exc:
            gr.Warning(str(exc))
            yield [*(history or []), error_message(exc)]
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
        try:  # too long: it stays in the box (to shorten), the chat is unchanged
            ctx.config.check_message(text)
        except PlaygroundError as exc:
            gr.Warning(str(exc))
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


# -- not losing anything: the browser keeps the chat; export / import ---------------------
def restore(saved: Any) -> History:
    """The chat kept in the browser, as the page (re)opens. A reply that was still streaming
    when the page went away is kept and marked "Interrupted"."""
    try:
        history = chat_io.normalise(saved or [])
    except PlaygroundError:  # unreadable storage (another version): start empty rather than fail
        return []
    return mark_interrupted(history)


def mark_interrupted(history: History) -> History:
    if not history:
        return history
    last = history[-1]
    metadata = last.get("metadata") or {}
    # a finished reply ends with a note (stats, error, "Stopped"); a bare answer, a reasoning
    # panel or the user's message means the page went away mid-reply
    if last["role"] == "user" or not metadata.get("title") or str(metadata["title"]).startswith("Thought"):
        history.append(info_message(INTERRUPTED_TITLE, INTERRUPTED_NOTE))
    return history


def export_chat(history: History, model: str = "") -> tuple[gr.File, gr.File]:
    """The chat as a JSON file and a Markdown file (the Markdown imports back too)."""
    if not history:
        raise gr.Error("Nothing to export yet: the chat is empty.")
    folder = Path(tempfile.mkdtemp(prefix="qwen3-chat-"))
    stamp = time.strftime("%Y-%m-%dT%H-%M-%S")
    json_path, md_path = folder / f"chat-{stamp}.json", folder / f"chat-{stamp}.md"
    try:
        json_path.write_text(chat_io.to_json(history, model or None), encoding="utf-8")
        md_path.write_text(chat_io.to_markdown(history, model or None), encoding="utf-8")
    except PlaygroundError as exc:
        raise gr.Error(f"Could not export the chat: {exc}") from None
    return gr.File(str(json_path), visible=True), gr.File(str(md_path), visible=True)


def import_chat(path: str | None, history: History = None) -> History:
    """Replace the chat with an exported one (JSON or Markdown). A file that is not a chat
    (invalid UTF-8, malformed JSON...) is refused with the reason; the current chat stays."""
    if not path:
        raise gr.Error("Choose a chat file (.json or .md) to import.")
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise gr.Error(f"Could not read the file: {exc}") from None
    try:
        imported = chat_io.parse(data)
    except PlaygroundError as exc:
        raise gr.Error(f"Could not import {Path(path).name}: {exc}. The current chat is unchanged.") from None
    gr.Info(f"Imported {len(imported)} messages from {Path(path).name}.")
    return imported


def wire_persistence(demo: gr.Blocks, chat: ChatTab, model: gr.components.Component) -> None:
    """Reload keeps the chat (the browser's localStorage), export / import (also
    ``/chat_export`` and ``/chat_import`` in the API)."""
    # the page (re)opens: the kept chat goes through ``restore`` (checked, a cut reply marked);
    # only then does saving start, so the empty chat of a fresh page never overwrites it
    demo.load(restore, [chat.chatbot], [chat.chatbot], js=READ_JS, queue=False, api_visibility="private",
              show_progress="hidden").then(None, None, None, js=RESTORED_JS, queue=False,
                                           api_visibility="private", show_progress="hidden")
    chat.chatbot.change(None, [chat.chatbot], None, js=SAVE_JS, queue=False, api_visibility="private",
                        show_progress="hidden")
    chat.autosave.tick(None, [chat.chatbot], None, js=SAVE_JS, queue=False, api_visibility="private",
                       show_progress="hidden")
    chat.export.click(export_chat, [chat.chatbot, model], [chat.json_file, chat.markdown_file],
                      api_visibility="private", show_progress="hidden")
    chat.import_file.upload(import_chat, [chat.import_file, chat.chatbot], [chat.chatbot],
                            api_visibility="private", show_progress="hidden")
    # the same for API clients, with plain JSON messages (as /chat returns them) and text
    gr.api(chat_export_api, api_name="chat_export")
    gr.api(chat_import_api, api_name="chat_import")


def chat_export_api(history: list[dict], model: str = "", format: str = "json") -> str:
    """The chat (OpenAI-style messages, as /chat returns them) as the text of an export file:
    format "json" or "markdown" (a Markdown export imports back too)."""
    if not history:
        raise gr.Error("Nothing to export yet: the chat is empty.")
    if format not in ("json", "markdown"):
        raise gr.Error(f"format must be 'json' or 'markdown', got {format!r}")
    try:
        if format == "json":
            return chat_io.to_json(history, model or None)
        return chat_io.to_markdown(history, model or None)
    except PlaygroundError as exc:
        raise gr.Error(f"Could not export the chat: {exc}") from None


def chat_import_api(data: str, history: list[dict] | None = None) -> list[dict]:
    """The messages of an export file: ``data`` is the file's text, or its raw bytes as a data
    URL (``data:application/octet-stream;base64,...``). A file that is not a chat raises an
    error that says why (the caller's current ``history`` is returned by nothing: keep it)."""
    raw: bytes | str = data or ""
    if isinstance(raw, str) and raw.startswith("data:") and ";base64," in raw[:200]:
        try:
            raw = base64.b64decode(raw.split(",", 1)[1], validate=True)
        except (binascii.Error, ValueError):
            raise gr.Error("Could not import the chat: the data URL is not valid base64. "
                           "The current chat is unchanged.") from None
    try:
        return chat_io.parse(raw)
    except PlaygroundError as exc:
        raise gr.Error(f"Could not import the chat: {exc}. The current chat is unchanged.") from None
