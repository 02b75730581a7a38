"""System prompt, Thinking toggle, sampling presets and sliders, YaRN controls.

The sliders are generated from the settings schema (``core.settings.SCHEMA``: range, step,
help); values come from the presets and the YaRN arithmetic. This module only shows them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from core.catalog import ModelSpec
from core.errors import PlaygroundError
from core.presets import default_preset_name
from core.settings import RANDOM_SEED, SCHEMA, GenerationSettings, SettingSpec
from core.values import strict_bool
from core.yarn import MAX_FACTOR, ORIGINAL_CONTEXT, STATIC_YARN_WARNING, context_window, recommend_factor
from playground import Playground
from ui.formatting import THINKING_INFO, preset_status

YARN_RELOAD_NOTE = "Changing the factor **reloads the model** (YaRN is applied when the model loads)."


@dataclass
class SettingsPanel:
    system_prompt: gr.Textbox
    thinking: gr.Checkbox
    preset: gr.Dropdown
    preset_note: gr.Markdown
    sliders: list[gr.components.Component]  # one per setting, in the schema's order
    yarn: gr.Slider
    yarn_readout: gr.Markdown
    desired_context: gr.Number
    recommendation: gr.Markdown
    use_recommended: gr.Button


def setting_widget(spec: SettingSpec, value: Any) -> gr.components.Component:
    """The widget for one setting of the schema: a slider, or a number box for the seed."""
    if spec.optional:
        return gr.Number(value=RANDOM_SEED if value is None else value, precision=0, minimum=RANDOM_SEED,
                         maximum=spec.maximum, label=spec.name, info=spec.help, elem_id=spec.name)
    low = spec.minimum + spec.step if spec.exclusive_minimum else spec.minimum
    return gr.Slider(low, spec.maximum, value=value, step=spec.step, label=spec.name, info=spec.help,
                     elem_id=spec.name, **({"precision": 0} if spec.type is int else {}))


def settings_to_values(settings: GenerationSettings) -> list[Any]:
    """Widget values for ``settings``, in the schema's order (seed None shows as -1, "random")."""
    return [RANDOM_SEED if getattr(settings, spec.name) is None and spec.optional else getattr(settings, spec.name)
            for spec in SCHEMA]


def preset_values(settings: GenerationSettings) -> list[Any]:
    """What applying a preset sends to the widgets: its values, and no change to a setting no
    preset sets (the thinking budget the user chose stays)."""
    return [value if spec.preset else gr.skip() for spec, value in zip(SCHEMA, settings_to_values(settings))]


def same_as_preset(settings: GenerationSettings, preset: GenerationSettings) -> bool:
    """Whether the settings a preset sets are its values (the others do not make it "customised")."""
    return all(getattr(settings, spec.name) == getattr(preset, spec.name) for spec in SCHEMA if spec.preset)


def values_to_settings(*values: Any) -> GenerationSettings:
    """Widget values (schema order) -> settings, coerced by the schema (not range-checked)."""
    return GenerationSettings().with_values(**{spec.name: value for spec, value in zip(SCHEMA, values)})


def thinking_info(spec: ModelSpec) -> str:
    """The Thinking toggle's help for a model that always / never thinks, or the switches'."""
    return {True: "This model always thinks.", False: "This model has no thinking mode."}.get(
        spec.fixed_thinking, THINKING_INFO)


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


def build_settings_panel(playground: Playground, start: ModelSpec) -> SettingsPanel:
    thinking_now = start.effective_thinking(True)
    preset_name = playground.preset_name(start, thinking_now)
    preset = playground.presets[preset_name]
    with gr.Accordion("Generation", open=True):
        system_prompt = gr.Textbox(value="", label="System prompt", lines=2, placeholder="Optional system prompt",
                                   elem_id="system-prompt")
        thinking = gr.Checkbox(value=thinking_now, label="Thinking", elem_id="thinking-toggle",
                               info=thinking_info(start), interactive=start.fixed_thinking is None)
        preset_dd = gr.Dropdown(choices=playground.presets_for(thinking_now), value=preset_name,
                                label=preset_label(thinking_now), elem_id="preset")
        preset_note = gr.Markdown(preset_status(preset_name, False, preset.description), label="preset_note",
                                  elem_id="preset-note")
        sliders = [setting_widget(spec, value) for spec, value in zip(SCHEMA, settings_to_values(preset.settings))]
    with gr.Accordion("Context length (YaRN)", open=False):
        switch = playground.config.visitors_may_switch  # a new factor reloads the model: the host's choice if not
        yarn = gr.Slider(1.0, MAX_FACTOR, value=1.0, step=0.5, label="YaRN factor (1 = off)", elem_id="yarn",
                         interactive=None if switch else False, info=None if switch else "Set by this playground's host.")
        readout = gr.Markdown(yarn_readout(1.0), elem_id="yarn-readout")
        with gr.Row():
            desired = gr.Number(label="Desired context (tokens)", value=None, precision=0, minimum=1,
                                elem_id="desired-context")
            use_btn = gr.Button("Use recommended factor (reloads)", size="sm", interactive=switch)
        recommendation = gr.Markdown(recommendation_text(None), elem_id="yarn-recommendation")
    return SettingsPanel(system_prompt, thinking, preset_dd, preset_note, sliders, yarn, readout,
                         desired, recommendation, use_btn)


def preset_label(thinking: bool) -> str:
    return f"Preset ({'thinking' if thinking else 'non-thinking'} mode)"


def wire_settings_panel(playground: Playground, panel: SettingsPanel, model: gr.Textbox) -> None:
    """Events that only touch the settings widgets (the YaRN reload is wired by ``build_app``)."""

    def apply_preset(preset: str) -> tuple[Any, ...]:
        """Fill the sliders with a preset's values: temperature, top_p, top_k, min_p,
        presence_penalty, max_new_tokens, seed, and the preset note."""
        if preset not in playground.presets:
            raise gr.Error(f"unknown preset {preset!r}; available: {', '.join(playground.presets)}")
        chosen = playground.presets[preset]
        return (*preset_values(chosen.settings), preset_status(preset, False, chosen.description))

    def set_thinking(thinking: bool, model: str) -> tuple[Any, ...]:
        """Switch the preset picker to the mode's default preset (quantized variant if needed)."""
        try:
            thinking = strict_bool(thinking, "thinking")
        except PlaygroundError as exc:
            raise gr.Error(str(exc)) from None
        try:
            name = playground.preset_name(playground.resolve(model), bool(thinking))
        except PlaygroundError:
            name = default_preset_name(bool(thinking), quantized=False)
        dropdown = gr.Dropdown(choices=playground.presets_for(bool(thinking)), value=name,
                               label=preset_label(bool(thinking)))
        return (dropdown, *apply_preset(name))

    def mark_customised(preset: str, *values: Any) -> str:
        chosen = playground.presets.get(preset)
        if chosen is None:
            return preset_status(None, True)
        try:
            same = same_as_preset(values_to_settings(*values), chosen.settings)
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
