"""Pure display helpers: a reply's chat messages and stats lines (no Gradio state).

Each assistant message says what it is in its metadata ``id`` (``core.messages``): the reasoning
panel, the answer, and the note that ends the reply (figures, error, Stopped, Interrupted).
Titles are for reading only.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from core.continuation import stats_suffix
from core.events import GenerationStats
from core.messages import (ENDINGS, field, is_pending, kind_of, message_id, metadata_of, new_reply_id, reply_id_of,
                           tool_result_id)

THINKING_TITLE = "Thinking…"
THINKING_INFO = "Hard switch (enable_thinking). End a message with /think or /no_think for the soft switch."
ERROR_TITLE = "Error"
STOPPED_TITLE = "Stopped"
INTERRUPTED_TITLE = "Interrupted"
REPEATING_TITLE = "Stopped: repeating"
INTERRUPTED_NOTE = "The page was closed or reloaded before this reply ended; what had streamed is kept."
CUT_SHORT = "\n\nThe reply above was cut short by this error; what it had streamed is kept."


# -- chat messages ------------------------------------------------------------------------
def user_message(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def _assistant(kind: str, reply_id: str, content: str, **metadata: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content, "metadata": {"id": message_id(kind, reply_id), **metadata}}


def answer_message(text: str, reply_id: str) -> dict[str, Any]:
    return _assistant("answer", reply_id, text)


def thought_message(reasoning: str, reply_id: str) -> dict[str, Any]:
    """The reasoning panel while the model thinks: open, with a spinner."""
    return _assistant("reasoning", reply_id, reasoning, title=THINKING_TITLE, status="pending")


def finish_thought(message: dict[str, Any], seconds: float, cut_off: bool = False, stopped: bool = False) -> None:
    """Collapse the panel: "Thought for N s" (the reasoning it had is kept)."""
    seconds = round(max(seconds, 0.0), 1)
    title = "Thought (stopped)" if stopped else f"Thought for {seconds:g} s" + (" (cut off)" if cut_off else "")
    message["metadata"] = {"id": metadata_of(message).get("id"), "title": title, "status": "done",
                           "duration": seconds}


def stats_message(stats: GenerationStats | None, details: str, reply_id: str, made_with: str = "",
                  budget_cut: bool = False) -> dict[str, Any]:
    """The note under a finished reply: its figures in the title, how it was made (``made_with``:
    model, mode, sampling) beside it, the model's details in the body. Its id says when
    max_new_tokens ended the reply, or the thinking budget (``budget_cut``) its reasoning: it
    can be continued (``core.continuation``)."""
    message = _assistant("stats", reply_id, details, title=stats_line(stats), status="done",
                         **({"log": made_with} if made_with else {}))
    suffix = stats_suffix(stats.finish_reason if stats is not None else None, budget_cut)
    if suffix:
        message["metadata"]["id"] = message_id("stats", reply_id, suffix)
    return message


def made_with_line(model: str, thinking: bool, settings: Any) -> str:
    """What a reply was made with, in one line (on its figures note): so alternatives made with
    other settings read apart."""
    parts = [model, "thinking" if thinking else "no thinking", f"temperature {settings.temperature:g}",
             f"top_p {settings.top_p:g}", f"top_k {settings.top_k}", f"min_p {settings.min_p:g}"]
    if settings.presence_penalty:
        parts.append(f"presence_penalty {settings.presence_penalty:g}")
    if getattr(settings, "thinking_budget", 0) and thinking:
        parts.append(f"thinking budget {settings.thinking_budget:,}")
    parts.append(f"max {settings.max_new_tokens:,} new tokens")
    return " · ".join(parts)


def error_message(error: Exception | str, reply_id: str) -> dict[str, Any]:
    return _assistant("error", reply_id, str(error), title=ERROR_TITLE, status="done")


def stopped_message(reply_id: str) -> dict[str, Any]:
    return _assistant("stopped", reply_id, "", title=STOPPED_TITLE, status="done")


def repeating_message(loop: Any, stats: GenerationStats | None, details: str, reply_id: str,
                      presence_penalty: float | None = None, retry_penalty: float = 1.5) -> dict[str, Any]:
    """The note that ends a reply the loop guard stopped (``loop``: its ``LoopStopped``): what
    happened, what the retry changes, then the figures."""
    body = (f"The reply repeated the same {loop.period_chars} characters {loop.repeats} times, so the loop "
            "guard stopped it; what it wrote is kept. Quantized Qwen3 models sometimes loop like this.")
    if presence_penalty is not None and presence_penalty != retry_penalty:
        body += (f"\n\n**Retry with presence penalty {retry_penalty:g}** answers the last message again with "
                 f"presence_penalty {presence_penalty:g} → {retry_penalty:g} (the Qwen3 cards' advice against "
                 "endless repetition; the slider moves too).")
    else:
        body += (f"\n\npresence_penalty is already {retry_penalty:g} (the cards' advice): Regenerate tries another "
                 "seed, or turn the Loop guard off to let it run.")
    body += f"\n\n{stats_line(stats)}\n\n{details}"
    return _assistant("repeating", reply_id, body, title=REPEATING_TITLE, status="done")


def interrupted_message(reply_id: str) -> dict[str, Any]:
    return _assistant("interrupted", reply_id, INTERRUPTED_NOTE, title=INTERRUPTED_TITLE, status="done")


def note_message(title: str, reply_id: str, body: str = "") -> dict[str, Any]:
    """A passing note (e.g. "Loading the model…"): shown, never sent to the model."""
    return _assistant("note", reply_id, body, title=title, status="done")


# -- tool calls -----------------------------------------------------------------------------
RUN, SKIP = "run", "skip"
_OUTCOME = {"declined": " skipped", "cancelled": " stopped"}  # the values of a call's Run / Skip options ("run:<call id>")
PREVIEW_CHARS = 90
ERROR_LABELS = {"invalid_call": "the call did not parse", "unknown_tool": "unknown tool",
                "bad_arguments": "bad arguments", "tool_error": "the tool failed", "timeout": "timed out",
                "cancelled": "stopped", "declined": "skipped by you", "rate_limited": "rate limited"}


def fenced(text: str, language: str = "") -> str:
    """``text`` in a code fence longer than any run of backticks inside it (shown verbatim)."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text}\n{fence}"


