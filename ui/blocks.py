"""``build_app``: the playground's Blocks, its panels and the events between them.

API endpoints (``gradio_client``):
- ``/chat`` (streaming): message, history, system_prompt, thinking, then every generation
  setting of ``core.settings.SCHEMA`` (temperature, top_p, top_k, min_p, presence_penalty,
  max_new_tokens, seed; None = the card's preset value), model, yarn_factor, tools (a
  ``ToolSelection`` as JSON, None = no tools), loop_guard (default true: a reply that repeats
  itself is stopped, ending with a "repeating:…" note) -> history (JSON messages; ``metadata.id`` says what
  each assistant message is, a tool result's carries its call record)
- ``/regenerate`` (streaming): the same without message -> history
- ``/chat_json``: the same as ``/chat`` -> one object, exactly what ``app.py chat --json`` prints
- ``/load_model``: model, yarn_factor -> (model, yarn_factor, status, info); a failed load
  returns the session's previous model and the reason in status
- ``/apply_preset``: preset -> (temperature, ..., seed, preset note)
- ``/set_thinking``: thinking, model -> (preset, temperature, ..., seed, preset note)
- ``/presets``: -> every preset with its mode and values
- ``/models``: -> the catalog
- ``/chat_export``: history, model -> (JSON file, Markdown file); ``/chat_import``: file,
  history -> history (the current history if the file is not a chat: the error says why)
- the Compare tab's ``/compare``, ``/compare_follow_up``, ``/compare_perplexity``,
  ``/compare_drift``, ``/compare_export`` and ``/compare_import``: see ``ui.compare_tab``
"""
from __future__ import annotations

from typing import Any

import gradio as gr

from core.errors import PlaygroundError
from playground import Playground
from ui.chat_files import wire_persistence
from playground.tools.approval import LiveReplies
from ui.branches_view import make_branch_handlers, wire_branches
from ui.chat_tab import SETTING_NAMES, build_chat_tab, clear, make_chat_handlers, make_reply_controls, stopped
from ui.compare_tab import build_compare_tab, wire_compare_tab
from ui.model_panel import (build_model_panel, make_apply_model_defaults, make_load_model, make_page_start,
                            model_summary, pick_requested)
from ui.settings_panel import build_settings_panel, wire_settings_panel
from ui.tools_panel import build_tools_panel, wire_tools_panel

TITLE = "Qwen3 Playground"
# hosted mode: every 10 minutes Gradio deletes the uploads and exported files it keeps that are over an hour old
HOSTED_CACHE_S = (600, 3600)


def build_app(playground: Playground | None = None) -> gr.Blocks:
    """The playground's Blocks for ``playground`` (shared by every session: its pool, catalog,
    rules and start model; a new one from the environment's configuration if None)."""
    if playground is None:
        from core.config import AppConfig

        playground = Playground(AppConfig.from_env())
        playground.start_up()
    start = playground.start
    start_spec = playground.resolve(start.ref)

    with gr.Blocks(title=TITLE, delete_cache=HOSTED_CACHE_S if playground.config.hosted else None) as demo:
        gr.Markdown(f"## {TITLE}")
        with gr.Tabs():
            with gr.Tab("Chat", id="chat", elem_id="tab-chat"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=3):
                        chat = build_chat_tab()
                        info = gr.Markdown(model_summary(playground, start.ref, 1.0), label="info", elem_id="model-info")
                    with gr.Column(scale=2, min_width=320):
                        models = build_model_panel(playground, info)
                        settings = build_settings_panel(playground, start_spec)
                        tools = build_tools_panel(playground)
            with gr.Tab("Compare", id="compare", elem_id="tab-compare"):
                compare = build_compare_tab(playground)
        _wire(playground, demo, chat, models, settings, tools)
        wire_compare_tab(playground, compare, tools=tools.selection)
    demo.playground = playground  # for tests and embedding: the pool and the start model
    return demo


