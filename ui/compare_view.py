"""What the Compare tab shows, derived from a :class:`~core.compare.Comparison` alone.

Pure functions (no Gradio events, no model library): every column's chat messages in the chat
tab's style (reasoning panel, answer, stats note), the results table and the bar charts' data.
A live run passes each column's phase and measured reasoning time; an imported comparison is
rendered from its figures.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from backends.base import ModelInfo
from core.compare import Comparison, EntryResult
from core.events import GenerationStats
from core.messages import new_reply_id
from ui.formatting import (answer_message, error_message, finish_thought, note_message, stats_details, stats_message,
                           stopped_message, thought_message, user_message)

MAX_ENTRIES = 4
WAITING, LOADING, RUNNING, FINISHED = "waiting", "loading", "running", "finished"

# results table: (rows() key, column header)
TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("entry", "entry"), ("load_s", "load s"), ("ttft_s", "TTFT s"), ("tokens_per_s", "tokens/s"),
    ("reasoning_tokens", "reasoning tok"), ("answer_tokens", "answer tok"), ("total_s", "total s"),
    ("memory_mib", "memory MiB"), ("prefix_agreement", "agreement"), ("answer_matches", "same answer"),
    ("perplexity", "perplexity"), ("error", "error"),
)
TABLE_HEADERS = [header for _, header in TABLE_COLUMNS]
_DIGITS = {"load_s": 2, "ttft_s": 3, "tokens_per_s": 1, "total_s": 2, "memory_mib": 1, "perplexity": 3}


# -- columns --------------------------------------------------------------------------------
def _stats(data: dict[str, Any] | None) -> GenerationStats | None:
    return GenerationStats(**data) if data else None


def _reasoning_seconds(stats: dict[str, Any] | None) -> float:
    """How long the model reasoned, from its figures: first token + reasoning tokens at its speed."""
    if not stats:
        return 0.0
    ttft, speed, tokens = stats.get("ttft_s") or 0.0, stats.get("tokens_per_s"), stats.get("reasoning_tokens")
    if speed and tokens:
        return ttft + max(tokens - 1, 0) / speed
    return stats.get("total_s") or 0.0


def _summary(entry: EntryResult) -> str:
    if not entry.info:
        return entry.model
    try:
        return ModelInfo(**entry.info).summary()
    except TypeError:  # an export from another version: show what it says
        return str(entry.info.get("model", entry.model))


def _reply(messages: list[dict[str, Any]], reasoning: str, answer: str, stats: dict[str, Any] | None,
           error: str | None, stop_reason: str | None, summary: str, *, live: bool = False,
           thought_s: float | None = None, load_s: float | None = None) -> None:
    """One turn's reply: thought panel, answer, then a stats / error / stopped note."""
    reply_id = new_reply_id()
    if reasoning:
        thought = thought_message(reasoning, reply_id)
        if not live or answer or stats is not None or error or stop_reason:
            seconds = thought_s if thought_s is not None else _reasoning_seconds(stats)
            finish_thought(thought, seconds, cut_off=not answer and (stats is None or
                                                                      stats.get("finish_reason") != "stop"))
        messages.append(thought)
    if answer:
        messages.append(answer_message(answer, reply_id))
    if stats is not None:
        details = stats_details(_stats(stats), summary)
        if load_s is not None:
            details += f"\n\nLoad {load_s:.2f} s (0 when the model was already loaded)"
        messages.append(stats_message(_stats(stats), details, reply_id))
    elif error:
        messages.append(error_message(error, reply_id))
    elif stop_reason == "stopped":
        messages.append(stopped_message(reply_id))


def column_messages(comparison: Comparison, index: int, phase: str = FINISHED,
                    thought_s: float | None = None) -> list[dict[str, Any]]:
    """Entry ``index``'s whole conversation as chat messages (earlier turns first)."""
    entry = comparison.entries[index]
    summary = _summary(entry)
    messages: list[dict[str, Any]] = []
    for turn in entry.turns:
        messages.append(user_message(turn["prompt"]))
        _reply(messages, turn.get("reasoning", ""), turn.get("answer", ""), turn.get("stats"), turn.get("error"),
               turn.get("stop_reason"), summary)
    if not entry.history or entry.history[-1]["role"] != "user":  # no turn yet (e.g. only perplexity)
        if entry.error:
            messages.append(error_message(entry.error, new_reply_id()))
        return messages
    messages.append(user_message(entry.history[-1]["content"]))
    if phase == WAITING:
        messages.append(note_message("Waiting for its turn (one entry after another)", new_reply_id()))
    elif phase == LOADING:
        messages.append(note_message("Loading the model…", new_reply_id()))
    _reply(messages, entry.reasoning, entry.answer, entry.stats, entry.error, entry.stop_reason, summary,
           live=phase == RUNNING, thought_s=thought_s, load_s=entry.load_s)
    return messages


# -- table and charts -----------------------------------------------------------------------
def _cell(key: str, value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key == "prefix_agreement":
        return f"{value:.0%}"
    if key in _DIGITS and isinstance(value, (int, float)):
        return round(float(value), _DIGITS[key])
    return value


def results_table(comparison: Comparison | None) -> pd.DataFrame:
    """``comparison.rows()`` with readable headers and rounded figures (agreement vs the first entry)."""
    rows = comparison.rows() if comparison else []
    data = [[_cell(key, row.get(key)) for key, _ in TABLE_COLUMNS] for row in rows]
    return pd.DataFrame(data, columns=TABLE_HEADERS).astype(str)


def chart_data(comparison: Comparison | None, key: str) -> pd.DataFrame:
    """One figure per entry that has it (``tokens_per_s`` or ``memory_mib``), for a bar chart."""
    rows = comparison.rows() if comparison else []
    points = [(row["entry"], round(float(row[key]), 2)) for row in rows if row.get(key) is not None]
    # typed even when empty: the chart keeps the axis types of its first (empty) value
    return pd.DataFrame(points, columns=["entry", key]).astype({"entry": str, key: float})
