"""Side-by-side comparison results: per-entry replies, agreement with a reference, export.

Agreement is measured on word-level tokens (words and punctuation), so that entries with
different tokenizers (transformers vs GGUF vs a server) compare on the same units.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from core.events import AnswerDelta, ChatEvent, GenerationStats, ReasoningDelta

_WORDS = re.compile(r"\w+|[^\w\s]")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


@dataclass
class EntryResult:
    """One column: which model, what it said, and its figures."""

    label: str
    model: str
    backend: str = ""
    yarn_factor: float = 1.0
    reasoning: str = ""
    answer: str = ""
    stats: dict[str, Any] | None = None
    info: dict[str, Any] | None = None
    load_s: float | None = None
    error: str | None = None
    stop_reason: str | None = None  # "stopped" (Stop) or "error" when the reply ended early
    perplexity: dict[str, Any] | None = None
    history: list[dict[str, str]] = field(default_factory=list)  # this column's own conversation
    # earlier turns of a multi-turn comparison: {"prompt", "reasoning", "answer", "stats", "error", "stop_reason"}
    turns: list[dict[str, Any]] = field(default_factory=list)

    def add(self, event: ChatEvent) -> None:
        if isinstance(event, ReasoningDelta):
            self.reasoning += event.text
        elif isinstance(event, AnswerDelta):
            self.answer += event.text
        elif isinstance(event, GenerationStats):
            self.stats = event.to_dict()

    @property
    def output(self) -> str:
        """Everything the model wrote, reasoning first (what greedy agreement compares)."""
        return f"{self.reasoning}\n{self.answer}" if self.reasoning else self.answer


def words(text: str) -> list[str]:
    return _WORDS.findall(text)


def prefix_agreement(reference: str, other: str) -> float:
    """Share of identical word-level tokens at the start of two outputs (1.0 = identical)."""
    a, b = words(reference), words(other)
    if not a and not b:
        return 1.0
    same = 0
    for x, y in zip(a, b):
        if x != y:
            break
        same += 1
    return same / max(len(a), len(b))


def final_answer(answer: str) -> str:
    """The comparable core of an answer: the last \\boxed{...} if any, else the normalised text."""
    boxed = _BOXED.findall(answer)
    text = boxed[-1] if boxed else answer
    return " ".join(text.split()).strip().rstrip(".").casefold()


@dataclass
class Comparison:
    prompt: str
    settings: dict[str, Any]
    thinking: bool
    system_prompt: str = ""
    entries: list[EntryResult] = field(default_factory=list)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def start_turn(self, prompt: str) -> list[list[dict[str, str]]]:
        """Add the user's message to every column's own conversation; return the histories."""
        for entry in self.entries:
            if entry.history and entry.history[-1]["role"] == "user":  # close the previous turn
                entry.turns.append({"prompt": entry.history[-1]["content"], "reasoning": entry.reasoning,
                                    "answer": entry.answer, "stats": entry.stats, "error": entry.error,
                                    "stop_reason": entry.stop_reason})
                if entry.stats is not None:
                    entry.history.append({"role": "assistant", "content": entry.answer})
                else:
                    entry.history.pop()  # it failed: there is no answer to continue from
            entry.history.append({"role": "user", "content": prompt})
            entry.reasoning = entry.answer = ""
            entry.stats = entry.error = entry.stop_reason = None
        self.prompt = prompt
        return [list(entry.history) for entry in self.entries]

    def rows(self) -> list[dict[str, Any]]:
        """The results table: one row per entry, agreement against the first entry."""
        reference = self.entries[0] if self.entries else None
        rows = []
        for entry in self.entries:
            stats = entry.stats or {}
            completion = stats.get("completion_tokens")
            reasoning_tokens = stats.get("reasoning_tokens")
            ok = entry.error is None and entry.stats is not None
            ref_ok = reference is not None and reference.error is None and reference.stats is not None
            rows.append({
                "entry": entry.label,
                "load_s": entry.load_s,
                "ttft_s": stats.get("ttft_s"),
                "tokens_per_s": stats.get("tokens_per_s"),
                "reasoning_tokens": reasoning_tokens,
                "answer_tokens": (completion - reasoning_tokens) if completion is not None and reasoning_tokens is not None else None,
                "total_s": stats.get("total_s"),
                "memory_mib": round(entry.info["memory_bytes"] / 2**20, 1) if entry.info else None,
                "prefix_agreement": prefix_agreement(reference.output, entry.output) if ok and ref_ok else None,
                "answer_matches": final_answer(reference.answer) == final_answer(entry.answer) if ok and ref_ok else None,
                "perplexity": entry.perplexity["perplexity"] if entry.perplexity else None,
                "error": entry.error or entry.stop_reason,
            })
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "table": self.rows()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Comparison:
        entries = [EntryResult(**_upgrade_entry(e)) for e in data.get("entries", [])]
        return cls(prompt=data["prompt"], settings=data["settings"], thinking=data["thinking"],
                   system_prompt=data.get("system_prompt", ""), entries=entries,
                   created=data.get("created", ""))

    def to_markdown(self) -> str:
        lines = [f"# Comparison ({self.created})", "", f"**Prompt:** {self.prompt}", ""]
        if self.system_prompt:
            lines += [f"**System prompt:** {self.system_prompt}", ""]
        settings = ", ".join(f"{k}={v}" for k, v in self.settings.items())
        lines += [f"**Thinking:** {'on' if self.thinking else 'off'} · **Settings:** {settings}", "",
                  "| entry | load s | TTFT s | tokens/s | reasoning tok | answer tok | total s | memory MiB | agreement | same answer | perplexity |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for row in self.rows():
            lines.append("| " + " | ".join(_cell(k, row[k]) for k in (
                "entry", "load_s", "ttft_s", "tokens_per_s", "reasoning_tokens", "answer_tokens", "total_s",
                "memory_mib", "prefix_agreement", "answer_matches", "perplexity")) + " |")
        for entry in self.entries:
            lines += ["", f"## {entry.label}", ""]
            for number, turn in enumerate(entry.turns, 1):
                lines += [f"### Turn {number}: {turn['prompt']}", ""]
                if turn.get("error"):
                    lines += [f"**Error:** {turn['error']}", ""]
                if turn.get("reasoning"):
                    lines += ["<details><summary>Reasoning</summary>", "", turn["reasoning"], "", "</details>", ""]
                lines += [turn.get("answer") or "_(no answer)_", ""]
            if entry.turns:
                lines += [f"### Turn {len(entry.turns) + 1}: {self.prompt}", ""]
            if entry.error:
                lines += [f"**Error:** {entry.error}", ""]
            if entry.reasoning:
                lines += ["<details><summary>Reasoning</summary>", "", entry.reasoning, "", "</details>", ""]
            lines += [entry.answer or "_(no answer)_"]
        return "\n".join(lines) + "\n"


def _upgrade_entry(data: dict[str, Any]) -> dict[str, Any]:
    """An entry of an earlier export: a stopped entry said so in its error field."""
    if data.get("error") == "stopped" and "stop_reason" not in data:
        return {**data, "error": None, "stop_reason": "stopped"}
    return data


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key == "prefix_agreement":
        return f"{value:.0%}"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value).replace("|", "\\|")