def _wire(playground: Playground, demo: gr.Blocks, chat, models, settings, tools) -> None:
    live = LiveReplies()
    handlers = make_chat_handlers(playground, live)
    submit_fn, respond_fn = handlers.submit, handlers.respond
    branch = make_branch_handlers(playground, live)
    bar = chat.branches
    halt, decide = make_reply_controls(live)
    load_model = make_load_model(playground)
    apply_defaults = make_apply_model_defaults(playground)
    generation_inputs = [settings.system_prompt, settings.thinking, *settings.sliders, models.model,
                         models.yarn_factor, tools.selection, chat.loop_guard]

    # chat (UI): Enter / Send move the message into the chat at once, then the reply streams.
    # (Gradio's frontend runs a trigger's events one after another, hence one chain, not two events.)
    replies = []
    for trigger in (chat.message.submit, chat.send.click):
        replies.append(trigger(submit_fn, [chat.message, chat.chatbot], [chat.message, chat.chatbot], queue=False,
                               api_visibility="private", show_progress="hidden").then(
            respond_fn, [chat.chatbot, *generation_inputs], [chat.chatbot], api_visibility="private",
            show_progress="minimal"))
    # Regenerate (and the retry after "Stopped: repeating", with the cards' presence_penalty 1.5,
    # which the slider shows) and an edited message: what they replace is kept as an alternative
    # first (ui.branches_view), then the reply to the user's message streams
    presence_slider = settings.sliders[SETTING_NAMES.index("presence_penalty")]
    keep = dict(fn=branch["keep_reply"], inputs=[chat.chatbot, bar.data, bar.fork],
                outputs=[chat.chatbot, bar.data, bar.fork],
                queue=False, api_visibility="private", show_progress="hidden")
    replies.append(chat.regenerate.click(**keep).success(
        handlers.regenerate_ui, [chat.chatbot, *generation_inputs], [chat.chatbot], api_visibility="private",
        show_progress="minimal"))
    replies.append(chat.retry_loop.click(**keep).success(
        handlers.retry_loop_ui, [chat.chatbot, *generation_inputs], [chat.chatbot, presence_slider],
        api_visibility="private", show_progress="minimal"))
    replies.append(chat.chatbot.edit(branch["edit"], [chat.chatbot, bar.data, bar.fork],
                                     [chat.chatbot, bar.data, bar.fork], queue=False, api_visibility="private",
                                     show_progress="hidden").then(
        respond_fn, [chat.chatbot, *generation_inputs], [chat.chatbot], api_visibility="private",
        show_progress="minimal"))
    replies.append(chat.continue_.click(handlers.continue_ui, [chat.chatbot, *generation_inputs], [chat.chatbot],
                                        api_visibility="private", show_progress="minimal"))
    # Stop cancels the reply (Gradio closes its generator, which stops the generation), then
    # marks what was cut short; in this order, no late streamed update overwrites the mark
    halted = chat.stop.click(halt, None, None, cancels=replies, queue=False, api_visibility="private",
                             show_progress="hidden").then(
        stopped, [chat.chatbot], [chat.chatbot], queue=False, api_visibility="private", show_progress="hidden")
    # a tool call waiting for the user: its Run / Skip options (the reply goes on streaming)
    chat.chatbot.option_select(decide, None, None, queue=False, api_visibility="private", show_progress="hidden")
    wire_tools_panel(playground, tools)
    # chat (API): the same replies, stateless, with plain JSON messages
    gr.api(handlers.chat, api_name="chat")
    gr.api(handlers.regenerate, api_name="regenerate")
    gr.api(handlers.continue_reply, api_name="continue_reply")
    gr.api(handlers.chat_json, api_name="chat_json")
    cleared = chat.clear.click(clear, None, [chat.chatbot, chat.message, bar.data], queue=False,
                               api_visibility="private", show_progress="hidden")
    switched = wire_branches(bar, chat.chatbot, branch, replies)

    # model: Load button -> load_model (the API endpoint) -> the new model's thinking mode / preset
    load_outputs = [models.model, models.yarn_factor, models.current, models.status, models.info]
    defaults_outputs = [models.applied, settings.thinking, settings.preset, *settings.sliders, settings.preset_note,
                        models.choice, models.custom]
    models.choice.input(lambda: "", None, [models.custom], queue=False, api_visibility="private")
    for trigger, visibility in ((models.load_button.click, "public"), (models.custom.submit, "private")):
        trigger(pick_requested, [models.choice, models.custom], [models.requested], queue=False,
                api_visibility="private").then(
            load_model, [models.requested, settings.yarn, models.current], load_outputs,
            api_name="load_model" if visibility == "public" else None, api_visibility=visibility,
            show_progress_on=[models.status]).then(
            apply_defaults, [models.model, settings.thinking, models.applied], defaults_outputs,
            api_visibility="private", show_progress="hidden").then(
            _same, [models.yarn_factor], [settings.yarn], queue=False, api_visibility="private",
            show_progress="hidden")
    # YaRN: a new factor reloads the session's model through the pool; afterwards the slider
    # shows the factor in use (the old one if the reload failed)
    for step in (settings.yarn.release(load_model, [models.model, settings.yarn, models.current], load_outputs,
                                       api_visibility="private", show_progress_on=[models.status]),
                 settings.use_recommended.click(_recommended, [settings.desired_context, settings.yarn],
                                                [settings.yarn], queue=False, api_visibility="private").then(
                     load_model, [models.model, settings.yarn, models.current], load_outputs,
                     api_visibility="private", show_progress_on=[models.status])):
        step.then(_same, [models.yarn_factor], [settings.yarn], queue=False, api_visibility="private",
                  show_progress="hidden")

    wire_settings_panel(playground, settings, models.model)
    # the start model's background load, with its progress; then the session's model through the
    # pool like any load (its rules and budget): limited like every other event, as a visitor can
    # send this one by hand too
    demo.load(make_page_start(playground), [models.model, models.yarn_factor],
              [models.status, models.info, models.model, models.current], api_visibility="private",
              show_progress_on=[models.status], concurrency_limit="default")
    wire_persistence(demo, chat, models.model, ends=[*replies, halted, cleared, *switched], playground=playground)  # each ends with a final save

    def presets() -> dict[str, Any]:
        """Every sampling preset: mode, description and values."""
        return {name: {"mode": p.mode, "description": p.description, **p.settings.to_dict()}
                for name, p in playground.presets.items()}

    def models_list() -> list[dict[str, Any]]:
        """The model catalog (name, backend, source, format, quantized, thinking, params, description)."""
        return [spec.to_dict() for spec in playground.catalog]

    gr.api(presets, api_name="presets")
    gr.api(models_list, api_name="models")


def _same(value: Any) -> Any:
    return value


def _recommended(desired: float | None, current: float) -> float:
    from core.yarn import recommend_factor

    try:
        return recommend_factor(int(desired))
    except (PlaygroundError, TypeError, ValueError) as exc:
        gr.Warning(str(exc) if isinstance(exc, PlaygroundError) else "Type the desired context first.")
        return current
