"""Edit, Regenerate and the alternatives they leave behind (``core.branches``), in the chat.

The chat shows one path; the alternatives not shown are data in a hidden JSON component beside
it (kept in the browser with the chat, exported and imported with it). Under the chat, a bar
steps through the alternatives of a fork on the path: "◀ 2 / 3 ▶", for the fork chosen in its
list (the last one by default, or the one of the message clicked in the chat).

Gradio's Chatbot shows a message's own option buttons only on the last message, so the arrows
live in this bar rather than on each forked message.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from core import chat_io
from core.branches import Branches, ForkView
from core.errors import PlaygroundError
from core.messages import content_text, field, plain_history
from playground import Playground
from playground.tools.approval import LiveReplies
from ui.formatting import split_last_turn, user_message

History = list[Any]
PREVIEW_CHARS = 40


@dataclass
class BranchBar:
    data: gr.JSON  # the alternatives not shown (Branches.to_data), hidden
    row: gr.Row
    fork: gr.Dropdown  # which fork on the path the arrows step through (its message index)
    previous: gr.Button
    position: gr.Markdown  # "2 / 3"
    next: gr.Button


def build_branch_bar() -> BranchBar:
    data = gr.JSON({}, visible="hidden", elem_id="chat-branches")
    with gr.Row(visible=False, elem_id="branch-bar", equal_height=False) as row:
        fork = gr.Dropdown([], label="Alternatives of", show_label=False, container=False, scale=4,
                           elem_id="branch-fork", interactive=True,
                           allow_custom_value=True)  # set to a new fork before the bar lists it
        previous = gr.Button("◀", size="sm", scale=0, min_width=44, elem_id="branch-previous")
        position = gr.Markdown("", elem_id="branch-position", container=False, min_height=0)
        next_ = gr.Button("▶", size="sm", scale=0, min_width=44, elem_id="branch-next")
    return BranchBar(data, row, fork, previous, position, next_)


def _branches(data: Any) -> Branches:
    try:
        return Branches.from_data(data, chat_io.normalise)
    except PlaygroundError:  # damaged (an older page, a hand-edited storage): start without alternatives
        return Branches()


def _label(path: History, view: ForkView) -> str:
    """"your message 2 “Why is…”" for an edit's fork, "the reply to your message 2 …" for a Regenerate's."""
    users = [i for i, m in enumerate(path[:view.at + 1]) if field(m, "role") == "user"]
    number = len(users)
    text = " ".join(content_text(field(path[users[-1]], "content")).split()) if users else ""
    preview = text[:PREVIEW_CHARS] + ("…" if len(text) > PREVIEW_CHARS else "")
    what = f"your message {number}" if view.edited else f"the reply to your message {number}"
    return f"Alternatives of {what} “{preview}”"


def bar_view(path: History, data: Any, chosen: Any = None) -> tuple[Any, Any, Any, Any, Any]:
    """The bar for ``path``: hidden without forks; else the forks on the path (``chosen`` kept
    when it still is one, else the last) and the chosen one's position."""
    forks = _branches(data).forks_on(path or [])
    if not forks:
        return (gr.Row(visible=False), gr.Dropdown(choices=[], value=None), "", gr.Button(interactive=False),
                gr.Button(interactive=False))
    by_at = {view.at: view for view in forks}
    current = by_at.get(chosen if isinstance(chosen, int) else -1, forks[-1])
    choices = [(_label(path, view), view.at) for view in forks]
    return (gr.Row(visible=True), gr.Dropdown(choices=choices, value=current.at),
            f"**{current.active + 1} / {current.count}**", gr.Button(interactive=current.active > 0),
            gr.Button(interactive=current.active < current.count - 1))


