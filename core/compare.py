"""Side-by-side comparison results: per-entry replies, agreement with a reference, export.

Agreement is measured on word-level tokens (words and punctuation), so that entries with
different tokenizers (transformers vs GGUF vs a server) compare on the same units.

With tools, every entry runs its own tool loop: an entry keeps each call it made (checked by the
runner: :class:`CallCheck`) with its result, and the generations before its final one
(``steps``); the table adds calls, valid calls, rounds and whether the final answer matches the
first entry's.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from core.events import AnswerDelta, ChatEvent, GenerationStats, LoopStopped, ReasoningDelta, ThinkingBudgetReached
from core.published import markdown_lines
from core.speed_bound import WeightProfile, bound_tokens_per_s, memory_split, share_of_bound
from core.tools import ReasoningCut, RoundLimitReached, RoundStarted, Toolbox, ToolResult

_WORDS = re.compile(r"\w+|[^\w\s]")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_INVALID = ("invalid_call", "unknown_tool", "bad_arguments")  # the toolbox's errors for a call that is not valid


@dataclass(frozen=True)
class CallCheck:
    """A tool call the model wrote, checked against the offered tools (the comparison runner
    yields it after the call): ``problem`` is None for a valid call (it parsed, names an offered
    tool, its arguments fit the tool's schema), else why it is not."""

    call_id: str
    name: str | None
    arguments: dict[str, Any] | None  # None: the call did not parse
    problem: str | None
    raw: str = ""  # the model's text of a call that did not parse


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
    # "stopped" (Stop), "error" or "repeating" (the loop guard) when the reply ended early;
    # "round_limit" when the model still called tools after the last round
    stop_reason: str | None = None
    perplexity: dict[str, Any] | None = None
    # drift from the first entry on a text (``core.drift.Drift.to_dict``): kld_mean, kld_p99,
    # kld_max, same_top_token, perplexity, tokens, context, stride, top_k
    drift: dict[str, Any] | None = None
    # after the reply (``playground.compare.EntryMemory.to_dict``): the model's weight profile, what
    # the process gained, the device's memory bandwidth
    memory: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)  # this column's own conversation
    # earlier turns of a multi-turn comparison: {"prompt", "reasoning", "answer", "stats", "error",
    # "stop_reason", "steps", "tool_calls"}
    turns: list[dict[str, Any]] = field(default_factory=list)
    # with tools: this turn's calls, in order, as ``app.py chat --json`` lists them plus the check:
    # {"id", "name", "arguments", "raw", "valid", "problem", "result", "error", "round", "duration_s",
    # "truncated"} ("result" None: it did not run)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    # with tools: the generations before the current (final) one: {"reasoning", "answer", "stats"};
    # ``reasoning`` / ``answer`` / ``stats`` above are the current generation's
    steps: list[dict[str, Any]] = field(default_factory=list)
    budget_cut: bool = False  # the thinking budget ended this turn's reasoning (in any round)
    # what sources published for this entry's checkpoint in the comparison's mode
    # (``core.published.PublishedMatch.to_dict``; set by ``playground.compare.add_published``)
    published: list[dict[str, Any]] | None = None

    def add(self, event: ChatEvent | CallCheck) -> None:
        if isinstance(event, ReasoningDelta):
            self.reasoning += event.text
        elif isinstance(event, AnswerDelta):
            self.answer += event.text
        elif isinstance(event, GenerationStats):
            self.stats = event.to_dict()
        elif isinstance(event, ReasoningCut):
            self.reasoning, self.answer = event.reasoning, self.answer + event.answer
        elif isinstance(event, CallCheck):
            self.tool_calls.append({"id": event.call_id, "name": event.name, "arguments": event.arguments,
                                    "raw": event.raw, "valid": event.problem is None, "problem": event.problem,
                                    "result": None, "error": None, "round": self.round, "duration_s": None,
                                    "truncated": False})
        elif isinstance(event, ToolResult):
            self._add_result(event)
        elif isinstance(event, RoundStarted):
            self.steps.append({"reasoning": self.reasoning, "answer": self.answer, "stats": self.stats})
            self.reasoning, self.answer, self.stats = "", "", None
        elif isinstance(event, RoundLimitReached):
            self.stop_reason = "round_limit"
        elif isinstance(event, LoopStopped):
            self.stop_reason = "repeating"
        elif isinstance(event, ThinkingBudgetReached):
            self.budget_cut = True

    def _add_result(self, result: ToolResult) -> None:
        waiting = [c for c in self.tool_calls if c["round"] == self.round and c["result"] is None]
        record = next((c for c in waiting if c["id"] == result.call_id), waiting[0] if waiting else None)
        if record is None:  # a result without its check (not from the comparison runner)
            invalid = result.error in _INVALID
            record = {"id": result.call_id, "name": result.name, "arguments": result.arguments, "raw": "",
                      "valid": not invalid, "problem": result.error if invalid else None, "round": self.round}
            self.tool_calls.append(record)
        record.update(result=result.content, error=result.error, duration_s=round(result.duration_s, 3),
                      truncated=result.truncated)

    @property
    def round(self) -> int:
        """The current generation's number in this turn's tool loop (1 without tools)."""
        return len(self.steps) + 1

    @property
    def generated(self) -> bool:
        """This turn produced something to count (the model ran)."""
        return self.stats is not None or bool(self.steps or self.tool_calls)

    @property
    def output(self) -> str:
        """Everything the model wrote, reasoning first (what greedy agreement compares); with
        tools, every generation of the turn with its calls."""
        if not self.steps and not self.tool_calls:
            return f"{self.reasoning}\n{self.answer}" if self.reasoning else self.answer
        generations = [*self.steps, {"reasoning": self.reasoning, "answer": self.answer}]
        parts: list[str] = []
        for number, generation in enumerate(generations, 1):
            parts += [generation["reasoning"], generation["answer"]]
            parts += [call_text(c) for c in self.tool_calls if c["round"] == number]
        return "\n".join(part for part in parts if part)

    def turn_stats(self) -> dict[str, Any] | None:
        """The figures of this turn: the generation's, or with tools all of them together (time
        to first token of the first, tokens summed, decode speed over all, total time including
        the tools' time). None until the final generation has its figures."""
        if self.stats is None or not self.steps:
            return self.stats
        generations = [s["stats"] for s in self.steps if s.get("stats")] + [self.stats]
        reasoning = [g.get("reasoning_tokens") for g in generations]
        decoded = sum(max(g["completion_tokens"] - 1, 0) for g in generations if g.get("tokens_per_s"))
        decode_s = sum(max(g["completion_tokens"] - 1, 0) / g["tokens_per_s"] for g in generations
                       if g.get("tokens_per_s"))
        tools_s = sum(c["duration_s"] or 0.0 for c in self.tool_calls)
        return {**self.stats,
                "prompt_tokens": sum(g["prompt_tokens"] for g in generations),
                "completion_tokens": sum(g["completion_tokens"] for g in generations),
                "reasoning_tokens": None if None in reasoning else sum(reasoning),
                "ttft_s": generations[0].get("ttft_s"),
                "tokens_per_s": decoded / decode_s if decode_s else None,
                "total_s": sum(g["total_s"] for g in generations) + tools_s}

    def exchange(self) -> list[dict[str, Any]]:
        """This turn's reply as it goes back to the model in a follow-up: with tools, each earlier
        generation with its calls and their results (OpenAI's format), then the final answer."""
        messages: list[dict[str, Any]] = []
        for number, step in enumerate(self.steps, 1):
            calls = [c for c in self.tool_calls if c["round"] == number]
            messages.append({"role": "assistant", "content": step["answer"],
                             "tool_calls": [_openai_call(c) for c in calls]})
            messages += [{"role": "tool", "tool_call_id": c["id"], "content": c["result"]}
                         for c in calls if c["result"] is not None]
        return [*messages, {"role": "assistant", "content": self.answer}]


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


