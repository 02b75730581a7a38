"""The chat: streaming replies with a reasoning panel, Stop, Regenerate, Clear.

The handlers only turn the playground's events into chat messages: the request is built and
checked once by :meth:`Playground.request`, the reply streams from :meth:`Playground.chat`, and
closing it (Stop: Gradio closes this generator) stops the computation.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import gradio as gr

from core import chat_io
from core.chat import latest_soft_switch
from core.continuation import Continuation, continuation_of
from core.errors import PlaygroundError
from core.messages import content_text, field, new_reply_id
from core.settings import SCHEMA
from playground import ModelReady, Playground
from playground.service import LOOP_RETRY_PRESENCE_PENALTY
from playground.tools.approval import LiveReplies, ReplyControl
from playground.tools.selection import ToolSelection
from ui.api import param, visitor_of, with_settings
from ui.branches_view import BranchBar, build_branch_bar
from ui.chat_files import AUTOSAVE_S
from ui.formatting import (CUT_SHORT, RUN, SKIP, close_reply, error_message, made_with_line, repeating_message,
                           split_last_turn, stats_details, stats_message, user_message)
from ui.progress import gradio_progress
from ui.reply_view import ReplyView

History = list[Any]
SETTING_NAMES = tuple(spec.name for spec in SCHEMA)


@dataclass
class ChatTab:
    chatbot: gr.Chatbot
    message: gr.Textbox
    send: gr.Button
    stop: gr.Button
    regenerate: gr.Button
    continue_: gr.Button  # a reply cut short goes on where it ended (core.continuation)
    retry_loop: gr.Button  # regenerate with the card's advice against loops (presence_penalty 1.5)
    loop_guard: gr.Checkbox  # stop a reply that repeats itself (on by default)
    clear: gr.Button
    export: gr.Button
    import_file: gr.UploadButton
    json_file: gr.File
    markdown_file: gr.File
    autosave: gr.Timer  # copies the chat into the browser's localStorage (no server round trip)
    branches: BranchBar  # the alternatives an edit or a Regenerate left, and the bar to step through them


def build_chat_tab() -> ChatTab:
    chatbot = gr.Chatbot(label="Chat", height=560, elem_id="chatbot", buttons=["copy", "copy_all"], editable="user",
                         placeholder="Ask something. With **Thinking** on, the reasoning streams into a "
                                     "panel above the answer. Edit any of your messages to try it again: "
                                     "the first try is kept as an alternative.")
    branches = build_branch_bar()
    with gr.Row():
        message = gr.Textbox(label="message", show_label=False, scale=5, elem_id="message", autofocus=True, lines=1,
                             placeholder="Type a message and press Enter (end it with /think or /no_think "
                                         "to switch thinking per message)")
        send = gr.Button("Send", variant="primary", scale=1, min_width=80, elem_id="send")
        stop = gr.Button("Stop", variant="stop", scale=1, min_width=80, elem_id="stop")
    with gr.Row():
        regenerate = gr.Button("Regenerate", size="sm", elem_id="regenerate")
        continue_ = gr.Button("Continue", size="sm", elem_id="continue")
        retry_loop = gr.Button(f"Retry with presence penalty {LOOP_RETRY_PRESENCE_PENALTY:g}", size="sm",
                               elem_id="retry-loop")
        clear = gr.Button("Clear", size="sm", elem_id="clear")
        export = gr.Button("Export chat", size="sm", elem_id="export-chat")
        import_file = gr.UploadButton("Import chat", size="sm", file_types=[".json", ".md"], file_count="single",
                                      type="filepath", elem_id="import-chat")
        loop_guard = gr.Checkbox(True, label="Loop guard", elem_id="loop-guard", min_width=120,
                                 info="stop a reply that repeats itself")
    with gr.Row():
        json_file = gr.File(label="Chat (JSON)", visible=False, interactive=False, elem_id="chat-json")
        markdown_file = gr.File(label="Chat (Markdown)", visible=False, interactive=False, elem_id="chat-markdown")
    autosave = gr.Timer(AUTOSAVE_S)
    return ChatTab(chatbot, message, send, stop, regenerate, continue_, retry_loop, loop_guard, clear, export,
                   import_file, json_file, markdown_file, autosave, branches)


def stream_reply(playground: Playground, history: History, system_prompt: str, thinking: bool,
                 settings: Mapping[str, Any], model: str, yarn_factor: float, progress: Any = None,
                 tools: Any = None, control: ReplyControl | None = None, visitor: str | None = None,
                 can_ask: bool = True, loop_guard: bool = True,
                 continuation: Continuation | None = None) -> Iterator[History]:
    """Stream the assistant's turn for ``history`` (which ends with the user's message).

    Yields the whole history after each change (see ``ui.reply_view``), then the stats note.
    ``tools``: the chat's ``ToolSelection`` (or its JSON data); ``control``: Stop and the
    Run / Skip decisions of "ask before each call" (``can_ask`` False, as in an API call where
    nobody can press them: calls run). The request is checked before any model
    loads. A failure becomes an error note; everything before it (a partial reply too) is kept,
    and the note says the reply was cut short. ``loop_guard``: a reply that repeats itself is
    stopped and ends with a "Stopped: repeating" note (``repeating_message``) instead of the figures.
    ``continuation``: the last reply of ``history``, cut short, goes on where it ended instead
    (``history`` is then ``continuation.kept``; its reasoning panel and answer grow).
    """
    reply_id = continuation.reply_id if continuation else new_reply_id()
    view = ReplyView(history, reply_id)
    ready = None
    control = control or ReplyControl()
    try:
        selection = ToolSelection.from_value(tools)
        if continuation is not None:  # in the mode it was written in; no tools: it called none
            thinking = thinking if continuation.thinking is None else continuation.thinking
            view.resume(continuation.reasoning, continuation.answer)
            request = playground.request(continuation.prompt, model=model, yarn_factor=yarn_factor,
                                         settings=settings, thinking=thinking, system_prompt=system_prompt,
                                         loop_guard=loop_guard, continue_from=continuation.markup)
        else:
            request = playground.request(history, model=model, yarn_factor=yarn_factor, settings=settings,
                                         thinking=thinking, system_prompt=system_prompt,
                                         toolbox=playground.toolbox_for(selection, visitor), loop_guard=loop_guard)
        view.thinking_budget = request.settings.thinking_budget if request.thinking else 0
        approve = control.wait if selection.approve_each and can_ask else None
        events = playground.chat(request, gradio_progress(progress) if progress else None, control.stop, approve)
        with closing(events):
            for event in events:
                if isinstance(event, ModelReady):
                    ready = event
                    view.restart_clock()
                    continue
                if view.add(event):
                    yield history
        view.close()
        summary = ready.info.summary() if ready else model
        details = stats_details(view.reply.stats, summary, request.settings.seed)
        budget_note = thinking_budget_note(request, view.reply, playground.applies_thinking_budget(request.spec))
        details += f"\n\n{budget_note}" if budget_note else ""
        details += CONTINUED_NOTE if continuation is not None else ""
        if view.reply.loop is not None:
            history.append(repeating_message(view.reply.loop, view.reply.stats, details, reply_id,
                                             request.settings.presence_penalty))
        else:
            made_with = made_with_line(request.spec.name, request.thinking, request.settings)
            history.append(stats_message(view.reply.stats, details, reply_id, made_with,
                                         budget_cut=view.reply.budget_reached is not None))
        yield history
    except Exception as exc:  # PlaygroundError: said plainly; anything else: a bug or a lost GPU slot
        shown = view.shown_any
        if shown:
            view.close()
        message = playground.error_text(exc)
        gr.Warning(message)
        history.append(error_message(message + (CUT_SHORT if shown else ""), reply_id))
        yield history


CONTINUED_NOTE = ("\n\nContinued: the model went on from where the reply had been cut; "
                  "the figures are the continuation's")


def thinking_budget_note(request: Any, reply: Any, applied: bool) -> str:
    """What the thinking budget did to this reply ("" without one); ``applied``: the backend
    can apply one."""
    budget = request.settings.thinking_budget
    if not budget:
        return ""
    if not request.thinking:
        return f"Thinking budget {budget:,} tokens: moot, thinking is off"
    if not applied:
        return (f"Thinking budget {budget:,} tokens: not applied, the {request.spec.backend} backend does not "
                "apply one yet")
    if latest_soft_switch(request.message_list) == "/no_think":
        return f"Thinking budget {budget:,} tokens: moot, the message ends with /no_think"
    if reply.budget_reached is not None and reply.budget_reached.by_server:
        return f"Thinking budget {budget:,} tokens: reached; the server ended the reasoning"
    if reply.budget_reached is not None:
        return f"Thinking budget {budget:,} tokens: reached; the reasoning's last sentence was inserted"
    return f"Thinking budget {budget:,} tokens: not reached"


def make_chat_handlers(playground: Playground, live: LiveReplies):
    """The API's endpoints and the UI's steps (``ChatHandlers``); ``live``: the replies in
    progress (Stop and Run / Skip reach them by session)."""

    def answer(history: History, system_prompt: str, thinking: bool, settings: Mapping[str, Any], model: str,
               yarn_factor: float, tools: Any, request: gr.Request | None, progress: Any = None,
               api: bool = False, loop_guard: bool = True, resume: bool = False) -> Iterator[History]:
        """Answer the user message that ends ``history``; a history ending otherwise is left as is.
        ``resume``: continue the last reply instead, cut short (``core.continuation``)."""
        history = list(history or [])
        continuation = None
        if resume:
            try:
                continuation = continuation_of(history)
            except PlaygroundError as exc:
                gr.Warning(f"Nothing to continue: {exc}.")
                yield history
                return
            history = continuation.kept
        elif not history or field(history[-1], "role") != "user":
            yield history
            return
        session = None if api or request is None else request.session_hash
        with live.start(session) as control:
            yield from stream_reply(playground, history, system_prompt, thinking, settings, model, yarn_factor,
                                    progress, tools, control, visitor_of(playground, request), can_ask=not api,
                                    loop_guard=loop_guard, continuation=continuation)

    def incoming(history: list[dict] | None) -> History:
        """An API client's history, checked and in today's shape (an older export's notes get ids)."""
        try:
            return chat_io.normalise(history or [])
        except PlaygroundError as exc:
            raise gr.Error(f"history: {exc}") from None

    # -- the API: stateless, the session's model is a parameter ----------------------------
    def chat(message: str, history: list[dict] | None, system_prompt: str, thinking: bool,
             settings: dict[str, Any], model: str, yarn_factor: float, tools: dict | None = None,
             loop_guard: bool = True, request: gr.Request | None = None) -> Iterator[list[dict]]:
        try:
            text = content_text(message)
        except PlaygroundError as exc:
            raise gr.Error(f"message: {exc}") from None
        history = incoming(history)
        if not text.strip():
            gr.Warning("Type a message first.")
            yield history
            return
        try:  # a message over the size limit is refused as it arrives (not echoed back)
            playground.config.check_message(text)
        except PlaygroundError as exc:
            gr.Warning(str(exc))
            yield [*history, error_message(exc, new_reply_id())]
            return
        history = [*history, user_message(text)]
        try:  # the whole conversation too, before the first update echoes it
            playground.check_conversation(history, system_prompt)
        except PlaygroundError as exc:
            gr.Warning(playground.error_text(exc))
            yield [*history, error_message(playground.error_text(exc), new_reply_id())]
            return
        yield history
        yield from answer(history, system_prompt, thinking, settings, model, yarn_factor, tools, request, api=True,
                          loop_guard=loop_guard)

    def regenerate(history: list[dict] | None, system_prompt: str, thinking: bool, settings: dict[str, Any],
                   model: str, yarn_factor: float, tools: dict | None = None, loop_guard: bool = True,
                   request: gr.Request | None = None) -> Iterator[list[dict]]:
        before, last = split_last_turn(incoming(history))
        if last is None:
            gr.Warning("Nothing to regenerate yet.")
            yield list(history or [])
            return
        yield from answer([*before, user_message(content_text(last))], system_prompt, thinking, settings, model,
                          yarn_factor, tools, request, api=True, loop_guard=loop_guard)

    def continue_reply(history: list[dict] | None, system_prompt: str, thinking: bool, settings: dict[str, Any],
                       model: str, yarn_factor: float, tools: dict | None = None, loop_guard: bool = True,
                       request: gr.Request | None = None) -> Iterator[list[dict]]:
        yield from answer(incoming(history), system_prompt, thinking, settings, model, yarn_factor, tools, request,
                          api=True, loop_guard=loop_guard, resume=True)

    def chat_json(message: str, history: list[dict] | None, system_prompt: str, thinking: bool,
                  settings: dict[str, Any], model: str, yarn_factor: float, tools: dict | None = None,
                  loop_guard: bool = True, request: gr.Request | None = None) -> dict:
        try:
            playground.config.check_message(content_text(message))
            history = [*incoming(history), user_message(content_text(message))]
            playground.check_conversation(history, system_prompt)  # before the tools' servers start
            toolbox = playground.toolbox_for(tools, visitor_of(playground, request))  # calls run: nobody to ask
            chat_request = playground.request(history, model=model, yarn_factor=yarn_factor, settings=settings,
                                              thinking=thinking, system_prompt=system_prompt, toolbox=toolbox,
                                              loop_guard=loop_guard)
            return playground.reply(chat_request).to_dict()
        except PlaygroundError as exc:
            raise gr.Error(playground.error_text(exc)) from None

    head = [param("history", list[dict] | None, None), param("system_prompt", str, ""),
            param("thinking", bool, True)]
    tail = [param("model", str, playground.start.ref), param("yarn_factor", float, 1.0),
            param("tools", dict | None, None), param("loop_guard", bool, True), param("request", gr.Request, None)]
    message = [param("message", str)]
    chat_api = with_settings(chat, message + head, tail, list[dict], "chat", CHAT_DOC)
    regenerate_api = with_settings(regenerate, head, tail, list[dict], "regenerate",
                                   "Drop the last reply and answer the last user message again (streams the history).")
    chat_json_api = with_settings(chat_json, message + head, tail, dict, "chat_json", CHAT_JSON_DOC)
    continue_api = with_settings(continue_reply, head, tail, list[dict], "continue_reply", CONTINUE_DOC)

    # -- the UI: the message moves into the chat at once, then the reply streams -----------
    def submit(message: str, history: History) -> tuple[str, History]:
        text = content_text(message)
        if not text.strip():
            return message, list(history or [])
        try:  # too long: it stays in the box (to shorten), the chat is unchanged
            playground.config.check_message(text)
        except PlaygroundError as exc:
            gr.Warning(str(exc))
            return message, list(history or [])
        return "", [*(history or []), user_message(text)]

    # (the request comes first: Gradio passes it only to parameters before ``*rest``)
    def respond(request: gr.Request, history: History, system_prompt: str, thinking: bool, *rest: Any,
                progress=gr.Progress()) -> Iterator[History]:
        *values, model, yarn_factor, tools, loop_guard = rest
        yield from answer(history, system_prompt, thinking, dict(zip(SETTING_NAMES, values)), model, yarn_factor,
                          tools, request, progress, loop_guard=loop_guard)

    def regenerate_ui(request: gr.Request, history: History, system_prompt: str, thinking: bool, *rest: Any,
                      progress=gr.Progress()) -> Iterator[History]:
        before, last = split_last_turn(history)
        if last is None:
            gr.Warning("Nothing to regenerate yet.")
            yield list(history or [])
            return
        *values, model, yarn_factor, tools, loop_guard = rest
        yield from answer([*before, user_message(content_text(last))], system_prompt, thinking,
                          dict(zip(SETTING_NAMES, values)), model, yarn_factor, tools, request, progress,
                          loop_guard=loop_guard)

    def continue_ui(request: gr.Request, history: History, system_prompt: str, thinking: bool, *rest: Any,
                    progress=gr.Progress()) -> Iterator[History]:
        *values, model, yarn_factor, tools, loop_guard = rest
        yield from answer(history, system_prompt, thinking, dict(zip(SETTING_NAMES, values)), model, yarn_factor,
                          tools, request, progress, loop_guard=loop_guard, resume=True)

    def retry_loop_ui(request: gr.Request, history: History, system_prompt: str, thinking: bool, *rest: Any,
                      progress=gr.Progress()) -> Iterator[tuple[History, float]]:
        """Regenerate the last user message with the card's advice against loops (presence_penalty
        1.5, ``Playground.loop_retry_settings``); the presence_penalty slider shows it."""
        *values, model, yarn_factor, tools, loop_guard = rest
        settings = dict(zip(SETTING_NAMES, values))
        penalty = LOOP_RETRY_PRESENCE_PENALTY
        settings["presence_penalty"] = penalty
        for step in regenerate_ui(request, history, system_prompt, thinking,
                                  *[settings[name] for name in SETTING_NAMES], model, yarn_factor, tools, loop_guard,
                                  progress=progress):
            yield step, penalty

    return ChatHandlers(chat_api, regenerate_api, chat_json_api, continue_api, submit, respond, regenerate_ui,
                        retry_loop_ui, continue_ui)


@dataclass
class ChatHandlers:
    """The API's endpoints (stateless, plain JSON messages) and the UI's steps."""

    chat: Any
    regenerate: Any
    chat_json: Any
    continue_reply: Any
    submit: Any
    respond: Any
    regenerate_ui: Any
    retry_loop_ui: Any
    continue_ui: Any


CHAT_DOC = """Send `message` after `history` (OpenAI-style messages); streams the updated history.

A reply is a reasoning message (metadata.title "Thinking…" while it streams, then "Thought for
N s" with metadata.duration) when the model thinks, the answer message, then a note with the
figures. metadata.id says what each assistant message is ("reasoning:…", "answer:…", "stats:…",
"error:…", "stopped:…", "repeating:…"); only answers go back to the model. A generation setting left out (None)
is the card's preset value for the model and mode; seed -1 or None = random.

`loop_guard` (default true): a reply that repeats itself (the same span over and over) is stopped,
keeps what it wrote and ends with a "repeating:…" note ("Stopped: repeating") instead of the figures.

`tools` (None: no tools): {"mcp_config": the cards' {"mcpServers": ...} JSON, "enabled": [tool
names] (None: all), "code_interpreter": bool, "max_rounds": 1-64}; a hosted playground offers only
its host's tools (name them in "enabled"). Each call is a "tool_call:<reply>:<call id>" message
and, nested in it (metadata.parent_id), a "tool_result:<reply>:<record>" message whose id ends
with the call as JSON: {"id", "name", "arguments", "result", "error", "round", "duration_s",
"truncated"} (as `app.py chat --json`'s tool_calls); send the history back as it is.
"""
CONTINUE_DOC = """Continue the last reply of `history`, cut short (its last note "stopped:…",
"interrupted:…", "error:…", or figures "stats:<reply>:length" when max_new_tokens ended it): the
model goes on from the text it had written, in the mode it was written in; the reply's reasoning
and answer messages grow and a new figures note ends it (streams the history). A reply that called
tools, or that ended by itself, is left as is with a warning.
"""
CHAT_JSON_DOC = """One whole reply to `message` after `history`, as `app.py chat --json` prints it:
{"backend", "model", "reasoning", "answer", "stats": {prompt_tokens, completion_tokens, ttft_s,
tokens_per_s, total_s, finish_reason, cached_prompt_tokens, reasoning_tokens, load_s, seed},
"info": {...}}, plus "stop_reason" and "error" when the reply was cut short by an error, or
"stop_reason": "repeating" (and stats.stopped_by "loop_guard") when `loop_guard` stopped it. With
`tools` (as for /chat), also "messages" (the exchange in OpenAI's format), "tool_calls" and
"rounds".
"""


def stopped(history: History) -> History:
    """Stop: the generator is closed by Gradio; the reply it cut short is marked stopped."""
    return close_reply(history, "stopped")


def make_reply_controls(live: LiveReplies):
    """(halt, decide): Stop's first step (ends the session's generation, tool call or wait for
    Run / Skip, which closing the generator alone cannot reach), and the Run / Skip options."""

    def halt(request: gr.Request) -> None:
        control = live.get(request.session_hash if request else None)
        if control is not None:
            control.request_stop()

    def decide(event: gr.SelectData, request: gr.Request) -> None:
        action, _, call_id = str(event.value or "").partition(":")
        control = live.get(request.session_hash if request else None)
        if action not in (RUN, SKIP) or control is None or not control.decide(call_id, action == RUN):
            gr.Info("That call is no longer waiting.")

    return halt, decide


def clear() -> tuple[History, str, dict[str, Any]]:
    """A new chat: no messages, an empty box, no alternatives."""
    return [], "", {}
