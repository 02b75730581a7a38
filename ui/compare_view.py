"""What the Compare tab shows, derived from a :class:`~core.compare.Comparison` alone.

Pure functions (no Gradio events, no model library): every column's chat messages in the chat
tab's style (reasoning panel, answer, stats note), the results table and the bar charts' data.
A live run passes each column's phase and measured reasoning time; an imported comparison is
rendered from its figures. With tools, a column shows every generation of its tool loop with each
round's calls after it (name, arguments, then the result or the error), and the table adds the
tool columns (``core.compare.TOOL_COLUMNS``).
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from backends.base import ModelInfo
from core.compare import BOUND_NOTE, Comparison, EntryResult, call_text
from core.compare import table_columns as core_table_columns
from core.events import GenerationStats
from core.messages import message_id, new_reply_id
from ui.formatting import (answer_message, error_message, finish_thought, note_message, stats_details, stats_message,
                           stopped_message, thought_message, user_message)

MAX_ENTRIES = 4
WAITING, LOADING, RUNNING, FINISHED = "waiting", "loading", "running", "finished"

# results table: the export's columns (core.compare.table_columns), then each entry's error
ERROR_COLUMN = (("error", "error"),)
TABLE_HEADERS = [header for _, header in core_table_columns(None, ERROR_COLUMN)]
REFERENCE = "ref"
_DIGITS = {"load_s": 2, "ttft_s": 3, "tokens_per_s": 1, "total_s": 2, "memory_mib": 1, "perplexity": 3,
           "weights_mib": 2, "kv_mib": 3, "other_mib": 1, "bandwidth_bound_tokens_per_s": 0,
           "kld_mean": 5, "kld_p99": 4, "kld_max": 4}


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


def _call_message(record: dict[str, Any], reply_id: str, live: bool) -> dict[str, Any]:
    """One tool call: what the model asked for in the title, the result (or error) below."""
    if not record.get("valid", True):
        title = f"Invalid tool call ({record.get('problem')}): {call_text(record)}"
    elif record.get("error"):
        title = f"Tool call failed ({record['error']}): {call_text(record)}"
    else:
        title = f"Tool call: {call_text(record)}"
    metadata: dict[str, Any] = {"id": message_id("tool_call", reply_id, record.get("id") or ""), "title": title,
                                "status": "done"}
    if record.get("result") is None:
        body = "Running…" if live else "Not run."
        metadata["status"] = "pending" if live else "done"
    else:
        body = record["result"]  # an error result says so itself ("Error: ...")
        metadata["duration"] = record.get("duration_s") or 0.0
    return {"role": "assistant", "content": body, "metadata": metadata}


def _reply(messages: list[dict[str, Any]], reply: EntryResult, summary: str, *, live: bool = False,
           thought_s: float | None = None, load_s: float | None = None, max_rounds: int | None = None) -> None:
    """One turn's reply (``reply``: its text, figures, calls): each generation's thought panel and
    answer with its round's calls after it, then a stats / error / stopped note (with tools: the
    figures of the whole turn)."""
    reply_id = new_reply_id()
    generations = [*reply.steps, {"reasoning": reply.reasoning, "answer": reply.answer, "stats": reply.stats}]
    stats, answer = reply.stats, reply.answer
    for number, generation in enumerate(generations, 1):
        final = number == len(generations)
        if generation["reasoning"]:
            thought = thought_message(generation["reasoning"], reply_id)
            if not final:
                finish_thought(thought, _reasoning_seconds(generation.get("stats")))
            elif not live or answer or stats is not None or reply.error or reply.stop_reason:
                seconds = thought_s if thought_s is not None and not reply.steps else _reasoning_seconds(stats)
                finish_thought(thought, seconds, cut_off=not answer and (stats is None or
                                                                          stats.get("finish_reason") != "stop"))
            messages.append(thought)
        if generation["answer"]:
            messages.append(answer_message(generation["answer"], reply_id))
        messages += [_call_message(c, reply_id, live) for c in reply.tool_calls if c["round"] == number]
    if reply.stop_reason == "round_limit":
        messages.append(note_message(f"Round limit: the model still called tools after {max_rounds or '?'} rounds; "
                                     "these calls did not run", reply_id))
    if stats is not None:
        figures = _stats(reply.turn_stats())
        details = stats_details(figures, summary)
        if reply.steps:
            details += f"\n\n{len(generations)} generations (tool rounds) in this turn: figures for all of them"
        if load_s is not None:
            details += f"\n\nLoad {load_s:.2f} s (0 when the model was already loaded)"
        messages.append(stats_message(figures, details, reply_id))
    elif reply.error:
        messages.append(error_message(reply.error, reply_id))
    elif reply.stop_reason == "stopped":
        messages.append(stopped_message(reply_id))


def column_messages(comparison: Comparison, index: int, phase: str = FINISHED,
                    thought_s: float | None = None) -> list[dict[str, Any]]:
    """Entry ``index``'s whole conversation as chat messages (earlier turns first)."""
    entry = comparison.entries[index]
    summary = _summary(entry)
    messages: list[dict[str, Any]] = []
    for turn in entry.turns:
        messages.append(user_message(turn["prompt"]))
        earlier = EntryResult(entry.label, entry.model, reasoning=turn.get("reasoning", ""),
                              answer=turn.get("answer", ""), stats=turn.get("stats"), error=turn.get("error"),
                              stop_reason=turn.get("stop_reason"), steps=turn.get("steps") or [],
                              tool_calls=turn.get("tool_calls") or [])
        _reply(messages, earlier, summary)
    if not entry.history or entry.history[-1]["role"] != "user":  # no turn yet (e.g. only perplexity)
        if entry.error:
            messages.append(error_message(entry.error, new_reply_id()))
        return messages
    messages.append(user_message(entry.history[-1]["content"]))
    if phase == WAITING:
        messages.append(note_message("Waiting for its turn (one entry after another)", new_reply_id()))
    elif phase == LOADING:
        messages.append(note_message("Loading the model…", new_reply_id()))
    _reply(messages, entry, summary, live=phase == RUNNING, thought_s=thought_s, load_s=entry.load_s,
           max_rounds=comparison.max_tool_rounds)
    return messages