def call_text(record: dict[str, Any]) -> str:
    """A call as the model made it: ``name {"arg": ...}`` (its own text if it did not parse)."""
    if record.get("arguments") is None:
        return record.get("raw") or f"{record.get('name') or '?'} (did not parse)"
    return f"{record.get('name')} {json.dumps(record['arguments'], ensure_ascii=False)}"


def call_outcome(record: dict[str, Any]) -> str:
    """What came of a call: its result, its error, or that it never ran."""
    if record.get("result") is None:
        return "not run"
    if record.get("error"):
        return f"**{record['error']}**: {record['result']}"
    return record["result"]


def _openai_call(record: dict[str, Any]) -> dict[str, Any]:
    arguments = record.get("raw", "") if record.get("arguments") is None else \
        json.dumps(record["arguments"], ensure_ascii=False)
    return {"id": record.get("id") or "", "type": "function",
            "function": {"name": record.get("name") or "", "arguments": arguments}}


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
    tools: list[str] | None = None  # the tools offered in the current turn (None: no tools)
    max_tool_rounds: int | None = None

    @property
    def uses_tools(self) -> bool:
        return self.tools is not None

    @property
    def thinking_budget(self) -> int:
        """The thinking budget every entry had (0: none, or thinking off)."""
        return int(self.settings.get("thinking_budget") or 0) if self.thinking else 0

    def start_turn(self, prompt: str, toolbox: Toolbox | None = None) -> list[list[dict[str, Any]]]:
        """Add the user's message to every column's own conversation; return the histories.
        ``toolbox``: the tools this turn offers (every entry runs its own tool loop with them)."""
        for entry in self.entries:
            if entry.history and entry.history[-1]["role"] == "user":  # close the previous turn
                entry.turns.append({"prompt": entry.history[-1]["content"], "reasoning": entry.reasoning,
                                    "answer": entry.answer, "stats": entry.stats, "error": entry.error,
                                    "stop_reason": entry.stop_reason, "steps": entry.steps,
                                    "tool_calls": entry.tool_calls, "budget_cut": entry.budget_cut})
                if entry.stats is not None:
                    entry.history += entry.exchange()
                else:
                    entry.history.pop()  # it failed: there is no answer to continue from
            entry.history.append({"role": "user", "content": prompt})
            entry.reasoning = entry.answer = ""
            entry.stats = entry.error = entry.stop_reason = None
            entry.steps, entry.tool_calls = [], []
            entry.budget_cut = False
        names = [spec.name for spec in toolbox.specs()] if toolbox is not None else []
        self.tools = names or None  # a toolbox offering nothing: no tools (as ChatRequest.build)
        self.max_tool_rounds = toolbox.max_rounds if names else None
        self.prompt = prompt
        return [list(entry.history) for entry in self.entries]

    def rows(self) -> list[dict[str, Any]]:
        """The results table: one row per entry, agreement against the first entry. With tools
        (``uses_tools``): the figures cover every generation of the turn, and ``tool_calls``,
        ``valid_calls``, ``rounds`` and ``final_answer_matches`` (None for the reference) follow
        ``answer_matches``. With a thinking budget: ``budget_cut`` after ``reasoning_tokens``. When
        some entry has published figures (``has_published``): ``published``, the entry's list."""
        reference = self.entries[0] if self.entries else None
        rows = []
        for index, entry in enumerate(self.entries):
            stats = entry.turn_stats() or {}
            completion = stats.get("completion_tokens")
            reasoning_tokens = stats.get("reasoning_tokens")
            ok = entry.error is None and entry.stats is not None
            ref_ok = reference is not None and reference.error is None and reference.stats is not None
            same = final_answer(reference.answer) == final_answer(entry.answer) if ok and ref_ok else None
            tools: dict[str, Any] = {}
            if self.uses_tools:
                ran = entry.generated
                tools = {"tool_calls": len(entry.tool_calls) if ran else None,
                         "valid_calls": sum(c["valid"] for c in entry.tool_calls) if ran else None,
                         "rounds": entry.round if ran else None,
                         "final_answer_matches": same if index else None}
            rows.append({
                "entry": entry.label,
                "load_s": entry.load_s,
                "ttft_s": stats.get("ttft_s"),
                "tokens_per_s": stats.get("tokens_per_s"),
                "reasoning_tokens": reasoning_tokens,
                **({"budget_cut": entry.budget_cut if entry.generated else None} if self.thinking_budget else {}),
                "answer_tokens": (completion - reasoning_tokens) if completion is not None and reasoning_tokens is not None else None,
                "total_s": stats.get("total_s"),
                "memory_mib": round(entry.info["memory_bytes"] / 2**20, 1) if entry.info else None,
                "prefix_agreement": prefix_agreement(reference.output, entry.output) if ok and ref_ok else None,
                "answer_matches": same,
                **tools,
                **(_drift_cells(entry) if self.scored_drift else {}),
                **(_bound_cells(entry, stats) if self.measured_memory else {}),
                "perplexity": _perplexity(entry),
                **({"published": entry.published or []} if self.has_published else {}),
                "error": entry.error or entry.stop_reason,
            })
        return rows

    @property
    def measured_memory(self) -> bool:
        """Some entry has a weight profile: the table has memory by kind and the speed bound."""
        return any(entry.memory and entry.memory.get("profile") for entry in self.entries)

    @property
    def has_published(self) -> bool:
        """Some entry's checkpoint has published figures (``core.published``)."""
        return any(entry.published for entry in self.entries)

    def published_note(self) -> str:
        """The published figures block (under the table); empty when no entry has any."""
        return "\n".join(markdown_lines([(entry.label, entry.published or []) for entry in self.entries]))

    @property
    def scored_drift(self) -> bool:
        """Some entry has drift figures: the table has their columns."""
        return any(entry.drift for entry in self.entries)

    def drift_note(self) -> str:
        """How the drift figures were made (under the table)."""
        scored = next((entry.drift for entry in self.entries if entry.drift), None)
        if scored is None:
            return ""
        return (f"Drift vs {self.entries[0].label} on {scored.get('tokens')} tokens (perplexity on the same tokens): "
                f"windows of {scored.get('context')} tokens, stride {scored.get('stride')}; KL divergence over the "
                f"reference's top {scored.get('top_k')} tokens plus the rest as one bin (a lower bound of the full KL).")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "table": self.rows()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Comparison:
        entries = [EntryResult(**_upgrade_entry(e)) for e in data.get("entries", [])]
        return cls(prompt=data["prompt"], settings=data["settings"], thinking=data["thinking"],
                   system_prompt=data.get("system_prompt", ""), entries=entries,
                   created=data.get("created", ""), tools=data.get("tools"),
                   max_tool_rounds=data.get("max_tool_rounds"))

    def to_markdown(self) -> str:
        lines = [f"# Comparison ({self.created})", "", f"**Prompt:** {self.prompt}", ""]
        if self.system_prompt:
            lines += [f"**System prompt:** {self.system_prompt}", ""]
        settings = ", ".join(f"{k}={v}" for k, v in self.settings.items())
        lines += [f"**Thinking:** {'on' if self.thinking else 'off'} · **Settings:** {settings}", ""]
        if self.uses_tools:
            lines += [f"**Tools:** {', '.join(self.tools or [])} · up to {self.max_tool_rounds} rounds per entry; "
                      "calls ran automatically (no approval)", ""]
        columns = table_columns(self)
        lines += ["| " + " | ".join(header for _, header in columns) + " |", "|" + "---|" * len(columns)]
        for index, row in enumerate(self.rows()):
            cells = ["ref" if key == "final_answer_matches" and index == 0 else _cell(key, row[key])
                     for key, _ in columns]
            lines.append("| " + " | ".join(cells) + " |")
        if self.measured_memory:
            lines += ["", BOUND_NOTE]
        if self.scored_drift:
            lines += ["", self.drift_note()]
        if self.has_published:
            lines += ["", self.published_note()]
        for entry in self.entries:
            lines += ["", f"## {entry.label}", ""]
            for number, turn in enumerate(entry.turns, 1):
                lines += [f"### Turn {number}: {turn['prompt']}", ""]
                if turn.get("error"):
                    lines += [f"**Error:** {turn['error']}", ""]
                lines += _reply_markdown(turn.get("reasoning", ""), turn.get("answer", ""), turn.get("steps") or [],
                                         turn.get("tool_calls") or []) + [""]
            if entry.turns:
                lines += [f"### Turn {len(entry.turns) + 1}: {self.prompt}", ""]
            if entry.error:
                lines += [f"**Error:** {entry.error}", ""]
            lines += _reply_markdown(entry.reasoning, entry.answer, entry.steps, entry.tool_calls)
            if entry.stop_reason == "repeating":
                lines += ["", "**Stopped: repeating** (the loop guard stopped a reply that repeated itself)"]
            if entry.stop_reason == "round_limit":
                lines += ["", f"**Round limit:** the model still called tools after {self.max_tool_rounds} rounds"]
        return "\n".join(lines) + "\n"


