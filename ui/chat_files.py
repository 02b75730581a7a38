"""Not losing a chat: the browser keeps it (localStorage) across reloads; export and import.

Also the ``/chat_export`` and ``/chat_import`` API endpoints, with plain JSON messages.
"""
from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from core import chat_io
from core.branches import Branches
from core.errors import PlaygroundError
from core.values import check_depth, strict_text
from playground import Playground
from playground.exports import ExportFolder
from ui.formatting import close_reply

History = list[Any]

# The chat kept in the browser's localStorage, as the JSON of the chat's messages, under one key
# per site: it survives a reload and a restart of the server, and never leaves the user's browser
# except in that user's own requests. (Gradio's BrowserState is not used: its change events miss
# the streamed updates of a reply, and a chat's initial empty value can overwrite the stored
# chat before it is read back.) A timer copies the chat while a reply streams: the browser
# itself does it, no request reaches the server; a copy is written only when the chat changed.
# Change events are not enough for a reply's end (a reload right after it lost the final update):
# every event that ends a reply (or changes the chat: Stop, Clear, Import) ends with a final save,
# and only then does the page say so: ``SAVED_ATTRIBUTE`` on <body> counts the final saves.
STORAGE_KEY = "qwen3-playground-chat"
BRANCHES_KEY = "qwen3-playground-chat-branches"  # the alternatives not shown (core.branches), beside it
AUTOSAVE_S = 1.0
SAVED_ATTRIBUTE = "data-chat-saved"  # on <body>: final saves so far (the chat is in localStorage)


def _save_js(final: bool) -> str:
    """The browser-side save of the chat; ``final``: always write, then count it in ``SAVED_ATTRIBUTE``."""
    changed = "true" if final else "text !== window.__qwen3ChatSaved"
    counted = (f"document.body.setAttribute(\"{SAVED_ATTRIBUTE}\", "
               f"String(Number(document.body.getAttribute(\"{SAVED_ATTRIBUTE}\") || 0) + 1));") if final else ""
    return f"""(history, branches) => {{
  if (window.__qwen3ChatRestored) {{
    const text = JSON.stringify(history ?? []);
    const kept = JSON.stringify(branches ?? {{}});
    if ({changed} || kept !== window.__qwen3BranchesSaved) {{
      try {{
        localStorage.setItem("{STORAGE_KEY}", text); window.__qwen3ChatSaved = text;
        localStorage.setItem("{BRANCHES_KEY}", kept); window.__qwen3BranchesSaved = kept; {counted}
      }}
      catch (error) {{ console.error("could not keep the chat in localStorage", error); }}
    }}
  }}
  return [];
}}"""


SAVE_JS = _save_js(final=False)  # on change and on the timer, while a reply streams
SAVE_FINAL_JS = _save_js(final=True)  # at the end of every reply: the chat as it ended
READ_JS = f"""(history, branches) => {{
  let saved = [], kept = {{}};
  try {{ saved = JSON.parse(localStorage.getItem("{STORAGE_KEY}") || "[]"); }}
  catch (error) {{ console.error("the chat kept in localStorage is unreadable", error); }}
  try {{ kept = JSON.parse(localStorage.getItem("{BRANCHES_KEY}") || "{{}}"); }}
  catch (error) {{ console.error("the chat's alternatives kept in localStorage are unreadable", error); }}
  return [saved, kept];
}}"""
RESTORED_JS = "() => { window.__qwen3ChatRestored = true; return []; }"


def restore(saved: Any, kept: Any = None) -> tuple[History, dict[str, Any]]:
    """The chat kept in the browser and its alternatives, as the page (re)opens. A reply that
    was still streaming when the page went away is kept and marked "Interrupted"."""
    try:
        history = chat_io.normalise(saved or [])
    except PlaygroundError:  # unreadable storage (another version): start empty rather than fail
        return [], {}
    try:
        branches = Branches.from_data(kept, chat_io.normalise)
    except PlaygroundError:  # the alternatives alone are lost, not the chat
        branches = Branches()
    return close_reply(history, "interrupted"), branches.to_data()


