"""What every UI handler shares: the model pool, the catalog, the presets, the start model.

One :class:`AppContext` is made by ``build_app`` and handed to each panel; it holds nothing that
belongs to a session (histories and settings live in the browser / ``gr.State``).

The context applies the app's configuration (:class:`core.config.AppConfig`: hosted mode, size
limits, the host's remote server) to everything a page or an API client sends: a request is
checked here, before any model is loaded or any token computed.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends.base import Backend, LoadOptions
from backends.pool import ModelPool
from core.catalog import ModelSpec, load_catalog
from core.chat import content_text, model_messages
from core.config import AppConfig
from core.errors import InvalidSettings, ModelNotFound, PlaygroundError
from core.events import ChatEvent
from core.hub import ProgressFn, available_offline
from core.presets import Preset, load_presets
from core.settings import GenerationSettings
from core.yarn import validate_factor
from ui.zerogpu import gpu

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


@dataclass(frozen=True)
class ChatRequest:
    """A chat request that passed every check (model, YaRN factor, settings, sizes)."""

    spec: ModelSpec
    yarn_factor: float
    settings: GenerationSettings
    thinking: bool  # what the model will do (models that always / never think override it)


@dataclass
class AppContext:
    pool: ModelPool
    start: StartModel
    catalog: list[ModelSpec] = field(default_factory=load_catalog)
    presets: dict[str, Preset] = field(default_factory=load_presets)
    config: AppConfig = field(default_factory=AppConfig)
    warmup: Warmup | None = None  # the start model loading in the background, if any

    def __post_init__(self) -> None:
        # On a ZeroGPU Space only the generation runs with a GPU attached (spaces.GPU, sized
        # from max_new_tokens); everywhere else this is the plain function.
        self.generate = gpu(self._make_generate())

    # -- models --------------------------------------------------------------------------
    def resolve(self, ref: str) -> ModelSpec:
        """What the user typed -> a model, under the configuration's rules (hosted mode: the
        catalog only; ``remote:<name>``: the host's server)."""
        try:
            return self.config.resolve(ref)
        except ModelNotFound:
            # a local model whose folder was deleted after it loaded keeps serving from memory
            spec = None if self.config.hosted else self.pool.loaded_spec(_local_source(ref))
            if spec is None:
                raise
            return spec

    def load_options(self, spec: ModelSpec, yarn_factor: float) -> LoadOptions:
        """Remote models get the host's URL and key (from the environment), never the page's."""
        if spec.backend == "remote":
            return LoadOptions(yarn_factor=float(yarn_factor), base_url=self.config.remote_base_url,
                               api_key=self.config.remote_api_key)
        return LoadOptions(yarn_factor=float(yarn_factor))

    def peek(self, ref: str, yarn_factor: float) -> Backend | None:
        spec = self.resolve(ref)
        return self.pool.peek(spec, self.load_options(spec, yarn_factor))

    def backend(self, ref: str, yarn_factor: float, progress: ProgressFn | None = None) -> Backend:
        """The session's model from the pool, loading it if needed (PlaygroundError on failure)."""
        spec = self.resolve(ref)
        return self.pool.get(spec, self.load_options(spec, yarn_factor), progress)

    def lease(self, ref: str, yarn_factor: float, progress: ProgressFn | None = None):
        spec = self.resolve(ref)
        return self.pool.lease(spec, self.load_options(spec, yarn_factor), progress)

    def admit(self, spec: ModelSpec, options: LoadOptions) -> None:
        """The pool's last check before a load (hosted mode: catalog models, the host's server)."""
        self.config.check_spec(spec, options.base_url)

    # -- requests ------------------------------------------------------------------------
    def check_request(self, history: Sequence[Any], system_prompt: str | None, thinking: bool,
                      settings_values: Sequence[Any], model: str, yarn_factor: Any) -> ChatRequest:
        """Everything a chat request carries, checked before any compute; raises a
        ``PlaygroundError`` that says what is wrong (the API can be called without the UI)."""
        texts = [("system", content_text(system_prompt))] if system_prompt else []
        texts += [(str(_field(m, "role")), content_text(_field(m, "content"))) for m in history or []
                  if not _is_note(m)]
        self.config.check_conversation(texts)
        model_messages(plain_history(history), system_prompt)  # malformed / not ending with the user: say so
        spec = self.resolve(model)
        try:
            factor = float(yarn_factor if yarn_factor is not None else 1.0)
        except (TypeError, ValueError):
            raise InvalidSettings(f"yarn_factor must be a number, got {yarn_factor!r}") from None
        validate_factor(factor)
        from ui.formatting import values_to_settings

        try:
            settings = values_to_settings(*settings_values)
        except PlaygroundError:
            raise
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidSettings(f"a generation setting is not a number: {exc}") from None
        effective = {"always": True, "never": False}.get(spec.thinking, bool(thinking))
        settings.validate(effective)
        return ChatRequest(spec, factor, settings, effective)

    def _make_generate(self):
        pool, resolve, load_options = self.pool, self.resolve, self.load_options

        def generate(model: str, yarn_factor: float, history: list[dict[str, Any]], settings: dict[str, Any],
                     thinking: bool, system_prompt: str | None, max_new_tokens: int) -> Iterator[ChatEvent]:
            """The reply's events from the pooled model (loaded beforehand, in this process:
            on ZeroGPU this runs in the GPU worker, and every argument is plain data)."""
            spec = resolve(model)
            backend = pool.peek(spec, load_options(spec, yarn_factor))
            if backend is None:
                raise PlaygroundError(f"{model} is not loaded any more: send the message again")
            stream = backend.stream_chat(history, GenerationSettings(**settings), thinking=thinking,
                                         system_prompt=system_prompt)
            try:
                yield from stream
            finally:  # Stop / client gone: closing the stream ends the generation
                stream.close()

        return generate

    def presets_for(self, thinking: bool) -> list[str]:
        mode = "thinking" if thinking else "non-thinking"
        return [name for name, preset in self.presets.items() if preset.mode == mode]

    def catalog_choices(self) -> list[tuple[str, str]]:
        """(label, value) pairs for the model dropdown (hosted mode: everything it may load)."""
        choices = [(f"{spec.name} — {spec.format}, {spec.params}" if spec.params else spec.name, spec.name)
                   for spec in self.catalog]
        extra = list(self.config.allowed_models)
        if self.start.ref not in {value for _, value in choices} | set(extra) and self.start.ref.startswith("remote:"):
            extra.append(self.start.ref)  # the host's served model
        return choices + [(ref, ref) for ref in extra if ref not in {value for _, value in choices}]