def tool_call_message(call_id: str, name: str, arguments: Any, reply_id: str, awaiting: bool = False
                      ) -> dict[str, Any]:
    """A call while it runs (pending, "running…"), or waiting for the user's Run / Skip."""
    shown = json.dumps(arguments, ensure_ascii=False, indent=2) if isinstance(arguments, Mapping) else str(arguments)
    message = _assistant("tool_call", reply_id, fenced(shown, "json"), title=f"Tool call: {name}", status="pending",
                         log="waiting for you: Run or Skip" if awaiting else "running…")
    message["metadata"]["id"] = message_id("tool_call", reply_id, call_id)
    if awaiting:
        message["options"] = [{"value": f"{RUN}:{call_id}", "label": "▶ Run"},
                              {"value": f"{SKIP}:{call_id}", "label": "Skip"}]
    return message


def finish_tool_call(message: dict[str, Any], record: Mapping[str, Any]) -> None:
    """The call is done: its duration, and a one-line preview of the result (or what went wrong)."""
    error = record.get("error")
    if error:
        log = ERROR_LABELS.get(error, error)
    else:
        flat = " ".join(str(record.get("result", "")).split())
        log = flat[:PREVIEW_CHARS] + ("…" if len(flat) > PREVIEW_CHARS else "") or "(empty result)"
    message.pop("options", None)
    message["metadata"] = {"id": metadata_of(message).get("id"),
                           "title": f"Tool call{_OUTCOME.get(error, ' failed') if error else ''}: {record['name']}",
                           "status": "done", "duration": round(float(record.get("duration_s", 0.0)), 2), "log": log}


