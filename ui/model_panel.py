"""Model picker: catalog dropdown, free field (Hub repo id / local path), load with progress.

A session's model is two hidden fields (``model``, ``yarn_factor``) that every chat call sends;
the playground's shared pool holds the loaded models. A failed load changes
neither field, so the session keeps chatting with the model it had.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr

from core.errors import PlaygroundError
from core.settings import SCHEMA
from playground import Playground
from playground.service import yarn_factor_value
from ui.formatting import preset_status
from ui.progress import gradio_progress
from ui.settings_panel import preset_label, preset_values, thinking_info


@dataclass
class ModelPanel:
    choice: gr.Dropdown
    custom: gr.Textbox
    load_button: gr.Button
    requested: gr.Textbox  # hidden: what the Load button asked for
    model: gr.Textbox  # hidden: the session's model (an API parameter of chat)
    yarn_factor: gr.Number  # hidden: the factor the session's model was loaded with
    status: gr.Markdown
    info: gr.Markdown
    applied: gr.State  # the model whose defaults (thinking mode, preset) the widgets show
    current: gr.State  # (model, yarn_factor) the session uses: what a failed load keeps


def model_summary(playground: Playground, ref: str, yarn_factor: float) -> str:
    """The model info line, or a note that the model is not loaded yet."""
    try:
        backend = playground.peek(ref, yarn_factor)
    except PlaygroundError as exc:
        return f"Model: `{ref}` ({playground.error_text(exc)})"
    if backend is None:
        return f"Model: `{ref}` (loads with the first message)"
    try:
        return "Model: " + playground.describe(backend).summary()
    except PlaygroundError as exc:
        return f"Model: `{ref}` ({playground.error_text(exc)})"


def build_model_panel(playground: Playground, info: gr.Markdown) -> ModelPanel:
    """The picker; ``info`` (the model info line) is rendered by the caller, under the chat."""
    choices = playground.catalog_choices()
    in_catalog = any(value == playground.start.ref for _, value in choices)
    hosted = playground.config.hosted  # the catalog only: no free field (the server refuses other names anyway)
    label = ("Catalog" if not hosted else "Model (this hosted playground serves these)"
             if playground.config.visitors_may_switch else "Model (chosen by this playground's host)")
    with gr.Accordion("Model", open=True):
        choice = gr.Dropdown(choices=choices, value=playground.start.ref if in_catalog else None, label=label,
                             elem_id="model-choice", allow_custom_value=False)
        custom = gr.Textbox(label="…or a Hub repo id / local path", elem_id="model-custom",
                            placeholder="Qwen/Qwen3-0.6B, /path/to/checkpoint, /path/to/model.gguf",
                            value="" if in_catalog else playground.start.ref, visible=not hosted)
        load_button = gr.Button("Load model", variant="secondary", elem_id="load-model")
        status = gr.Markdown(playground.start.note, label="status", elem_id="model-status")
    requested = gr.Textbox(value=playground.start.ref, visible=False, label="requested")
    model = gr.Textbox(value=playground.start.ref, visible=False, label="model")
    yarn_factor = gr.Number(value=1.0, visible=False, label="yarn_factor")
    applied = gr.State(playground.start.ref)
    current = gr.State((playground.start.ref, 1.0))
    return ModelPanel(choice, custom, load_button, requested, model, yarn_factor, status, info, applied, current)


def make_load_model(playground: Playground):
    def load_model(model: str, yarn_factor: float = 1.0, current: tuple[str, float] = ("", 1.0),
                   progress=gr.Progress()) -> tuple[Any, ...]:
        """Load a model (catalog name, Hub repo id or local path) with a YaRN factor (1 = off).

        Returns (model, yarn_factor, status, info): the session's model afterwards. On failure
        the status says why and the session keeps the model (and factor) it had.
        """
        model = (model or "").strip()
        started = time.perf_counter()
        try:
            factor = yarn_factor_value(yarn_factor)
            progress(0.0, desc=f"Loading {model}")
            backend = playground.load(model, factor, gradio_progress(progress))
            summary = playground.describe(backend).summary()
        except PlaygroundError as exc:
            reason = playground.error_text(exc)
            gr.Warning(f"Could not load {model or 'the model'}: {reason}")
            kept, kept_factor = current
            # with every model slot taken, the previous model was unloaded to make room
            still = "it stays loaded" if _is_loaded(playground, kept, kept_factor) else "it loads again with your next message"
            return (kept, kept_factor, current, f"**Could not load** `{model}`: {reason}  \nStill using `{kept}` ({still}).",
                    model_summary(playground, kept, kept_factor))
        took = time.perf_counter() - started
        yarn = f" with YaRN ×{factor:g}" if factor != 1.0 else ""
        return model, factor, (model, factor), f"`{model}` ready{yarn} ({took:.1f} s).", f"Model: {summary}"

    return load_model


def _is_loaded(playground: Playground, ref: str, yarn_factor: float) -> bool:
    try:
        return playground.peek(ref, yarn_factor) is not None
    except PlaygroundError:
        return False


def make_page_start(playground: Playground):
    def on_page_load(model: str, yarn_factor: float, progress=gr.Progress()) -> Iterator[tuple[Any, ...]]:
        """Show the session's start model: while it loads in the background (the UI comes up
        first), its progress; then its info line. If it could not load, the session moves to
        the tiny model and the status says why. Yields (status, info, model, current)."""
        warmup = playground.warmup
        if warmup is not None and warmup.ref == model:
            while warmup.running:
                progress(warmup.fraction, desc=warmup.message)
                yield (f"Loading `{model}` in the background: {warmup.message} ({warmup.fraction:.0%})",
                       f"Model: `{model}` (loading…)", gr.skip(), gr.skip())
                warmup.done.wait(0.5)
            if warmup.fallback is not None:
                fallback = warmup.fallback.ref
                yield (warmup.fallback.note, model_summary(playground, fallback, 1.0), fallback, (fallback, 1.0))
                return
        try:
            playground.load(model, float(yarn_factor or 1.0), gradio_progress(progress))
        except PlaygroundError as exc:
            yield (f"**Could not load** `{model}`: {playground.error_text(exc)}", model_summary(playground, model, yarn_factor or 1.0),
                   gr.skip(), gr.skip())
            return
        yield playground.start.note, model_summary(playground, model, yarn_factor or 1.0), gr.skip(), gr.skip()

    return on_page_load


def make_apply_model_defaults(playground: Playground):
    def apply_model_defaults(model: str, thinking: bool, applied: str) -> tuple[Any, ...]:
        """After a model change: the Thinking toggle follows the model's mode (always / never /
        switchable) and the preset becomes the mode's default (quantized variant if needed)."""
        n_outputs = 3 + len(SCHEMA) + 3  # applied, thinking, preset, one per setting, note, choice, custom
        if model == applied:
            return tuple(gr.skip() for _ in range(n_outputs))
        try:
            spec = playground.resolve(model)
        except PlaygroundError:
            return tuple(gr.skip() for _ in range(n_outputs))
        thinking = spec.effective_thinking(bool(thinking))
        name = playground.preset_name(spec, thinking)
        preset = playground.presets[name]
        in_catalog = any(entry.name == model for entry in playground.catalog)
        return (model, gr.Checkbox(value=thinking, interactive=spec.fixed_thinking is None, info=thinking_info(spec)),
                gr.Dropdown(choices=playground.presets_for(thinking), value=name, label=preset_label(thinking)),
                *preset_values(preset.settings), preset_status(name, False, preset.description),
                model if in_catalog else gr.skip(), "" if in_catalog else gr.skip())

    return apply_model_defaults


def pick_requested(choice: str | None, custom: str) -> str:
    """The free field wins over the dropdown when it holds something."""
    return (custom or "").strip() or (choice or "")
