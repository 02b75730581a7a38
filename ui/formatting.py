"""Pure display helpers: chat messages, stats lines, settings <-> widget values (no Gradio state)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from core.events import GenerationStats
from core.settings import GenerationSettings

# The widgets that carry GenerationSettings, in the order of the API's parameters.
SETTING_FIELDS: tuple[str, ...] = GenerationSettings.field_names()
RANDOM_SEED = -1  # the seed box's value for "a fresh random seed per reply"

THINKING_TITLE = "Thinking…"
THINKING_INFO = "Hard switch (enable_thinking). End a message with /think or /no_think for the soft switch."
ERROR_TITLE = "Error"
STOPPED_TITLE = "Stopped"


# -- chat messages ------------------------------------------------------------------------
def user_message(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def answer_message(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


def thought_message(reasoning: str) -> dict[str, Any]:
    """The reasoning panel while the model thinks: open, with a spinner."""
    return {"role": "assistant", "content": reasoning,
            "metadata": {"title": THINKING_TITLE, "status": "pending"}}


def finish_thought(message: dict[str, Any], seconds: float, cut_off: bool = False) -> None:
    """Collapse the panel: "Thought for N s" (the reasoning it had is kept)."""
    seconds = round(max(seconds, 0.0), 1)
    title = f"Thought for {seconds:g} s" + (" (cut off)" if cut_off else "")
    message["metadata"] = {"title": title, "status": "done", "duration": seconds}


def info_message(title: str, body: str = "") -> dict[str, Any]:
    """A note under a reply (stats, errors). Its ``metadata.title`` keeps it out of the prompt."""
    return {"role": "assistant", "content": body, "metadata": {"title": title, "status": "done"}}


def error_message(error: Exception | str) -> dict[str, Any]:
    return {"role": "assistant", "content": str(error), "metadata": {"title": ERROR_TITLE}}


def is_pending_thought(message: Any) -> bool:
    metadata = _field(message, "metadata") or {}
    return isinstance(metadata, Mapping) and metadata.get("status") == "pending"


def _field(message: Any, name: str) -> Any:
    return message.get(name) if isinstance(message, Mapping) else getattr(message, name, None)


def close_pending_thoughts(history: Sequence[Any]) -> list[Any]:
    """After a Stop: panels still spinning become "stopped" (their text is kept), and a reply
    that was cut short (no stats note after it yet) gets a "Stopped" note."""
    out = []
    for message in history or []:
        if is_pending_thought(message):
            message = {"role": "assistant", "content": _field(message, "content"),
                       "metadata": {"title": "Thought (stopped)", "status": "done"}}
        out.append(message)
    if out and (_field(out[-1], "role") == "user" or not (_field(out[-1], "metadata") or {}).get("title")
                or (_field(out[-1], "metadata") or {}).get("title") == "Thought (stopped)"):
        out.append(info_message(STOPPED_TITLE))
    return out


def split_last_turn(history: Sequence[Any]) -> tuple[list[Any], Any | None]:
    """(history before the last user message, that message's content) for Regenerate."""
    messages = list(history or [])
    while messages and _field(messages[-1], "role") != "user":
        messages.pop()
    if not messages:
        return [], None
    last = messages.pop()
    return messages, _field(last, "content")


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


def stats_details(stats: GenerationStats | None, model_summary: str) -> str:
    parts = [f"Model: {model_summary}"]
    if stats is not None:
        parts.append(f"Total {stats.total_s:.2f} s, finish reason: {stats.finish_reason}")
        if stats.cached_prompt_tokens:
            parts.append(f"{stats.cached_prompt_tokens} prompt tokens from cache")
    return "\n\n".join(parts)


# -- settings widgets ----------------------------------------------------------------------
def settings_to_values(settings: GenerationSettings) -> list[Any]:
    """Widget values for ``settings`` (seed None shows as -1, "random")."""
    values = settings.to_dict()
    if values["seed"] is None:
        values["seed"] = RANDOM_SEED
    return [values[name] for name in SETTING_FIELDS]


def values_to_settings(*values: Any) -> GenerationSettings:
    """Widget values -> GenerationSettings (not validated here: the core validates)."""
    raw = dict(zip(SETTING_FIELDS, values))
    seed = raw.get("seed")
    raw["seed"] = None if seed is None or seed == "" or float(seed) < 0 else int(seed)
    for name in ("top_k", "max_new_tokens"):
        if raw.get(name) is not None and float(raw[name]) == int(float(raw[name])):
            raw[name] = int(float(raw[name]))
    return GenerationSettings().with_updates(**raw)


def preset_status(name: str | None, customised: bool, description: str = "") -> str:
    if not name:
        return "Preset: none (custom values)"
    text = f"Preset: **{name}**" + (" — *customised*" if customised else "")
    return text + (f"  \n<small>{description}</small>" if description and not customised else "")
