"""The Compare tab's handlers: run, follow up, stop, perplexity, drift, export, import.

The runner (``playground.compare``) does the work; models come from the playground's shared
pool (``Playground.lease``), so the comparison and the chat share
loaded models. One after another (the default), each entry is leased in turn: with fewer pool
slots (``--max-models``) than entries, the least recently used idle model is unloaded before the
next one loads, and the table's load time shows every reload. At the same time, every entry is
leased together, so it needs a slot per different entry: with fewer, the entries run one after
another and the status says why (``playground.compare.concurrency_plan``).

Tools: a run takes a tool selection (``ToolSelection.from_value``: the API's ``tools`` parameter,
else the chat tab's tools panel) and every entry runs its own tool loop with one toolbox; calls
run automatically ("ask before each call" is the chat's, not the comparison's).
"""
from __future__ import annotations

import copy
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from core.compare import Comparison
from core.compare_io import parse_comparison
from core.errors import PlaygroundError
from core.events import AnswerDelta
from core.presets import default_preset_name
from core.request import LoadOptions
from core.settings import SCHEMA_BY_NAME
from core.texts import TEXTS, scoring_text
from core.tools import Toolbox
from core.values import check_depth, strict_bool, strict_text
from playground import Playground
from playground.compare import EntrySpec, add_published, collect, concurrency_plan, new_comparison, run_comparison
from playground.drift import DriftEntry, drift_steps
from playground.tools.selection import ToolSelection
from ui.api import visitor_of
from ui.compare_view import (FINISHED, LOADING, MAX_ENTRIES, RUNNING, WAITING, chart_data, column_messages,
                             kind_chart_data, measure_note, published_note, results_table, share_chart_data)

AUTO_PRESET = "auto"  # the mode's card preset, its quantized variant when any entry is quantized
UPDATE_EVERY_S = 0.05  # at most this often while tokens stream (every load, error and end at once)
AUTOMATIC_CALLS = ("Every entry runs its own tool loop and its calls run automatically: *ask before each call* "
                   "does not apply in a comparison.")


def render(comparison: Comparison | None, status: str, phases: list[str] | None = None,
           thought_s: dict[int, float] | None = None) -> tuple[Any, ...]:
    """Every output of a run: the columns, the table, the two charts, the status, the state."""
    entries = comparison.entries if comparison else []
    columns = []
    for index in range(MAX_ENTRIES):
        if index < len(entries):
            phase = phases[index] if phases else FINISHED
            columns.append(gr.Chatbot(column_messages(comparison, index, phase, (thought_s or {}).get(index)),
                                      label=entries[index].label, visible=True))
        else:  # an unused column: hidden while a comparison is shown, waiting for a pick otherwise
            columns.append(gr.Chatbot([], label=f"Entry {index + 1}", visible=not entries))
    return (*columns, results_table(comparison), chart_data(comparison, "tokens_per_s"),
            chart_data(comparison, "memory_mib"), status, comparison)


def render_measures(comparison: Comparison | None) -> tuple[Any, ...]:
    """The drift and hardware charts with their note (after every run, import, clear): the KLD
    per entry, tokens/s as a share of the bandwidth bound, memory stacked by kind; each shown
    only when some entry has its figures. Then the published figures under the table, shown
    only when some entry's checkpoint has any."""
    kld, share, kinds = chart_data(comparison, "kld_mean"), share_chart_data(comparison), kind_chart_data(comparison)
    note, published = measure_note(comparison), published_note(comparison)
    return (gr.BarPlot(kld, visible=not kld.empty), gr.BarPlot(share, visible=not share.empty),
            gr.BarPlot(kinds, visible=not kinds.empty), gr.Markdown(note, visible=bool(note)),
            gr.Markdown(published, visible=bool(published)))


def entry_options(playground: Playground, model: str, factor: float) -> LoadOptions:
    """How an entry loads (a remote one: the host's server); a model that does not resolve
    fails later in its own column."""
    try:
        spec = playground.resolve(model)
    except PlaygroundError:
        return LoadOptions(yarn_factor=factor).validate()
    return playground.load_options(spec, factor)