# the results table, as the Markdown export and the Compare tab show it: (rows() key, header)
TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("entry", "entry"), ("load_s", "load s"), ("ttft_s", "TTFT s"), ("tokens_per_s", "tokens/s"),
    ("reasoning_tokens", "reasoning tok"), ("answer_tokens", "answer tok"), ("total_s", "total s"),
    ("memory_mib", "memory MiB"), ("prefix_agreement", "agreement"), ("answer_matches", "same answer"),
    ("perplexity", "perplexity"),
)
# with tools, after "same answer" (the first entry is the reference: "ref")
TOOL_COLUMNS: tuple[tuple[str, str], ...] = (
    ("tool_calls", "tool calls"), ("valid_calls", "valid calls"), ("rounds", "rounds"),
    ("final_answer_matches", "same final answer"),
)
BUDGET_COLUMN = ("budget_cut", "budget cut")


def table_columns(comparison: Comparison | None, last: tuple[tuple[str, str], ...] = ()) -> list[tuple[str, str]]:
    """The table's columns in order: the tool columns when tools were offered, "budget cut" with
    a thinking budget, memory by kind, the bound and the drift figures when measured; ``last``
    at the end (the Compare tab's "error")."""
    columns = list(TABLE_COLUMNS)
    if comparison is not None:
        if comparison.uses_tools:
            at = [key for key, _ in columns].index("answer_matches") + 1
            columns[at:at] = TOOL_COLUMNS
        columns = with_measure_columns(comparison, with_budget_column(comparison, columns))
    return [*columns, *last]