def make_branch_handlers(playground: Playground, live: LiveReplies | None = None) -> dict[str, Callable[..., Any]]:
    """The steps the chat's events chain: keep what a Regenerate or an edit replaces (then the
    usual reply streams), step through alternatives, pick a fork by clicking a message.
    ``live``: the replies in progress (the arrows wait for the session's reply to end)."""

    def checked(branches: Branches) -> dict[str, Any]:
        playground.check_branches(branches)
        return branches.to_data()

    def keep_reply(history: History, data: Any, chosen: Any) -> tuple[History, Any, Any]:
        """Regenerate: the last reply (and anything after the user's message) becomes an alternative;
        the chat ends with the user's message, which the reply step then answers. The bar turns
        to this fork. Refused (the alternatives' size limit): an error, which ends the chain
        before the reply step, so the reply stays."""
        history = list(history or [])
        before, last = split_last_turn(history)
        if last is None:
            return history, data, chosen
        at = len(before) + 1
        try:
            kept = checked(_branches(data).keep(history, at)) if at < len(history) else data
        except PlaygroundError as exc:
            raise gr.Error(playground.error_text(exc)) from None
        return history[:at], kept, at

    def edit(history: History, data: Any, chosen: Any, event: gr.EditData) -> tuple[History, Any, Any]:
        """An edited user message: what followed it, with its old text, becomes an alternative;
        the chat ends with the new text, which the reply step then answers. The bar turns to
        this fork."""
        history = list(history or [])
        index = event.index if isinstance(event.index, int) else -1
        if not 0 <= index < len(history) or field(history[index], "role") != "user":
            gr.Warning("Only your own messages can be edited.")
            return _unedited(history, index, event), data, chosen
        try:
            text = content_text(event.value)
            old = content_text(event.previous_value)
            playground.config.check_message(text)
            if not text.strip():
                raise PlaygroundError("an empty message cannot be sent: type something, or leave it as it was")
            before = plain_history(history)
            before[index]["content"] = old
            kept = checked(_branches(data).keep(before, index))
        except PlaygroundError as exc:
            gr.Warning(playground.error_text(exc))
            return _unedited(history, index, event), data, chosen
        return [*history[:index], user_message(text)], kept, index

    def step(history: History, data: Any, at: Any, delta: int, request: gr.Request | None) -> tuple[History, Any]:
        history = list(history or [])
        if live is not None and request is not None and live.get(request.session_hash) is not None:
            gr.Warning("A reply is still streaming: wait for it to end (or Stop it), then switch.")
            return history, data
        branches = _branches(data)
        view = next((v for v in branches.forks_on(history) if v.at == at), None)
        if view is None:
            gr.Warning("There are no alternatives there any more.")
            return history, data
        to = min(max(view.active + delta, 0), view.count - 1)
        try:
            playground.check_branches(branches)  # the page sent them: the same limit as when they were kept
            path, branches = branches.switch(history, view.at, to)
        except PlaygroundError as exc:
            gr.Warning(playground.error_text(exc))
            return history, data
        return path, branches.to_data()

    def previous(history: History, data: Any, at: Any, request: gr.Request = None) -> tuple[History, Any]:
        return step(history, data, at, -1, request)

    def next_(history: History, data: Any, at: Any, request: gr.Request = None) -> tuple[History, Any]:
        return step(history, data, at, +1, request)

    def pick(history: History, data: Any, event: gr.SelectData) -> Any:
        """A message clicked in the chat: the bar turns to the fork of its turn (a user message:
        its edit's, else its reply's; a reply's message: the reply's)."""
        history = list(history or [])
        index = event.index if isinstance(event.index, int) else -1
        if not 0 <= index < len(history):
            return gr.Dropdown()
        users = [i for i, m in enumerate(history) if field(m, "role") == "user"]
        start = max((i for i in users if i <= index), default=0)
        end = min((i for i in users if i > start), default=len(history) + 1)
        forks = [v.at for v in _branches(data).forks_on(history) if start <= v.at < end]
        if field(history[index], "role") != "user":
            forks = [at for at in forks if at <= index] or forks
            forks = forks[-1:]
        return gr.Dropdown(value=forks[0]) if forks else gr.Dropdown()

    return {"keep_reply": keep_reply, "edit": edit, "previous": previous, "next": next_, "pick": pick}


def _unedited(history: History, index: int, event: Any) -> History:
    """The chat as it was before a refused edit (the browser already shows the new text)."""
    if 0 <= index < len(history):
        history[index] = {**plain_history([history[index]])[0], "content": content_text(event.previous_value)}
    return history


def wire_branches(bar: BranchBar, chatbot: gr.Chatbot, handlers: dict[str, Callable[..., Any]],
                  replies: list[Any]) -> list[Any]:
    """The bar's own events, and its update at the end of each reply (``replies``); returns the
    steps that change the chat (for the final save)."""
    view_outputs = [bar.row, bar.fork, bar.position, bar.previous, bar.next]
    for reply in replies:
        reply.then(bar_view, [chatbot, bar.data, bar.fork], view_outputs, queue=False, api_visibility="private",
                   show_progress="hidden")
    steps = []
    for button, name in ((bar.previous, "previous"), (bar.next, "next")):
        steps.append(button.click(handlers[name], [chatbot, bar.data, bar.fork], [chatbot, bar.data],
                                  queue=False, api_visibility="private", show_progress="hidden"))
    # the bar follows the alternatives and the chosen fork (a switch, an edit, Clear, a reload, an import)
    bar.data.change(bar_view, [chatbot, bar.data, bar.fork], view_outputs, queue=False, api_visibility="private",
                    show_progress="hidden")
    bar.fork.input(bar_view, [chatbot, bar.data, bar.fork], view_outputs, queue=False, api_visibility="private",
                   show_progress="hidden")
    chatbot.select(handlers["pick"], [chatbot, bar.data], [bar.fork], queue=False, api_visibility="private",
                   show_progress="hidden").then(
        bar_view, [chatbot, bar.data, bar.fork], view_outputs, queue=False, api_visibility="private",
        show_progress="hidden")
    return steps
