"""What every UI handler shares: the model pool, the catalog, the presets, the start model.

One :class:`AppContext` is made by ``build_app`` and handed to each panel; it holds nothing that
belongs to a session (histories and settings live in the browser / ``gr.State``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from backends.base import Backend, LoadOptions
from backends.pool import ModelPool
from core.catalog import ModelSpec, load_catalog, resolve_model
from core.hub import ProgressFn, available_offline
from core.presets import Preset, load_presets

TINY_MODEL = "tiny-bf16"
TINY_NOTE = (
    "Starting on the **tiny demo model** (`{name}`, about a million parameters, built on this "
    "machine): it only knows a short script, e.g. *What is 2+3?*. {reason} "
    "Pick a real Qwen3 model under **Model** once it can be downloaded."
)


@dataclass
class StartModel:
    ref: str  # what the session's model field starts with
    note: str = ""  # shown plainly when the app did not start on what one would expect


def choose_start_model(requested: str | None, catalog: list[ModelSpec]) -> StartModel:
    """The model a new session starts on.

    - ``--model`` given: that one (a load failure at start falls back to the tiny model, see
      ``ui.launch``);
    - otherwise the first real Qwen3 model of the catalog already in the local cache;
    - nothing cached (e.g. no network on a fresh machine): the tiny demo model, said plainly.
    """
    if requested:
        if requested in {spec.name for spec in catalog if spec.is_tiny}:
            return StartModel(requested, TINY_NOTE.format(name=requested, reason="It was asked for (`--model`)."))
        return StartModel(requested)
    for spec in catalog:
        if not spec.is_tiny and spec.backend != "remote":
            try:
                if available_offline(spec):
                    return StartModel(spec.name)
            except Exception:  # a broken cache entry must not stop the app from starting
                continue
    return StartModel(TINY_MODEL, TINY_NOTE.format(
        name=TINY_MODEL, reason="No Qwen3 model is in the local Hugging Face cache and none was asked for "
               "(`--model`), so nothing has to be downloaded."))


@dataclass
class AppContext:
    pool: ModelPool
    start: StartModel
    catalog: list[ModelSpec] = field(default_factory=load_catalog)
    presets: dict[str, Preset] = field(default_factory=load_presets)

    def resolve(self, ref: str) -> ModelSpec:
        return resolve_model(ref, catalog=self.catalog)

    def backend(self, ref: str, yarn_factor: float, progress: ProgressFn | None = None) -> Backend:
        """The session's model from the pool, loading it if needed (PlaygroundError on failure)."""
        return self.pool.get(self.resolve(ref), LoadOptions(yarn_factor=float(yarn_factor)), progress)

    def lease(self, ref: str, yarn_factor: float, progress: ProgressFn | None = None):
        return self.pool.lease(self.resolve(ref), LoadOptions(yarn_factor=float(yarn_factor)), progress)

    def presets_for(self, thinking: bool) -> list[str]:
        mode = "thinking" if thinking else "non-thinking"
        return [name for name, preset in self.presets.items() if preset.mode == mode]

    def catalog_choices(self) -> list[tuple[str, str]]:
        """(label, value) pairs for the model dropdown."""
        return [(f"{spec.name} — {spec.format}, {spec.params}" if spec.params else spec.name, spec.name)
                for spec in self.catalog]


def gradio_progress(progress) -> ProgressFn:
    """Adapt ``gr.Progress`` to the core's ``progress(fraction, message)`` callback."""

    def report(fraction: float, message: str) -> None:
        try:
            progress(max(0.0, min(1.0, float(fraction))), desc=message)
        except Exception:  # progress is cosmetic: never let it break a load
            pass

    return report