def picked_entries(playground: Playground, slots: list[tuple[str | None, float | None]]) -> list[EntrySpec]:
    """(model, YaRN factor) per slot -> entries; empty slots are skipped."""
    entries = []
    for model, factor in slots:
        model = (model or "").strip()
        if not model:
            continue
        try:
            playground.config.check_text(model, f"entry {len(entries) + 1}'s model name")
            factor = float(factor if factor not in (None, "") else 1.0)
            options = entry_options(playground, model, factor)
        except PlaygroundError as exc:
            raise gr.Error(f"{model}: {playground.error_text(exc)}") from None
        except (TypeError, ValueError):
            raise gr.Error(f"{model}: the YaRN factor must be a number") from None
        label = f"{len(entries) + 1}. {model}" + (f" (YaRN ×{factor:g})" if factor != 1.0 else "")
        entries.append(EntrySpec(model, None, options, label))
    if not 2 <= len(entries) <= MAX_ENTRIES:
        raise gr.Error(f"Pick 2 to {MAX_ENTRIES} entries to compare (the same model twice is fine).")
    return entries


def comparison_entries(playground: Playground, comparison: Comparison) -> list[EntrySpec]:
    """The entries a comparison was made with (a follow-up continues them, whatever is picked).
    In hosted mode an entry's recorded backend (an imported file's choice) is ignored: the
    catalog's rules decide how each model runs."""
    return [EntrySpec(e.model, None if playground.config.hosted else e.backend or None,
                      entry_options(playground, e.model, float(e.yarn_factor or 1.0)), e.label)
            for e in comparison.entries]


def _quantized(playground: Playground, entries: list[EntrySpec]) -> bool:
    for entry in entries:
        try:
            if playground.resolve(entry.model, entry.backend).quantized:
                return True
        except PlaygroundError:  # a bad entry fails in its own column, not here
            continue
    return False


def chosen_tools(api_value: Any, panel_value: Any) -> Any:
    """The tool selection of a run: the API's ``tools`` when given, else the chat's tools panel."""
    return api_value if api_value not in (None, "", {}) else panel_value


def tools_note(selection: Any = None, comparison: Comparison | None = None) -> Any:
    """The note by the results: which tools a comparison used, and that calls run unasked."""
    if comparison is not None and comparison.uses_tools:
        text = (f"**Tools:** {', '.join(comparison.tools or [])} (up to {comparison.max_tool_rounds} rounds per "
                f"entry). {AUTOMATIC_CALLS}")
        return gr.Markdown(text, visible=True)
    try:
        check_depth(selection, "tools")
        chosen = ToolSelection.from_value(selection)
    except PlaygroundError:  # the run says what is wrong
        chosen = ToolSelection()
    if chosen.empty:
        return gr.Markdown("", visible=False)
    return gr.Markdown(f"**Tools are on.** {AUTOMATIC_CALLS}", visible=True)


def turn_values(playground: Playground, prompt: Any, system_prompt: Any, thinking: Any, concurrent: Any,
                loop_guard: Any, tools: Any) -> tuple[str, str, bool, bool, bool]:
    """A run's values from the page or an API call, parsed strictly (``core.values``: ``"false"``
    is not a bool) and within the size limits: (prompt, system_prompt, thinking, concurrent,
    loop_guard). ``gr.Error`` names what is wrong."""
    try:
        check_depth(tools, "tools")
        prompt, system_prompt = strict_text(prompt, "prompt"), strict_text(system_prompt, "system_prompt")
        playground.config.check_text(prompt, "the prompt")
        playground.config.check_text(system_prompt, "the system prompt")
        return (prompt, system_prompt, strict_bool(thinking, "thinking", True),
                strict_bool(concurrent, "concurrent", False), strict_bool(loop_guard, "loop_guard", True))
    except PlaygroundError as exc:
        raise gr.Error(playground.error_text(exc)) from None


def setting_value(name: str, value: Any) -> Any:
    """A generation setting from the page or an API call, by the settings schema (strict)."""
    try:
        return SCHEMA_BY_NAME[name].coerce(value)
    except PlaygroundError as exc:
        raise gr.Error(str(exc)) from None


