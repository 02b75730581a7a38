"""System prompt, Thinking toggle, sampling presets and sliders, YaRN controls.

Values come from the core (presets, ranges, YaRN arithmetic); this module only shows them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from core.errors import PlaygroundError
from core.presets import default_preset_name
from core.settings import MAX_NEW_TOKENS_LIMIT
from core.yarn import MAX_FACTOR, ORIGINAL_CONTEXT, STATIC_YARN_WARNING, context_window, recommend_factor
from ui.context import AppContext
from ui.formatting import (RANDOM_SEED, SETTING_FIELDS, THINKING_INFO, preset_status, settings_to_values,
                           values_to_settings)

YARN_RELOAD_NOTE = "Changing the factor **reloads the model** (YaRN is applied when the model loads)."


@dataclass
class SettingsPanel:
    system_prompt: gr.Textbox
    thinking: gr.Checkbox
    preset: gr.Dropdown
    preset_note: gr.Markdown
    sliders: list[gr.components.Component]  # in SETTING_FIELDS order
    yarn: gr.Slider
    yarn_readout: gr.Markdown
    desired_context: gr.Number
    recommendation: gr.Markdown
    use_recommended: gr.Button


def yarn_readout(factor: float) -> str:
    try:
        window = context_window(float(factor))
    except (PlaygroundError, TypeError, ValueError) as exc:
        return f"**{exc}**"
    if float(factor) == 1.0:
        head = f"**Context window: {window:,} tokens** (YaRN off, the native context)"
    else:
        head = (f"**Context window: {window:,} tokens** (YaRN ×{float(factor):g})  \n"
                f"**Warning:** {STATIC_YARN_WARNING}")
    return f"{head}  \n{YARN_RELOAD_NOTE}"


def recommendation_text(desired: float | None) -> str:
    if desired is None or desired == "":
        return "Type the context you need to get the recommended factor."
    try:
        factor = recommend_factor(int(desired))
    except (PlaygroundError, TypeError, ValueError) as exc:
        return f"**{exc}**"
    if factor == 1.0:
        return f"{int(desired):,} tokens fit in the native {ORIGINAL_CONTEXT:,}: keep YaRN **off** (factor 1)."
    return f"Recommended factor for {int(desired):,} tokens: **{factor:g}** ({context_window(factor):,} tokens)."


def build_settings_panel(ctx: AppContext, start_quantized: bool, start_thinking: bool = True) -> SettingsPanel:
    preset_name = default_preset_name(start_thinking, start_quantized)
    preset = ctx.presets[preset_name]
    values = dict(zip(SETTING_FIELDS, settings_to_values(preset.settings)))
    with gr.Accordion("Generation", open=True):
        system_prompt = gr.Textbox(value="", label="System prompt", lines=2, placeholder="Optional system prompt",
                                   elem_id="system-prompt")
        thinking = gr.Checkbox(value=start_thinking, label="Thinking", elem_id="thinking-toggle",
                               info=THINKING_INFO)
        preset_dd = gr.Dropdown(choices=ctx.presets_for(start_thinking), value=preset_name,
                                label=preset_label(start_thinking), elem_id="preset")
        preset_note = gr.Markdown(preset_status(preset_name, False, preset.description), label="preset_note",
                                  elem_id="preset-note")
        sliders = [
            gr.Slider(0.0, 2.0, value=values["temperature"], step=0.05, label="temperature",
                      info="0 = greedy (refused in thinking mode)", elem_id="temperature"),
            gr.Slider(0.01, 1.0, value=values["top_p"], step=0.01, label="top_p", elem_id="top_p"),
            gr.Slider(0, 200, value=values["top_k"], step=1, precision=0, label="top_k",
                      info="0 disables it", elem_id="top_k"),
            gr.Slider(0.0, 1.0, value=values["min_p"], step=0.01, label="min_p", elem_id="min_p"),
            gr.Slider(0.0, 2.0, value=values["presence_penalty"], step=0.1, label="presence_penalty",
                      info="1.5 recommended for quantized models", elem_id="presence_penalty"),
            gr.Slider(1, MAX_NEW_TOKENS_LIMIT, value=values["max_new_tokens"], step=1, precision=0,
                      label="max_new_tokens", elem_id="max_new_tokens"),
            gr.Number(value=values["seed"], precision=0, minimum=RANDOM_SEED, label="seed",
                      info="-1 = a fresh random seed per reply", elem_id="seed"),
        ]
    with gr.Accordion("Context length (YaRN)", open=False):
        yarn = gr.Slider(1.0, MAX_FACTOR, value=1.0, step=0.5, label="YaRN factor (1 = off)", elem_id="yarn")
        readout = gr.Markdown(yarn_readout(1.0), elem_id="yarn-readout")
        with gr.Row():
            desired = gr.Number(label="Desired context (tokens)", value=None, precision=0, minimum=1,
                                elem_id="desired-context")
            use_btn = gr.Button("Use recommended factor (reloads)", size="sm")
        recommendation = gr.Markdown(recommendation_text(None), elem_id="yarn-recommendation")
    return SettingsPanel(system_prompt, thinking, preset_dd, preset_note, sliders, yarn, readout,
                         desired, recommendation, use_btn)


def preset_label(thinking: bool) -> str:
    return f"Preset ({'thinking' if thinking else 'non-thinking'} mode)"


def wire_settings_panel(ctx: AppContext, panel: SettingsPanel, model: gr.Textbox) -> None:
    """Events that only touch the settings widgets (the YaRN reload is wired by ``build_app``)."""

    def apply_preset(preset: str) -> tuple[Any, ...]:
        """Fill the sliders with a preset's values: temperature, top_p, top_k, min_p,
        presence_penalty, max_new_tokens, seed, and the preset note."""
        if preset not in ctx.presets:
            raise gr.Error(f"unknown preset {preset!r}; available: {', '.join(ctx.presets)}")
        chosen = ctx.presets[preset]
        return (*settings_to_values(chosen.settings), preset_status(preset, False, chosen.description))

    def set_thinking(thinking: bool, model: str) -> tuple[Any, ...]:
        """Switch the preset picker to the mode's default preset (quantized variant if needed)."""
        try:
            quantized = ctx.resolve(model).quantized
        except PlaygroundError:
            quantized = False
        name = default_preset_name(bool(thinking), quantized)
        dropdown = gr.Dropdown(choices=ctx.presets_for(bool(thinking)), value=name,
                               label=preset_label(bool(thinking)))
        return (dropdown, *apply_preset(name))

    def mark_customised(preset: str, *values: Any) -> str:
        chosen = ctx.presets.get(preset)
        if chosen is None:
            return preset_status(None, True)
        try:
            same = values_to_settings(*values) == chosen.settings
        except (PlaygroundError, TypeError, ValueError):
            same = False
        return preset_status(preset, not same, chosen.description)

    outputs = [*panel.sliders, panel.preset_note]
    # preprocess=False: API users may name a preset of the other mode (apply_preset checks it)
    panel.preset.input(apply_preset, [panel.preset], outputs, api_name="apply_preset", preprocess=False)
    panel.thinking.input(set_thinking, [panel.thinking, model], [panel.preset, *outputs],
                         api_name="set_thinking")
    for slider in panel.sliders:
        slider.input(mark_customised, [panel.preset, *panel.sliders], [panel.preset_note],
                     api_visibility="private", queue=False, show_progress="hidden")
    panel.yarn.change(yarn_readout, [panel.yarn], [panel.yarn_readout], api_visibility="private",
                      queue=False, show_progress="hidden")
    panel.desired_context.change(recommendation_text, [panel.desired_context], [panel.recommendation],
                                 api_visibility="private", queue=False, show_progress="hidden")
