"""Not losing a chat: the browser keeps it (localStorage) across reloads; export and import.

Also the ``/chat_export`` and ``/chat_import`` API endpoints, with plain JSON messages.
"""
from __future__ import annotations

import base64
import binascii
import tempfile
import time
from pathlib import Path
from typing import Any

import gradio as gr

from core import chat_io
from core.errors import PlaygroundError
from ui.formatting import close_reply

History = list[Any]

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


def restore(saved: Any) -> History:
    """The chat kept in the browser, as the page (re)opens. A reply that was still streaming
    when the page went away is kept and marked "Interrupted"."""
    try:
        history = chat_io.normalise(saved or [])
    except PlaygroundError:  # unreadable storage (another version): start empty rather than fail
        return []
    return close_reply(history, "interrupted")


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


def wire_persistence(demo: gr.Blocks, chat: Any, model: gr.components.Component) -> None:
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