def export_chat(history: History, model: str = "", exports: ExportFolder | None = None,
                kept: Any = None) -> tuple[gr.File, gr.File]:
    """The chat as a JSON file and a Markdown file (the Markdown imports back too), written to
    ``exports`` (the app's bounded export folder; None: a folder of their own, outside an app);
    ``kept``: its alternatives (``core.branches``), in both files' data."""
    if not history:
        raise gr.Error("Nothing to export yet: the chat is empty.")
    stamp = time.strftime("%Y-%m-%dT%H-%M-%S")
    try:
        branches = Branches.from_data(kept, chat_io.normalise)
        texts = {f"chat-{stamp}.json": chat_io.to_json(history, model or None, branches),
                 f"chat-{stamp}.md": chat_io.to_markdown(history, model or None, branches)}
    except PlaygroundError as exc:
        raise gr.Error(f"Could not export the chat: {exc}") from None
    json_path, md_path = (exports or ExportFolder()).write(texts)
    return gr.File(str(json_path), visible=True), gr.File(str(md_path), visible=True)


def import_chat(path: str | None, history: History = None, playground: Playground | None = None
                ) -> tuple[History, dict[str, Any]]:
    """Replace the chat with an exported one (JSON or Markdown) and its alternatives. A file that
    is not a chat (invalid UTF-8, malformed JSON...), or over ``playground``'s size limits
    (``Playground.read_chat_tree``), is refused with the reason; the current chat stays."""
    if not path:
        raise gr.Error("Choose a chat file (.json or .md) to import.")
    name = Path(path).name
    try:
        if playground is not None:
            playground.config.check_upload(Path(path).stat().st_size, "the chat file")  # unread
        data = Path(path).read_bytes()
        imported, branches = playground.read_chat_tree(data) if playground is not None else chat_io.parse_tree(data)
    except OSError:
        raise gr.Error(f"Could not read {name}. The current chat is unchanged.") from None
    except PlaygroundError as exc:
        reason = playground.error_text(exc) if playground is not None else str(exc)
        raise gr.Error(f"Could not import {name}: {reason}. The current chat is unchanged.") from None
    forks = len(branches.forks)
    gr.Info(f"Imported {len(imported)} messages from {name}" + (f", with alternatives at {forks} places." if forks else "."))
    return imported, branches.to_data()


def wire_persistence(demo: gr.Blocks, chat: Any, model: gr.components.Component, ends: Sequence[Any] = (),
                     playground: Playground | None = None) -> None:
    """Reload keeps the chat (the browser's localStorage), export / import (also
    ``/chat_export`` and ``/chat_import`` in the API). ``ends``: the events (``Dependency``)
    that end a reply or change the chat (send, Regenerate, Stop, Clear...): each is followed by
    a final save, whatever its outcome (``.then``), which the page then counts (``SAVED_ATTRIBUTE``)."""
    # the page (re)opens: the kept chat goes through ``restore`` (checked, a cut reply marked);
    # only then does saving start, so the empty chat of a fresh page never overwrites it
    kept = chat.branches.data  # the alternatives not shown: saved, exported and imported with the chat
    demo.load(restore, [chat.chatbot, kept], [chat.chatbot, kept], js=READ_JS, queue=False, api_visibility="private",
              show_progress="hidden").then(None, None, None, js=RESTORED_JS, queue=False,
                                           api_visibility="private", show_progress="hidden")
    chat.chatbot.change(None, [chat.chatbot, kept], None, js=SAVE_JS, queue=False, api_visibility="private",
                        show_progress="hidden")
    chat.autosave.tick(None, [chat.chatbot, kept], None, js=SAVE_JS, queue=False, api_visibility="private",
                       show_progress="hidden")
    playground = playground or Playground()

    def export_ui(history: History, model: str = "", branches: Any = None) -> tuple[gr.File, gr.File]:
        return export_chat(history, model, playground.exports, branches)

    def import_ui(path: str | None, history: History = None) -> tuple[History, dict[str, Any]]:
        return import_chat(path, history, playground)

    chat.export.click(export_ui, [chat.chatbot, model, kept], [chat.json_file, chat.markdown_file],
                      api_visibility="private", show_progress="hidden")
    imported = chat.import_file.upload(import_ui, [chat.import_file, chat.chatbot], [chat.chatbot, kept],
                                       api_visibility="private", show_progress="hidden")
    for end in (*ends, imported):
        end.then(None, [chat.chatbot, kept], None, js=SAVE_FINAL_JS, queue=False, api_visibility="private",
                 show_progress="hidden")
    # the same for API clients, with plain JSON messages (as /chat returns them) and text
    chat_export_api, chat_import_api, chat_import_tree_api = make_file_api(playground)
    gr.api(chat_export_api, api_name="chat_export")
    gr.api(chat_import_api, api_name="chat_import")
    gr.api(chat_import_tree_api, api_name="chat_import_tree")


