"""Sampling presets, one JSON file each in ``presets/sampling/`` (drop a file there to add one).

A file holds ``mode`` ("thinking" or "non-thinking"), an optional ``description`` and any of the
:class:`GenerationSettings` fields; the preset's name is the file name without ``.json``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from core.errors import InvalidSettings, PresetError
from core.settings import GenerationSettings

PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets" / "sampling"
MODES = ("thinking", "non-thinking")


@dataclass(frozen=True)
class Preset:
    name: str
    mode: str
    settings: GenerationSettings
    description: str = ""

    @property
    def thinking(self) -> bool:
        return self.mode == "thinking"


def load_preset_file(path: Path) -> Preset:
    """Parse one preset file; any problem raises :class:`PresetError` naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PresetError(f"preset file {path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise PresetError(f"preset file {path}: expected a JSON object")
    mode = data.pop("mode", None)
    if mode not in MODES:
        raise PresetError(f"preset file {path}: 'mode' must be one of {', '.join(MODES)}, got {mode!r}")
    description = data.pop("description", "")
    try:
        settings = GenerationSettings().with_updates(**data).validate(thinking=mode == "thinking")
    except InvalidSettings as exc:
        raise PresetError(f"preset file {path}: {exc}") from None
    return Preset(name=path.stem, mode=mode, settings=settings, description=str(description))


def load_presets(directory: Path = PRESETS_DIR) -> dict[str, Preset]:
    """All presets in ``directory``, by name, in file-name order."""
    return {p.stem: load_preset_file(p) for p in sorted(directory.glob("*.json"))}


def get_preset(name: str, directory: Path = PRESETS_DIR) -> Preset:
    presets = load_presets(directory)
    if name not in presets:
        raise PresetError(f"unknown preset {name!r}; available: {', '.join(presets) or 'none'}")
    return presets[name]


def default_preset_name(thinking: bool, quantized: bool = False) -> str:
    """The card's preset for a mode; quantized models get presence_penalty 1.5 (GPTQ card)."""
    base = "thinking" if thinking else "non-thinking"
    return f"{base}-quantized" if quantized else base
