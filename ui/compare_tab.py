"""The Compare tab: 2-4 entries answer one prompt side by side, with figures and exports.

API endpoints (``gradio_client``; the session's comparison is kept between calls, per client):
- ``/compare`` (streaming): model_1, yarn_1, ..., model_4, yarn_4 (empty model = unused), prompt,
  system_prompt, thinking, preset ("auto" or a preset name), seed (-1 = random), max_new_tokens,
  concurrent, tools (optional: a ``ToolSelection`` dict such as ``{"mcp_config": {...},
  "max_rounds": 8}``; None = the session's tools panel, if any), thinking_budget (0 = off),
  loop_guard (True: a reply that repeats itself is stopped, "repeating")
  -> (column 1..4 messages, results
  table, tokens/s chart, memory chart, status). With tools every entry runs its own tool loop,
  calls run automatically, and the table adds tool calls, valid calls, rounds, same final answer
- ``/compare_follow_up`` (streaming): prompt, system_prompt, thinking, preset, seed,
  max_new_tokens, concurrent, tools, thinking_budget, loop_guard -> the same; every column continues its own
  conversation
- ``/compare_perplexity`` (streaming): the eight entry fields, text (a shipped text's name),
  pasted (wins when not empty) -> the same
- ``/compare_drift`` (streaming): the same inputs -> the same; every entry's next-token
  distributions against the first entry's (KLD mean / p99 / max, same top token, perplexity,
  tokens scored)
- ``/compare_export``: -> (JSON file, Markdown file)
- ``/compare_import``: a JSON export -> the same as /compare, then the eight entry fields
Cancelling a /compare or /compare_follow_up job (the Stop button) stops every column.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from core.settings import DEFAULT_MAX_NEW_TOKENS, MAX_NEW_TOKENS_LIMIT
from core.yarn import MAX_FACTOR
from ui.compare_handlers import (AUTO_PRESET, chosen_tools, make_compare_handlers, render_measures, text_choices,
                                 tools_note)
from ui.compare_view import MAX_ENTRIES, TABLE_HEADERS
from playground import Playground
from ui.formatting import THINKING_INFO

POOL_NOTE = ("Models come from the same pool as the chat (at most {slots} loaded at once, `--max-models`). "
             "One after another, each entry loads when its turn comes and an idle model is unloaded first to "
             "make room, so load times show in the table; at the same time, every different entry is in memory "
             "together: more than {slots} run one after another instead (the status says so).")


@dataclass
class CompareTab:
    models: list[gr.Dropdown]
    yarns: list[gr.Number]
    columns: list[gr.Chatbot]
    prompt: gr.Textbox
    system_prompt: gr.Textbox
    thinking: gr.Checkbox
    preset: gr.Dropdown
    seed: gr.Number
    max_new_tokens: gr.Number
    thinking_budget: gr.Number
    loop_guard: gr.Checkbox
    concurrent: gr.Checkbox
    compare: gr.Button
    follow_up: gr.Button
    stop: gr.Button
    clear: gr.Button
    status: gr.Markdown
    tools_note: gr.Markdown  # shown when tools are on: calls run automatically
    table: gr.Dataframe
    published: gr.Markdown  # shown when some entry's checkpoint has published figures
    tokens_chart: gr.BarPlot
    memory_chart: gr.BarPlot
    kld_chart: gr.BarPlot  # these three and the note: shown once some entry has their figures
    bound_chart: gr.BarPlot
    kinds_chart: gr.BarPlot
    measure_note: gr.Markdown
    text: gr.Dropdown
    pasted: gr.Textbox
    score: gr.Button
    drift: gr.Button
    export: gr.Button
    json_file: gr.File
    markdown_file: gr.File
    import_file: gr.File
    state: gr.State
    tools: gr.JSON  # hidden: the API's ``tools`` parameter (the page's come from the chat's tools panel)


def build_compare_tab(playground: Playground) -> CompareTab:
    choices = playground.catalog_choices()
    in_catalog = any(value == playground.start.ref for _, value in choices)
    gr.Markdown("Run one prompt on 2 to 4 models (formats, backends, YaRN factors) and compare answers, "
                "reasoning, speed and memory. The first entry is the reference for agreement.")
    models, yarns = [], []
    with gr.Row(equal_height=True):
        for index in range(MAX_ENTRIES):
            with gr.Column(min_width=200):
                models.append(gr.Dropdown(choices=choices, value=playground.start.ref if index == 0 and in_catalog else None,
                                          allow_custom_value=True, label=f"Entry {index + 1}",
                                          info="catalog, or type a Hub repo id / local path",
                                          elem_id=f"compare-model-{index + 1}"))
                yarns.append(gr.Number(value=1.0, minimum=1.0, maximum=MAX_FACTOR, step=0.5,
                                       label="YaRN factor (1 = off)", elem_id=f"compare-yarn-{index + 1}"))
    with gr.Row(equal_height=False):
        columns = [gr.Chatbot([], label=f"Entry {i + 1}", height=440, elem_id=f"compare-column-{i + 1}",
                              buttons=["copy"], placeholder="Pick a model above, type a prompt, press **Compare**.")
                   for i in range(MAX_ENTRIES)]
    with gr.Row():
        prompt = gr.Textbox(label="Prompt", lines=2, scale=5, elem_id="compare-prompt",
                            placeholder="One prompt for every entry; a follow-up continues every column")
        with gr.Column(scale=1, min_width=160):
            compare = gr.Button("Compare", variant="primary", elem_id="compare-send")
            follow_up = gr.Button("Follow up", elem_id="compare-follow-up")
            stop = gr.Button("Stop", variant="stop", elem_id="compare-stop")
    status = gr.Markdown("", elem_id="compare-status")
    with gr.Accordion("Settings (the same for every entry)", open=True):
        with gr.Row():
            thinking = gr.Checkbox(value=True, label="Thinking", info=THINKING_INFO, elem_id="compare-thinking")
            concurrent = gr.Checkbox(value=False, label="Run at the same time", elem_id="compare-concurrent",
                                     info="Off: one after another, for fair timing on one device")
            preset = gr.Dropdown(choices=[AUTO_PRESET, *playground.presets], value=AUTO_PRESET, label="Preset",
                                 info="auto: the mode's card preset (quantized variant if any entry is quantized)",
                                 elem_id="compare-preset")
            seed = gr.Number(value=0, precision=0, minimum=-1, label="seed", info="-1 = random",
                             elem_id="compare-seed")
            max_new_tokens = gr.Number(value=DEFAULT_MAX_NEW_TOKENS, precision=0, minimum=1,
                                       maximum=MAX_NEW_TOKENS_LIMIT, label="max new tokens",
                                       elem_id="compare-max-new-tokens")
            thinking_budget = gr.Number(value=0, precision=0, minimum=0, maximum=MAX_NEW_TOKENS_LIMIT,
                                        label="thinking budget", info="0 = off; thinking mode only",
                                        elem_id="compare-thinking-budget")
            loop_guard = gr.Checkbox(value=True, label="Loop guard", info="stop a reply that repeats itself",
                                     elem_id="compare-loop-guard")
        system_prompt = gr.Textbox(label="System prompt", lines=1, placeholder="Optional",
                                   elem_id="compare-system-prompt")
        gr.Markdown(POOL_NOTE.format(slots=playground.pool.max_models))
    tools_note = gr.Markdown("", visible=False, elem_id="compare-tools-note")
    table = gr.Dataframe(value=None, headers=TABLE_HEADERS, label="Results (agreement: vs the first entry)",
                         interactive=False, wrap=True, elem_id="compare-table")
    published = gr.Markdown("", visible=False, elem_id="compare-published")
    with gr.Row():
        tokens_chart = gr.BarPlot(None, x="entry", y="tokens_per_s", y_title="tokens/s", y_lim=[0, None],
                                  title="Speed", elem_id="compare-speed-chart", height=240)
        memory_chart = gr.BarPlot(None, x="entry", y="memory_mib", y_title="MiB", y_lim=[0, None],
                                  title="Memory taken by the model", elem_id="compare-memory-chart", height=240)
    with gr.Row():
        kld_chart = gr.BarPlot(None, x="entry", y="kld_mean", y_title="KLD mean", y_lim=[0, None], visible=False,
                               title="Drift from the first entry (KL divergence, lower = closer)",
                               elem_id="compare-kld-chart", height=240)
        bound_chart = gr.BarPlot(None, x="entry", y="share_pct", y_title="% of bound", y_lim=[0, None],
                                 visible=False, title="Speed as a share of the memory-bandwidth bound",
                                 elem_id="compare-bound-chart", height=240)
        kinds_chart = gr.BarPlot(None, x="entry", y="mib", color="kind", y_title="MiB", y_lim=[0, None],
                                 visible=False, title="Memory by kind", elem_id="compare-kinds-chart", height=240)
    measure_note = gr.Markdown("", visible=False, elem_id="compare-measure-note")
    with gr.Accordion("Perplexity and drift (quality in numbers)", open=False):
        with gr.Row():
            text = gr.Dropdown(choices=text_choices(), value="tiny-script", label="Shipped text",
                               elem_id="compare-text")
            pasted = gr.Textbox(label="…or paste a text", lines=3, scale=3, elem_id="compare-pasted")
        with gr.Row():
            score = gr.Button("Score perplexity on every entry", elem_id="compare-perplexity")
            drift = gr.Button("Score drift vs the first entry", elem_id="compare-drift")
    with gr.Accordion("Export / import", open=False):
        with gr.Row():
            export = gr.Button("Export JSON + Markdown", elem_id="compare-export")
            clear = gr.Button("Clear", elem_id="compare-clear")
        with gr.Row():
            json_file = gr.File(label="JSON", interactive=False, elem_id="compare-json")
            markdown_file = gr.File(label="Markdown", interactive=False, elem_id="compare-markdown")
            import_file = gr.File(label="Import a JSON export", file_types=[".json"], type="filepath",
                                  elem_id="compare-import")
    state = gr.State(None)
    tools = gr.JSON(None, visible=False, label="tools")
    return CompareTab(models, yarns, columns, prompt, system_prompt, thinking, preset, seed, max_new_tokens,
                      thinking_budget, loop_guard, concurrent, compare, follow_up, stop, clear, status, tools_note,
                      table, published, tokens_chart, memory_chart, kld_chart, bound_chart, kinds_chart, measure_note,
                      text, pasted, score, drift, export, json_file, markdown_file, import_file, state, tools)


def wire_compare_tab(playground: Playground, tab: CompareTab, tools: gr.components.Component | None = None) -> None:
    """Wire the tab's events. ``tools``: the chat's tools panel (e.g. a ``gr.State`` holding a
    ``ToolSelection`` dict), used when an API call passes no ``tools`` of its own."""
    compare, follow_up, stopped, perplexity, drift, export, import_json, clear = make_compare_handlers(playground)
    entries = [field for pair in zip(tab.models, tab.yarns) for field in pair]
    settings = [tab.prompt, tab.system_prompt, tab.thinking, tab.preset, tab.seed, tab.max_new_tokens,
                tab.concurrent]
    outputs = [*tab.columns, tab.table, tab.tokens_chart, tab.memory_chart, tab.status, tab.state]
    # a gr.State input is not an API parameter: the API's trailing ``tools`` is the hidden tab.tools
    selection = [tab.tools, tab.thinking_budget, tab.loop_guard, *([tools] if tools is not None else [])]
    # the note by the results: from the selection as a run starts (registered first: the page runs
    # a trigger's events in order), then from the comparison the session holds after every change
    def note_of_selection(api_tools: Any, thinking_budget: Any = 0, loop_guard: Any = True,
                          panel_tools: Any = None) -> Any:
        return tools_note(chosen_tools(api_tools, panel_tools))

    def note_of(comparison: Any) -> Any:
        return tools_note(comparison=comparison)

    quiet = {"queue": False, "api_visibility": "private", "show_progress": "hidden"}
    for button in (tab.compare, tab.follow_up):
        button.click(note_of_selection, selection, [tab.tools_note], **quiet)
    runs = [
        tab.compare.click(compare, [*entries, *settings, tab.state, *selection], outputs, api_name="compare",
                          show_progress="minimal"),
        tab.follow_up.click(follow_up, [*settings, tab.state, *selection], outputs, api_name="compare_follow_up",
                            show_progress="minimal"),
        tab.score.click(perplexity, [*entries, tab.text, tab.pasted, tab.state], outputs,
                        api_name="compare_perplexity", show_progress="minimal"),
        tab.drift.click(drift, [*entries, tab.text, tab.pasted, tab.state], outputs,
                        api_name="compare_drift", show_progress="minimal"),
    ]
    measures = [tab.kld_chart, tab.bound_chart, tab.kinds_chart, tab.measure_note, tab.published]
    for run in runs:
        run.then(note_of, [tab.state], [tab.tools_note], **quiet).then(render_measures, [tab.state], measures, **quiet)
    # Stop cancels the run (Gradio closes its generator, whose finally stops every column), then
    # marks the columns it cut short
    tab.stop.click(None, None, None, cancels=runs).then(stopped, [tab.state], outputs, queue=False,
                                                         api_visibility="private", show_progress="hidden").then(
        render_measures, [tab.state], measures, **quiet)
    tab.export.click(export, [tab.state], [tab.json_file, tab.markdown_file], api_name="compare_export")
    tab.import_file.upload(import_json, [tab.import_file], [*outputs, *entries], api_name="compare_import").then(
        note_of, [tab.state], [tab.tools_note], **quiet).then(render_measures, [tab.state], measures, **quiet)
    tab.clear.click(clear, None, outputs, **quiet).then(note_of, [tab.state], [tab.tools_note], **quiet).then(
        render_measures, [tab.state], measures, **quiet)