def with_budget_column(comparison: Comparison, columns: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``columns`` with "budget cut" after the reasoning tokens when the comparison had a budget."""
    if not comparison.thinking_budget:
        return columns
    at = [key for key, _ in columns].index("reasoning_tokens") + 1
    return [*columns[:at], BUDGET_COLUMN, *columns[at:]]


DRIFT_COLUMNS = (("kld_mean", "KLD mean"), ("kld_p99", "KLD p99"), ("kld_max", "KLD max"),
                 ("same_top_token", "same top token"), ("tokens", "tokens scored"))


def with_measure_columns(comparison: Comparison, columns: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``columns`` with memory by kind and the speed bound after "memory MiB" when some entry has
    them, and the drift figures before the perplexity when some entry was scored."""
    if comparison.measured_memory:
        at = [key for key, _ in columns].index("memory_mib") + 1
        columns = [*columns[:at], *BOUND_COLUMNS, *columns[at:]]
    if comparison.scored_drift:
        at = [key for key, _ in columns].index("perplexity")
        columns = [*columns[:at], *DRIFT_COLUMNS, *columns[at:]]
    return columns


BOUND_COLUMNS = (("weights_mib", "weights MiB"), ("kv_mib", "KV MiB"), ("other_mib", "other MiB"),
                 ("bandwidth_bound_tokens_per_s", "bound tokens/s"), ("share_of_bound", "share of bound"))
BOUND_NOTE = ("Memory by kind: weights as the library holds them, the KV cache at the context used (prompt + "
              "reply), other = what the process gained from the load to the end of the reply minus both (– when "
              "entries shared a process or a GPU). Bound: memory bandwidth / (active weights + KV cache at the "
              "mean decode context): each token reads them once; MoE counts the routed experts only.")


def _bound_cells(entry: EntryResult, stats: dict[str, Any]) -> dict[str, Any]:
    """``memory{weights, kv, other}`` (bytes), the bandwidth bound and the share of it reached,
    plus the same in MiB for the table (``core.speed_bound``)."""
    memory = entry.memory or {}
    none = {"memory": None, "bandwidth_bound_tokens_per_s": None, "share_of_bound": None,
            **{key: None for key in ("weights_mib", "kv_mib", "other_mib")}}
    profile_data = memory.get("profile")
    if not isinstance(profile_data, dict) or not entry.stats:
        return none
    try:  # an imported file's record: figures, or no cells
        profile = WeightProfile(**{k: int(v) for k, v in profile_data.items() if k != "active_bytes"})
        prompt = int(entry.stats.get("prompt_tokens") or 0)
        completion = int(entry.stats.get("completion_tokens") or 0)
        gain = memory.get("process_gain")
        split = memory_split(profile, prompt + completion, None if gain is None else int(gain))
        mean_context = prompt + completion // 2  # the KV cache grows during the decode
        bound = bound_tokens_per_s(float(memory.get("bandwidth_bytes_per_s") or 0.0), profile.active_bytes,
                                   profile.kv_bytes_per_token * mean_context)
    except (TypeError, ValueError):
        return none
    mib = lambda value: None if value is None else round(value / 2**20, 3)  # noqa: E731
    return {"memory": split.to_dict(), "bandwidth_bound_tokens_per_s": bound,
            "share_of_bound": share_of_bound(stats.get("tokens_per_s"), bound),
            "weights_mib": mib(split.weights), "kv_mib": mib(split.kv), "other_mib": mib(split.other)}


def _drift_cells(entry: EntryResult) -> dict[str, Any]:
    return {key: (entry.drift or {}).get(key) for key, _ in DRIFT_COLUMNS}


def _perplexity(entry: EntryResult) -> float | None:
    """The drift's (every entry on the reference's tokens) when scored, else the --perplexity one."""
    if entry.drift:
        return entry.drift.get("perplexity")
    return entry.perplexity["perplexity"] if entry.perplexity else None


def _reply_markdown(reasoning: str, answer: str, steps: list[dict[str, Any]],
                    tool_calls: list[dict[str, Any]]) -> list[str]:
    """One turn's reply: every generation's reasoning and answer, each round's calls after it."""
    lines: list[str] = []
    generations = [*steps, {"reasoning": reasoning, "answer": answer}]
    for number, generation in enumerate(generations, 1):
        last = number == len(generations)
        if generation["reasoning"]:
            lines += ["<details><summary>Reasoning</summary>", "", generation["reasoning"], "", "</details>", ""]
        if generation["answer"] or last:
            lines += [generation["answer"] or "_(no answer)_", ""]
        calls = [c for c in tool_calls if c["round"] == number]
        for call in calls:
            verdict = "" if call.get("valid", True) else f" — **invalid**: {call.get('problem')}"
            lines.append(f"- **Tool call** (round {number}): `{call_text(call)}`{verdict} → {call_outcome(call)}")
        if calls:
            lines.append("")
    while lines and lines[-1] == "":
        lines.pop()
    return lines


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
    if key in ("same_top_token", "share_of_bound"):
        return f"{value:.1%}"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value).replace("|", "\\|")
