"""Published reference figures (``presets/published_figures.json``), shown beside measured ones.

The file holds ``sources``: each a publication (``name``, ``url``, optional ``settings`` and
``note``) with the ``benchmarks`` it reports (``name``, ``higher_is_better``) and one row per
checkpoint it measured: the Hub repo id (``checkpoint``), the catalog's ``format`` (``bf16``,
``gptq-int4``, ``gguf-Q4_K_M``...), optionally the ``filename`` inside the repo (a GGUF file), the
``mode`` ("thinking" or "non-thinking"), the source's own name for the row (``label``) and the
``figures`` by benchmark name. A figure the source does not report is left out (never 0). To add a
source, append an object to ``sources``; nothing in the code names one.

A model matches a row only when its checkpoint is the row's exactly: the same repo id, the same
format and the same file (so the GGUF or FP8 repos of a model never get its bf16 or GPTQ figures),
in the mode the model runs in (``ModelSpec.effective_thinking``).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.catalog import ModelSpec
from core.errors import PlaygroundError
from core.presets import MODES

PUBLISHED_FILE = Path(__file__).resolve().parent.parent / "presets" / "published_figures.json"


class PublishedFiguresError(PlaygroundError):
    """The published figures file is malformed (the message names the file and the field)."""


@dataclass(frozen=True)
class Benchmark:
    name: str
    higher_is_better: bool = True


@dataclass(frozen=True)
class PublishedRow:
    """One checkpoint's figures in one mode, as a source reports them."""

    checkpoint: str  # the Hub repo id
    format: str  # as the catalog names it (ModelSpec.format)
    mode: str  # "thinking" | "non-thinking"
    figures: dict[str, float]  # by benchmark name, in the source's benchmark order
    label: str = ""  # the source's name for this row (e.g. "GPTQ-int4")
    filename: str | None = None  # a file inside the repo (GGUF); None: the repo is the checkpoint

    def matches(self, spec: ModelSpec, thinking: bool) -> bool:
        same_file = (self.filename or "").lower() == (spec.filename or "").lower()
        mode = MODES[0] if spec.effective_thinking(thinking) else MODES[1]
        return spec.source == self.checkpoint and spec.format == self.format and same_file and mode == self.mode


@dataclass(frozen=True)
class PublishedSource:
    name: str
    url: str
    benchmarks: tuple[Benchmark, ...]
    rows: tuple[PublishedRow, ...]
    settings: str | None = None  # how the source says it measured (None: it does not say)
    note: str = ""


@dataclass(frozen=True)
class PublishedMatch:
    """A source's row for a model: what a comparison shows and exports."""

    source: PublishedSource
    row: PublishedRow

    def to_dict(self) -> dict[str, Any]:
        better = {b.name: b.higher_is_better for b in self.source.benchmarks}
        return {"source": self.source.name, "url": self.source.url, "settings": self.source.settings,
                "checkpoint": self.row.checkpoint, "format": self.row.format, "filename": self.row.filename,
                "mode": self.row.mode, "label": self.row.label,
                "figures": [{"benchmark": name, "value": value, "higher_is_better": better[name]}
                            for name, value in self.row.figures.items()]}


@dataclass(frozen=True)
class PublishedFigures:
    sources: tuple[PublishedSource, ...] = ()

    def matching(self, spec: ModelSpec, thinking: bool) -> list[PublishedMatch]:
        """Every source's row for ``spec``'s checkpoint in the mode it runs in (``thinking``: the
        hard switch); empty when no source measured it."""
        return [PublishedMatch(source, row) for source in self.sources for row in source.rows
                if row.matches(spec, thinking)]