def tool_result_message(record: Mapping[str, Any], reply_id: str, parent_id: str) -> dict[str, Any]:
    """The full result, nested in its call (collapsed); its id carries the call record."""
    result = str(record.get("result", ""))
    error = record.get("error")
    title = f"Error: {ERROR_LABELS.get(error, error)}" if error else \
        f"Result · {len(result):,} characters" + (" (truncated to the size cap)" if record.get("truncated") else "")
    return {"role": "assistant", "content": fenced(result),
            "metadata": {"id": tool_result_id(reply_id, dict(record)), "parent_id": parent_id, "title": title,
                         "status": "done"}}


def _last_reply_id(history: Sequence[Any]) -> str:
    last = history[-1] if history else None
    return (reply_id_of(last) if last is not None else None) or new_reply_id()


def close_reply(history: Sequence[Any], ending: str) -> list[Any]:
    """After Stop (``ending`` "stopped") or a reload mid-reply ("interrupted"): reasoning panels
    still spinning are closed (their text is kept), and a reply without its ending note gets one."""
    out = []
    for message in history or []:
        if is_pending(message):
            message = {"role": "assistant", "content": field(message, "content"), "metadata": dict(metadata_of(message))}
            if kind_of(message) == "tool_call":  # it never ran, or its result never came
                message["metadata"].update(status="done", log="stopped" if ending == "stopped" else "interrupted")
            else:
                finish_thought(message, 0.0, stopped=ending == "stopped")
                if ending == "interrupted":
                    message["metadata"]["title"] = "Thought (interrupted)"
        out.append(message)
    if out and kind_of(out[-1]) not in ENDINGS:
        rid = _last_reply_id(out)
        out.append(stopped_message(rid) if ending == "stopped" else interrupted_message(rid))
    return out


def split_last_turn(history: Sequence[Any]) -> tuple[list[Any], Any | None]:
    """(history before the last user message, that message's content) for Regenerate."""
    messages = list(history or [])
    while messages and field(messages[-1], "role") != "user":
        messages.pop()
    if not messages:
        return [], None
    last = messages.pop()
    return messages, field(last, "content")


# -- statistics and model info -------------------------------------------------------------
def stats_line(stats: GenerationStats | None) -> str:
    """prompt tokens · completion tokens · time to first token · tokens/s."""
    if stats is None:
        return "no statistics"
    ttft = f"{stats.ttft_s:.2f} s" if stats.ttft_s is not None else "–"
    speed = f"{stats.tokens_per_s:.1f} tokens/s" if stats.tokens_per_s else "– tokens/s"
    line = (f"{stats.prompt_tokens} prompt · {stats.completion_tokens} completion tokens · "
            f"first token {ttft} · {speed}")
    if stats.finish_reason != "stop":
        line += f" · {'stopped' if stats.finish_reason == 'cancelled' else 'hit max new tokens'}"
    return line


def stats_details(stats: GenerationStats | None, model_summary: str, seed: int | None = None) -> str:
    parts = [f"Model: {model_summary}"]
    if stats is not None:
        parts.append(f"Total {stats.total_s:.2f} s, finish reason: {stats.finish_reason}")
        if stats.cached_prompt_tokens:
            parts.append(f"{stats.cached_prompt_tokens} prompt tokens from cache")
    if seed is not None:
        parts.append(f"Seed {seed} (send it again with this seed to get the same reply)")
    return "\n\n".join(parts)


def preset_status(name: str | None, customised: bool, description: str = "") -> str:
    if not name:
        return "Preset: none (custom values)"
    text = f"Preset: **{name}**" + (" — *customised*" if customised else "")
    return text + (f"  \n<small>{description}</small>" if description and not customised else "")