def make_compare_handlers(playground: Playground):
    def toolbox_of(selection: Any, request: gr.Request | None) -> Toolbox | None:
        try:
            return playground.toolbox_for(selection, visitor_of(playground, request))
        except PlaygroundError as exc:
            message = str(exc)  # ToolSelection's own messages start "tools: "
            raise gr.Error(f"Tools: {message.removeprefix('tools: ')}") from None

    def check_next_turn(comparison: Comparison, prompt: str, system_prompt: str) -> None:
        """Every column's conversation with ``prompt`` added, under the size limits, before the
        comparison changes or anything runs."""
        trial = copy.deepcopy(comparison)
        try:
            for history in trial.start_turn(prompt):
                playground.check_conversation(history, system_prompt)
        except PlaygroundError as exc:
            raise gr.Error(playground.error_text(exc)) from None

    def settings_for(entries: list[EntrySpec], thinking: bool, preset: str | None, seed: Any,
                     max_new_tokens: Any, thinking_budget: Any = 0):
        name = preset if preset and preset != AUTO_PRESET else default_preset_name(bool(thinking), _quantized(playground, entries))
        if not isinstance(name, str) or name not in playground.presets:
            raise gr.Error(f"unknown preset {str(name)[:64]!r}; available: {AUTO_PRESET}, {', '.join(playground.presets)}")
        changes: dict[str, Any] = {"seed": setting_value("seed", seed)}
        if max_new_tokens not in (None, "", 0):
            changes["max_new_tokens"] = setting_value("max_new_tokens", max_new_tokens)
        if thinking_budget not in (None, ""):
            changes["thinking_budget"] = setting_value("thinking_budget", thinking_budget)
        try:
            return playground.presets[name].settings.with_updates(**changes).validate(bool(thinking))
        except PlaygroundError as exc:
            raise gr.Error(str(exc)) from None

    def run_turn(comparison: Comparison, entries: list[EntrySpec], prompt: str, settings, thinking: bool,
                 system_prompt: str, concurrent: bool, toolbox: Toolbox | None,
                 loop_guard: bool = True) -> Iterator[tuple[Any, ...]]:
        """Stream one turn of every column; closing this generator (Stop) stops them all."""
        histories = comparison.start_turn(prompt, toolbox)
        comparison.settings, comparison.thinking = settings.to_dict(), bool(thinking)
        comparison.system_prompt = system_prompt or ""
        add_published(playground, comparison, entries)  # this turn's mode
        count = len(entries)
        concurrent, plan_note = concurrency_plan(playground, entries, bool(concurrent))  # the pool's budget
        phases = [LOADING if concurrent or i == 0 else WAITING for i in range(count)]
        loaded_at: dict[int, float] = {}
        thought_s: dict[int, float] = {}
        mode = plan_note or ("at the same time" if concurrent else "one after another")
        if comparison.uses_tools:
            mode += " with tools (calls run automatically)"
        started = time.perf_counter()
        yield render(comparison, f"Running {count} entries {mode}…", phases)
        events = run_comparison(playground, entries, histories, settings, bool(thinking),
                                system_prompt=system_prompt or "", concurrent=bool(concurrent), toolbox=toolbox, loop_guard=bool(loop_guard))
        last = 0.0
        try:
            for event in events:
                collect(comparison, (event,))
                i = event.index
                if event.kind == "loaded":
                    phases[i], loaded_at[i] = RUNNING, time.perf_counter()
                elif event.kind == "event" and isinstance(event.payload, AnswerDelta) and i not in thought_s:
                    thought_s[i] = time.perf_counter() - loaded_at.get(i, started)
                elif event.kind == "done":
                    phases[i] = FINISHED
                    if not concurrent and i + 1 < count:
                        phases[i + 1] = LOADING
                now = time.perf_counter()
                if event.kind != "event" or now - last >= UPDATE_EVERY_S:
                    last = now
                    yield render(comparison, f"Running {count} entries {mode}…", phases, thought_s)
        finally:  # Stop (Gradio closes this generator) or the end: the runner stops every column
            events.close()
        failed = sum(e.error is not None for e in comparison.entries)
        note = f" ({failed} failed: see {'its' if failed == 1 else 'their'} column)" if failed else ""
        yield render(comparison, f"Done in {time.perf_counter() - started:.1f} s{note}.", phases, thought_s)

    def compare(model_1: str, yarn_1: float, model_2: str, yarn_2: float, model_3: str | None, yarn_3: float,
                model_4: str | None, yarn_4: float, prompt: str, system_prompt: str = "", thinking: bool = True,
                preset: str = AUTO_PRESET, seed: int = 0, max_new_tokens: int = 32768, concurrent: bool = False,
                comparison: Comparison | None = None, tools: Any = None, thinking_budget: int = 0,
                loop_guard: bool = True, panel_tools: Any = None, request: gr.Request = None) -> Iterator[tuple[Any, ...]]:
        """A new comparison: ``prompt`` on 2-4 entries (model + YaRN factor; empty model = unused).
        ``tools``: a tool selection (the API's; else ``panel_tools``, the chat's tools panel)."""
        prompt, system_prompt, thinking, concurrent, loop_guard = turn_values(
            playground, prompt, system_prompt, thinking, concurrent, loop_guard, tools)
        entries = picked_entries(playground, [(model_1, yarn_1), (model_2, yarn_2), (model_3, yarn_3), (model_4, yarn_4)])
        if not prompt.strip():
            raise gr.Error("Type a prompt first.")
        settings = settings_for(entries, thinking, preset, seed, max_new_tokens, thinking_budget)
        fresh = new_comparison(entries, prompt, settings, thinking, system_prompt)
        check_next_turn(fresh, prompt, system_prompt)
        toolbox = toolbox_of(chosen_tools(tools, panel_tools), request)
        yield from run_turn(fresh, entries, prompt, settings, thinking, system_prompt, concurrent, toolbox,
                            loop_guard)

    def follow_up(prompt: str, system_prompt: str = "", thinking: bool = True, preset: str = AUTO_PRESET,
                  seed: int = 0, max_new_tokens: int = 32768, concurrent: bool = False,
                  comparison: Comparison | None = None, tools: Any = None, thinking_budget: int = 0,
                  loop_guard: bool = True, panel_tools: Any = None, request: gr.Request = None) -> Iterator[tuple[Any, ...]]:
        """Send ``prompt`` to every column's own conversation (the session's comparison's entries),
        with this turn's tools (as for :func:`compare`)."""
        prompt, system_prompt, thinking, concurrent, loop_guard = turn_values(
            playground, prompt, system_prompt, thinking, concurrent, loop_guard, tools)
        if comparison is None or not comparison.entries:
            raise gr.Error("Start a comparison first (Compare), then follow up.")
        if not prompt.strip():
            raise gr.Error("Type a follow-up message first.")
        check_next_turn(comparison, prompt, system_prompt)
        entries = comparison_entries(playground, comparison)
        settings = settings_for(entries, thinking, preset, seed, max_new_tokens, thinking_budget)
        toolbox = toolbox_of(chosen_tools(tools, panel_tools), request)
        yield from run_turn(comparison, entries, prompt, settings, thinking, system_prompt, concurrent, toolbox,
                            loop_guard)

    def stopped(comparison: Comparison | None) -> tuple[Any, ...]:
        """After Stop: columns without statistics are marked stopped, spinners close."""
        if comparison is None:
            return render(None, "Stopped.")
        for entry in comparison.entries:
            if entry.stats is None and entry.stop_reason is None and entry.history and entry.history[-1]["role"] == "user":
                entry.stop_reason = "stopped"
        return render(comparison, "Stopped: every entry's generation ended.")

    def scored_text(text: Any, pasted: Any) -> tuple[str, str]:
        """(name, body) of the text to score: ``pasted`` when not empty, else the shipped text
        named ``text``; a visitor's own text (pasted, or sent as a name) within the size limit."""
        try:
            text, pasted = strict_text(text, "text", "tiny-script"), strict_text(pasted, "pasted")
            scored = pasted if pasted.strip() else text
            if scored not in TEXTS:  # the visitor's own text (pasted, or sent as the text's name)
                playground.config.check_text(scored, "the pasted text")
            return ("pasted text" if scored not in TEXTS else scored), scoring_text(scored)
        except PlaygroundError as exc:
            raise gr.Error(playground.error_text(exc)) from None

    def scoring_comparison(entries: list[EntrySpec], comparison: Comparison | None) -> Comparison:
        """The session's comparison if it has these entries (a score joins its table), else a new one."""
        same = comparison is not None and [(e.model, e.options.yarn_factor) for e in comparison_entries(playground, comparison)] \
            == [(e.model, e.options.yarn_factor) for e in entries]
        if same and comparison is not None:
            return comparison
        fresh = new_comparison(entries, "", playground.presets[default_preset_name(True)].settings, True)
        add_published(playground, fresh, entries)
        return fresh

    def perplexity(model_1: str, yarn_1: float, model_2: str, yarn_2: float, model_3: str | None, yarn_3: float,
                   model_4: str | None, yarn_4: float, text: str = "tiny-script", pasted: str = "",
                   comparison: Comparison | None = None) -> Iterator[tuple[Any, ...]]:
        """Perplexity of a text (``pasted``, else a shipped one named ``text``) on every entry, into
        the table. The session's comparison gets it if it has these entries; otherwise a new one."""
        name, body = scored_text(text, pasted)
        entries = picked_entries(playground, [(model_1, yarn_1), (model_2, yarn_2), (model_3, yarn_3), (model_4, yarn_4)])
        comparison = scoring_comparison(entries, comparison)
        for index, (entry, result) in enumerate(zip(entries, comparison.entries)):
            yield render(comparison, f"Scoring {name} on {result.label} ({index + 1} of {len(entries)})…")
            try:
                with playground.lease(playground.resolve(entry.model, entry.backend), entry.options) as backend:
                    result.info = result.info or playground.describe(backend).to_dict()
                    result.perplexity = {**backend.perplexity(body).to_dict(), "text": name}
            except PlaygroundError as exc:
                result.error = result.error or f"perplexity: {playground.error_text(exc)}"
        yield render(comparison, f"Perplexity of {name} on every entry (lower = the text is more expected).")

    def drift(model_1: str, yarn_1: float, model_2: str, yarn_2: float, model_3: str | None, yarn_3: float,
              model_4: str | None, yarn_4: float, text: str = "tiny-script", pasted: str = "",
              comparison: Comparison | None = None) -> Iterator[tuple[Any, ...]]:
        """Drift of every entry's next-token distributions from the first entry's on a text
        (``playground.drift``: KLD mean / p99 / max, same top token, perplexity on the same
        tokens), into the table; the same text choices and joining rule as :func:`perplexity`."""
        name, body = scored_text(text, pasted)
        entries = picked_entries(playground, [(model_1, yarn_1), (model_2, yarn_2), (model_3, yarn_3), (model_4, yarn_4)])
        comparison = scoring_comparison(entries, comparison)
        steps = drift_steps(playground, [DriftEntry(e.model, e.backend, e.options) for e in entries], body,
                            acquire=playground.lease)  # the shared pool, under its rules (hosted: admit)
        total = len(entries)
        yield render(comparison, f"Scoring drift on entry 1 of {total} ({comparison.entries[0].label}, the reference)…")
        for index, (result, outcome) in enumerate(zip(comparison.entries, steps)):
            if isinstance(outcome, PlaygroundError):
                result.drift = None
                result.error = result.error or f"drift: {playground.error_text(outcome)}"
            else:
                result.drift = {**outcome.to_dict(), "text": name}
            if index + 1 < total:
                yield render(comparison, f"Scoring drift on entry {index + 2} of {total} "
                                         f"({comparison.entries[index + 1].label})…")
        yield render(comparison, f"Drift of every entry from {comparison.entries[0].label} on {name} "
                                 "(KLD: 0 = the same distributions; lower is closer).")

    def export(comparison: Comparison | None) -> tuple[str, str]:
        """The session's comparison as a JSON file and a Markdown file."""
        if comparison is None:
            raise gr.Error("Nothing to export yet: run a comparison first.")
        # ``created`` may come from an imported file: only its date and time go into the names
        stamp = re.sub(r"[^0-9T-]", "-", (comparison.created or time.strftime("%Y-%m-%dT%H:%M:%S"))[:19])
        json_path, md_path = playground.exports.write({f"comparison-{stamp}.json": comparison.to_json(),
                                                       f"comparison-{stamp}.md": comparison.to_markdown()})
        return str(json_path), str(md_path)

    def import_json(path: str | None) -> tuple[Any, ...]:
        """Show a JSON export (columns, table, charts); follow-ups continue its entries."""
        if not path:
            raise gr.Error("Choose a JSON export to import.")
        try:
            playground.config.check_upload(Path(path).stat().st_size, "the comparison file")  # unread
            data = Path(path).read_bytes()
        except OSError:
            raise gr.Error("Could not read the comparison file.") from None
        except PlaygroundError as exc:
            raise gr.Error(f"Could not import the comparison: {playground.error_text(exc)}") from None
        try:
            comparison = parse_comparison(data, MAX_ENTRIES)
        except PlaygroundError as exc:
            raise gr.Error(f"Not a comparison export: {playground.error_text(exc)}") from None
        try:
            playground.check_comparison(comparison)
        except PlaygroundError as exc:
            raise gr.Error(f"Could not import the comparison: {playground.error_text(exc)}") from None
        # published figures come from this playground's file, never from the imported one
        add_published(playground, comparison, comparison_entries(playground, comparison))
        pickers = []
        for index in range(MAX_ENTRIES):
            entry = comparison.entries[index] if index < len(comparison.entries) else None
            pickers += [entry.model if entry else None, float(entry.yarn_factor or 1.0) if entry else 1.0]
        return (*render(comparison, f"Imported the comparison of {comparison.created or 'an earlier run'}."), *pickers)

    def clear() -> tuple[Any, ...]:
        return render(None, "")

    return compare, follow_up, stopped, perplexity, drift, export, import_json, clear


def text_choices() -> list[str]:
    return list(TEXTS)
