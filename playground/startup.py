"""The model a new session starts on, its background load, and the fall-back to the tiny model.

The rule lives here once: a start model that is unusable (a bad name) or fails to load is
replaced by the tiny demo model, and the session is told why.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from backends.hub import available_offline
from core.catalog import ModelSpec
from core.errors import PlaygroundError

if TYPE_CHECKING:
    from playground.service import Playground

TINY_MODEL = "tiny-bf16"
TINY_NOTE = (
    "Starting on the **tiny demo model** (`{name}`, about a million parameters, built on this "
    "machine): it only knows a short script, e.g. *What is 2+3?*. {reason} "
    "Pick a real Qwen3 model under **Model** once it can be downloaded."
)


@dataclass(frozen=True)
class StartModel:
    ref: str  # what the session's model field starts with
    note: str = ""  # shown plainly when the app did not start on what one would expect


def tiny_start(reason: str) -> StartModel:
    return StartModel(TINY_MODEL, TINY_NOTE.format(name=TINY_MODEL, reason=reason))


def choose_start_model(requested: str | None, catalog: list[ModelSpec]) -> StartModel:
    """The model a new session starts on.

    - one asked for (``--model``, ``QWEN3_PLAYGROUND_MODEL``): that one;
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
    return tiny_start("No Qwen3 model is in the local Hugging Face cache and none was asked for "
                      "(`--model`), so nothing has to be downloaded.")


class Warmup:
    """The start model loading in a background thread once the UI is up, with its progress.

    If it fails, the playground falls back to the tiny model (:meth:`Playground.fall_back`) and
    :attr:`fallback` says why; sessions opened meanwhile switch to it.
    """

    def __init__(self, playground: Playground, ref: str, log: Callable[[str], None] | None = None) -> None:
        self.playground, self.ref, self.log = playground, ref, log
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
            self.playground.load(self.ref, 1.0, self._progress)
        except PlaygroundError as exc:
            self.error = str(exc)
            if self.log:
                self.log(f"could not load {self.ref}: {exc}; starting on {TINY_MODEL}")
            if self.ref != TINY_MODEL:
                self.fallback = self.playground.fall_back(f"`{self.ref}` could not be loaded: "
                                                          f"{self.playground.error_text(exc)}.")
                try:
                    self.playground.load(TINY_MODEL, 1.0, self._progress)
                except PlaygroundError as tiny_exc:
                    self.error = f"{exc}; the tiny model failed too: {tiny_exc}"
        except Exception as exc:  # never let the thread die silently
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.fraction = 1.0
            self.done.set()