def make_file_api(playground: Playground):
    """The ``/chat_export`` and ``/chat_import`` endpoints, under ``playground``'s size limits."""

    def chat_export(history: list[dict], model: str = "", format: str = "json", branches: dict | None = None) -> str:
        """The chat (OpenAI-style messages, as /chat returns them) as the text of an export file:
        format "json" or "markdown" (a Markdown export imports back too). ``branches``: the
        alternatives not shown, as /chat_import_tree gives them ({"version": 1, "forks": ...})."""
        if not history:
            raise gr.Error("Nothing to export yet: the chat is empty.")
        if format not in ("json", "markdown"):
            raise gr.Error(f"format must be 'json' or 'markdown', got {str(format)[:40]!r}")
        try:
            check_depth(history, "history")
            check_depth(branches, "branches")
            kept = Branches.from_data(branches, chat_io.normalise)
            playground.check_branches(kept)
            text = chat_io.to_json(history, model or None, kept) if format == "json" else \
                chat_io.to_markdown(history, model or None, kept)
            playground.config.check_upload(len(text.encode("utf-8")), "the export")  # it must import back
            return text
        except PlaygroundError as exc:
            raise gr.Error(f"Could not export the chat: {playground.error_text(exc)}") from None

    def chat_import(data: str, history: list[dict] | None = None) -> list[dict]:
        """The messages of an export file: ``data`` is the file's text, or its raw bytes as a data
        URL (``data:application/octet-stream;base64,...``). A file that is not a chat raises an
        error that says why (the caller's current ``history`` is returned by nothing: keep it)."""
        return chat_import_tree(data, history)["messages"]

    def chat_import_tree(data: str, history: list[dict] | None = None) -> dict:
        """As /chat_import, with the alternatives the file keeps: {"messages": [...], "branches":
        {"version": 1, "forks": {...}}} (no forks in a chat without any)."""
        try:
            raw: bytes | str = strict_text(data, "data")
            playground.config.check_upload(len(raw.encode("utf-8", "surrogatepass")), "the chat file")
        except PlaygroundError as exc:
            raise gr.Error(f"Could not import the chat: {playground.error_text(exc)}. "
                           "The current chat is unchanged.") from None
        if raw.startswith("data:") and ";base64," in raw[:200]:
            try:
                raw = base64.b64decode(raw.split(",", 1)[1], validate=True)
            except (binascii.Error, ValueError):
                raise gr.Error("Could not import the chat: the data URL is not valid base64. "
                               "The current chat is unchanged.") from None
        try:
            messages, branches = playground.read_chat_tree(raw)
        except PlaygroundError as exc:
            raise gr.Error(f"Could not import the chat: {playground.error_text(exc)}. "
                           "The current chat is unchanged.") from None
        return {"messages": messages, "branches": branches.to_data()}

    return chat_export, chat_import, chat_import_tree