def _local_source(ref: str) -> str:
    """The source a local path ``ref`` was loaded under (``core.catalog.resolve_model``)."""
    return str(Path((ref or "").strip()).expanduser().resolve())


def _field(message: Any, name: str) -> Any:
    return message.get(name) if isinstance(message, Mapping) else getattr(message, name, None)


def _is_note(message: Any) -> bool:
    """Thoughts, stats and error notes (a ``metadata.title``): shown, never sent to the model."""
    metadata = _field(message, "metadata") or {}
    return bool(metadata.get("title")) if isinstance(metadata, Mapping) else bool(getattr(metadata, "title", None))


def plain_history(history: Sequence[Any]) -> list[dict[str, Any]]:
    """A chat history as plain JSON data (role, content as text, metadata), whatever Gradio gave."""
    out = []
    for message in history or []:
        item: dict[str, Any] = {"role": _field(message, "role"), "content": content_text(_field(message, "content"))}
        metadata = _field(message, "metadata")
        if isinstance(metadata, Mapping) and metadata:
            item["metadata"] = dict(metadata)
        elif metadata and hasattr(metadata, "__dict__"):  # a Gradio MetadataDict-like object
            item["metadata"] = {k: v for k, v in vars(metadata).items() if v is not None}
        out.append(item)
    return out


class Warmup:
    """The start model loading in a background thread once the UI is up, with its progress.

    If it fails, the tiny model is loaded instead and :attr:`fallback` says why; sessions opened
    meanwhile switch to it (``ui.model_panel.make_page_start``).
    """

    def __init__(self, ctx: AppContext, ref: str, log=None) -> None:
        self.ctx, self.ref, self.log = ctx, ref, log
        self.fraction, self.message = 0.0, f"Loading {ref}"
        self.fallback: StartModel | None = None
        self.error: str | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="warmup", daemon=True)

    def start(self) -> Warmup:
        self.thread.start()
        return self

    @property
    def running(self) -> bool:
        return not self.done.is_set()

    def _progress(self, fraction: float, message: str) -> None:
        self.fraction, self.message = max(0.0, min(1.0, float(fraction))), message
        if self.log:
            self.log(f"[{self.fraction:4.0%}] {message}")

    def _run(self) -> None:
        try:
            self.ctx.backend(self.ref, 1.0, self._progress)
        except PlaygroundError as exc:
            self.error = str(exc)
            if self.log:
                self.log(f"could not load {self.ref}: {exc}; starting on {TINY_MODEL}")
            if self.ref != TINY_MODEL:
                note = TINY_NOTE.format(name=TINY_MODEL, reason=f"`{self.ref}` could not be loaded: {exc}.")
                self.fallback = self.ctx.start = StartModel(TINY_MODEL, note)
                try:
                    self.ctx.backend(TINY_MODEL, 1.0, self._progress)
                except PlaygroundError as tiny_exc:
                    self.error = f"{exc}; the tiny model failed too: {tiny_exc}"
        except Exception as exc:  # never let the thread die silently
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.fraction = 1.0
            self.done.set()


def gradio_progress(progress) -> ProgressFn:
    """Adapt ``gr.Progress`` to the core's ``progress(fraction, message)`` callback."""

    def report(fraction: float, message: str) -> None:
        try:
            progress(max(0.0, min(1.0, float(fraction))), desc=message)
        except Exception:  # progress is cosmetic: never let it break a load
            pass

    return report