# -- table and charts -----------------------------------------------------------------------
def _cell(key: str, value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key == "prefix_agreement":
        return f"{value:.0%}"
    if key in ("same_top_token", "share_of_bound"):
        return f"{value:.1%}"
    if key in _DIGITS and isinstance(value, (int, float)):
        return round(float(value), _DIGITS[key])
    return value


def table_columns(comparison: Comparison | None) -> list[tuple[str, str]]:
    """The results table's columns (``core.compare.table_columns``), each entry's error last."""
    return core_table_columns(comparison, ERROR_COLUMN)


def results_table(comparison: Comparison | None) -> pd.DataFrame:
    """``comparison.rows()`` with readable headers and rounded figures (agreement vs the first entry)."""
    rows = comparison.rows() if comparison else []
    columns = table_columns(comparison)
    data = [[REFERENCE if key == "final_answer_matches" and index == 0 else _cell(key, row.get(key))
             for key, _ in columns] for index, row in enumerate(rows)]
    return pd.DataFrame(data, columns=[header for _, header in columns]).astype(str)


def chart_data(comparison: Comparison | None, key: str) -> pd.DataFrame:
    """One figure per entry that has it (``tokens_per_s``, ``memory_mib``, ``kld_mean``), for a bar chart."""
    rows = comparison.rows() if comparison else []
    digits = max(2, _DIGITS.get(key, 2))  # KLD: small figures
    points = [(row["entry"], round(float(row[key]), digits)) for row in rows if row.get(key) is not None]
    # typed even when empty: the chart keeps the axis types of its first (empty) value
    return pd.DataFrame(points, columns=["entry", key]).astype({"entry": str, key: float})


MEMORY_KINDS: tuple[tuple[str, str], ...] = (("weights_mib", "weights"), ("kv_mib", "KV cache"), ("other_mib", "other"))


def kind_chart_data(comparison: Comparison | None) -> pd.DataFrame:
    """Memory by kind (weights, KV cache, other) per measured entry, long form for a stacked bar
    chart (``color="kind"``); a kind with no figure (other: shared process) is left out."""
    rows = comparison.rows() if comparison else []
    points = [(row["entry"], kind, round(float(row[key]), 3)) for row in rows for key, kind in MEMORY_KINDS
              if row.get(key) is not None]
    return pd.DataFrame(points, columns=["entry", "kind", "mib"]).astype({"entry": str, "kind": str, "mib": float})


def share_chart_data(comparison: Comparison | None) -> pd.DataFrame:
    """tokens/s as a percentage of each entry's bandwidth bound."""
    rows = comparison.rows() if comparison else []
    points = [(row["entry"], round(100 * float(row["share_of_bound"]), 4)) for row in rows
              if row.get("share_of_bound") is not None]
    return pd.DataFrame(points, columns=["entry", "share_pct"]).astype({"entry": str, "share_pct": float})


def published_note(comparison: Comparison | None) -> str:
    """The published figures beside the measured ones (under the table): one line per entry whose
    checkpoint and mode a source reports, naming and linking it; empty when none matches."""
    return comparison.published_note() if comparison is not None else ""


def measure_note(comparison: Comparison | None) -> str:
    """How the drift and bound figures were made (under their charts); empty without them."""
    if comparison is None:
        return ""
    notes = [comparison.drift_note()] if comparison.scored_drift else []
    return "\n\n".join(notes + ([BOUND_NOTE] if comparison.measured_memory else []))