def load_published(path: Path = PUBLISHED_FILE) -> PublishedFigures:
    """Read the file; any problem raises :class:`PublishedFiguresError` naming the file and field."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PublishedFiguresError(f"published figures file {path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("sources"), list):
        raise PublishedFiguresError(f"published figures file {path}: expected an object with a list 'sources'")
    return PublishedFigures(tuple(_source(path, f"sources[{i}]", item) for i, item in enumerate(data["sources"])))


def _fail(path: Path, where: str, problem: str) -> PublishedFiguresError:
    return PublishedFiguresError(f"published figures file {path}: {where}: {problem}")


def _text(path: Path, where: str, data: dict[str, Any], key: str, *, optional: bool = False) -> str | None:
    value = data.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, f"{where}.{key}", f"must be non-empty text, got {value!r}")
    return value


def _source(path: Path, where: str, data: Any) -> PublishedSource:
    if not isinstance(data, dict):
        raise _fail(path, where, "must be an object")
    name, url = _text(path, where, data, "name"), _text(path, where, data, "url")
    if not str(url).startswith("https://"):
        raise _fail(path, f"{where}.url", f"must be an https:// address, got {url!r}")
    if not isinstance(data.get("benchmarks"), list) or not data["benchmarks"]:
        raise _fail(path, f"{where}.benchmarks", "must be a non-empty list")
    benchmarks = []
    for i, item in enumerate(data["benchmarks"]):
        at = f"{where}.benchmarks[{i}]"
        if not isinstance(item, dict):
            raise _fail(path, at, "must be an object")
        better = item.get("higher_is_better", True)
        if not isinstance(better, bool):
            raise _fail(path, f"{at}.higher_is_better", f"must be true or false, got {better!r}")
        benchmarks.append(Benchmark(str(_text(path, at, item, "name")), better))
    if not isinstance(data.get("rows"), list):
        raise _fail(path, f"{where}.rows", "must be a list")
    names = [b.name for b in benchmarks]
    rows = tuple(_row(path, f"{where}.rows[{i}]", item, names) for i, item in enumerate(data["rows"]))
    seen: set[tuple[str, str, str | None, str]] = set()
    for i, row in enumerate(rows):
        key = (row.checkpoint, row.format, row.filename, row.mode)
        if key in seen:
            raise _fail(path, f"{where}.rows[{i}]", f"a second row for {row.checkpoint} {row.format} {row.mode}")
        seen.add(key)
    return PublishedSource(str(name), str(url), tuple(benchmarks), rows, _text(path, where, data, "settings",
                                                                              optional=True),
                           _text(path, where, data, "note", optional=True) or "")


def _row(path: Path, where: str, data: Any, benchmarks: list[str]) -> PublishedRow:
    if not isinstance(data, dict):
        raise _fail(path, where, "must be an object")
    mode = data.get("mode")
    if mode not in MODES:
        raise _fail(path, f"{where}.mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
    figures = data.get("figures")
    if not isinstance(figures, dict) or not figures:
        raise _fail(path, f"{where}.figures", "must be an object of figures by benchmark name")
    for name, value in figures.items():
        if name not in benchmarks:
            raise _fail(path, f"{where}.figures[{name!r}]", f"not one of the source's benchmarks ({', '.join(benchmarks)})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _fail(path, f"{where}.figures[{name!r}]", f"must be a number (leave a figure out when not "
                                                            f"reported), got {value!r}")
    return PublishedRow(checkpoint=str(_text(path, where, data, "checkpoint")), format=str(_text(path, where, data, "format")),
                        mode=mode, figures={name: figures[name] for name in benchmarks if name in figures},
                        label=_text(path, where, data, "label", optional=True) or "",
                        filename=_text(path, where, data, "filename", optional=True))


def markdown_lines(entries: list[tuple[str, list[dict[str, Any]]]]) -> list[str]:
    """The "Published figures" block: one line per entry and matching source (``PublishedMatch.
    to_dict``), naming and linking the source; empty when no entry has any."""
    lines = [_line(label, match) for label, matches in entries for match in matches]
    if not lines:
        return []
    return ["**Published figures** (what the source reports for the same checkpoint and mode; not measured here)",
            "", *lines]


def _line(label: str, match: dict[str, Any]) -> str:
    figures = match.get("figures", [])
    lower = [f for f in figures if not f.get("higher_is_better", True)]
    shown = " · ".join(f"{f['benchmark']} {f['value']:g}" + (" (lower is better)" if f in lower else "")
                       for f in figures)
    direction = "higher is better" + (" unless marked" if lower else "")
    settings = f"; settings: {match['settings']}" if match.get("settings") else ""
    row = f"`{match.get('checkpoint')}`, {match.get('label') or match.get('format')}, {match.get('mode')}"
    return f"- **{label}** ({row}): {shown} ({direction}{settings}) — [{match.get('source')}]({match.get('url')})"
