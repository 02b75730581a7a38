"""The agentic comparison: every entry runs its own tool loop with the same tools, and the table
says whether each format still calls them correctly (calls, valid calls, rounds, same final answer).

Real tiny models of three formats (bf16 / GPTQ-Int4 / GGUF Q4_K_M) answer the scripted weather
question through the tests' MCP server; columns that call an unknown tool, break a schema or
write a call that does not parse come from scripted backends (no tiny model does that). Then the
CLI (``app.py compare --mcp``), the exports, and the tab's API (its ``tools`` parameter and the
chat's tools panel).
"""
from __future__ import annotations

import json
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from core.catalog import ModelSpec, load_catalog
from core.chat import model_messages
from core.compare import Comparison
from core.config import AppConfig
from core.presets import get_preset
from playground import Playground, load_fresh
from playground.compare import EntrySpec, collect, new_comparison, run_comparison
from playground.tools.mcp_servers import parse_mcp_config
from playground.tools.toolbox import FunctionTools, Toolbox
from test_tool_loop import Scripted, block
from tinymodels.script import LOCATION_TOOL, USER_CITY, WEATHER_REPORTS, WEATHER_TOOL, case
from ui.compare_view import TABLE_HEADERS, column_messages, results_table

pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parent.parent
WEATHER_SERVER = {"mcpServers": {"weather": {"command": sys.executable,
                                             "args": [str(ROOT / "tests" / "mcp_weather_server.py")]}}}
FORMATS = ["tiny-bf16", "tiny-gptq-int4", "tiny-gguf-q4_k_m"]
SETTINGS = get_preset("thinking-quantized").settings.with_updates(seed=7, max_new_tokens=200)
WEATHER_Q = case("tool_call").messages[-1]["content"]
PARIS = ("get_weather", {"city": "Paris"})
ANSWER = case("tool_answer").answer
TOOL_KEYS = ["tool_calls", "valid_calls", "rounds", "final_answer_matches"]


def calls(entry) -> list[tuple]:
    return [(c["name"], c["arguments"], c["valid"], c["result"], c["error"], c["round"]) for c in entry.tool_calls]


def compare(playground, entries, prompt, toolbox, acquire=load_fresh, concurrent=False) -> Comparison:
    comparison = new_comparison(entries, prompt, SETTINGS, True)
    histories = comparison.start_turn(prompt, toolbox)
    return collect(comparison, run_comparison(playground, entries, histories, SETTINGS, True, acquire=acquire,
                                              concurrent=concurrent, toolbox=toolbox))


@pytest.fixture(scope="module")
def playground():
    playground = Playground(AppConfig(max_models=1))
    yield playground
    playground.close()  # the MCP servers stop


@pytest.fixture(scope="module")
def three_formats(playground) -> Comparison:
    weather = playground.toolbox(mcp=parse_mcp_config(WEATHER_SERVER))
    return compare(playground, [EntrySpec(model) for model in FORMATS], WEATHER_Q, weather)


def test_every_format_calls_the_tool_once_and_answers_like_the_reference(three_formats):
    for entry in three_formats.entries:
        assert entry.error is None and entry.stop_reason is None
        assert calls(entry) == [(*PARIS, True, WEATHER_REPORTS["Paris"], None, 1)]
        assert entry.steps[0]["reasoning"] == case("tool_call").reasoning and entry.steps[0]["stats"]
        assert (entry.reasoning, entry.answer) == (case("tool_answer").reasoning, ANSWER)
    rows = three_formats.rows()
    assert [[row[key] for key in TOOL_KEYS] for row in rows] == [[1, 1, 2, None], [1, 1, 2, True], [1, 1, 2, True]]
    assert list(rows[0])[list(rows[0]).index("answer_matches") + 1:][:4] == TOOL_KEYS
    for row in rows:  # the figures cover both generations
        assert row["ttft_s"] > 0 and row["total_s"] > row["ttft_s"] and row["tokens_per_s"] > 0
        assert row["reasoning_tokens"] > 0 and row["answer_tokens"] > 0
    table = results_table(three_formats)
    assert list(table["same final answer"]) == ["ref", "yes", "yes"]
    assert list(table["tool calls"]) == list(table["valid calls"]) == ["1"] * 3 and list(table["rounds"]) == ["2"] * 3


def test_a_column_shows_the_call_and_its_result_between_the_rounds(three_formats):
    for index in range(len(FORMATS)):
        messages = column_messages(three_formats, index)
        shown = [(m["content"], (m.get("metadata") or {}).get("title", "")) for m in messages]
        user, first_thought, call, second_thought, answer, stats = shown
        assert user[0] == WEATHER_Q and first_thought == (case("tool_call").reasoning, first_thought[1])
        assert call == (WEATHER_REPORTS["Paris"], 'Tool call: get_weather {"city": "Paris"}')
        assert second_thought[0] == case("tool_answer").reasoning and answer == (ANSWER, "")
        assert "2 generations" in stats[0]


def test_the_export_round_trips_and_an_older_one_still_imports(three_formats):
    data = json.loads(three_formats.to_json())
    assert data["tools"] == ["get_weather", "get_location"] and data["max_tool_rounds"] == 8
    assert [[row[key] for key in TOOL_KEYS] for row in data["table"]] == [[1, 1, 2, None], [1, 1, 2, True],
                                                                          [1, 1, 2, True]]
    assert data["entries"][1]["tool_calls"][0]["result"] == WEATHER_REPORTS["Paris"]
    imported = Comparison.from_dict(data)
    assert imported.to_dict() == three_formats.to_dict()
    assert list(results_table(imported)["same final answer"]) == ["ref", "yes", "yes"]
    markdown = three_formats.to_markdown()
    assert "| same answer | tool calls | valid calls | rounds | same final answer | perplexity |" in markdown
    assert "| 1 | 1 | 2 | ref |" in markdown and "| 1 | 1 | 2 | yes |" in markdown
    assert '- **Tool call** (round 1): `get_weather {"city": "Paris"}` → sunny and 21 degrees' in markdown
    # an export from before tools: no tool fields anywhere, and no tool columns
    old = {k: v for k, v in data.items() if k not in ("tools", "max_tool_rounds", "table")}
    old["entries"] = [{k: v for k, v in e.items() if k not in ("tool_calls", "steps")} for e in data["entries"]]
    before = Comparison.from_dict(old)
    assert not before.uses_tools and not set(TOOL_KEYS) & set(before.rows()[0])
    columns = list(results_table(before).columns)  # the plain table (with the measured columns, if any)
    assert [c for c in columns if c in TABLE_HEADERS] == TABLE_HEADERS
    assert not {"tool calls", "valid calls", "rounds", "same final answer"} & set(columns)
    assert "tool calls" not in before.to_markdown()


def test_a_follow_up_sends_the_tool_exchange_back(three_formats):
    comparison = Comparison.from_dict(three_formats.to_dict())
    history = comparison.start_turn("And in Tokyo?")[0]
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "assistant", "user"]
    call = history[1]["tool_calls"][0]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert history[2] == {"role": "tool", "tool_call_id": call["id"], "content": WEATHER_REPORTS["Paris"]}
    assert history[3] == {"role": "assistant", "content": ANSWER}
    model_messages(history)  # a conversation the model takes
    assert comparison.tools is None and "tool_calls" not in comparison.rows()[0]  # this turn offers none
    assert comparison.entries[0].turns[0]["tool_calls"][0]["name"] == "get_weather"


def test_at_the_same_time_the_calls_of_every_entry_run_together(playground):
    weather = playground.toolbox(mcp=parse_mcp_config(WEATHER_SERVER))
    parallel = case("tool_parallel")
    comparison = compare(playground, [EntrySpec("tiny-bf16"), EntrySpec("tiny-gguf-q4_k_m")],
                         parallel.messages[-1]["content"], weather, concurrent=True)
    for entry in comparison.entries:
        assert [(c["name"], c["arguments"], c["result"]) for c in entry.tool_calls] == [
            (*parallel.calls[0], WEATHER_REPORTS["Paris"]), (*parallel.calls[1], WEATHER_REPORTS["Tokyo"])]
        assert entry.answer == case("tool_parallel_answer").answer
    assert [[row[key] for key in TOOL_KEYS] for row in comparison.rows()] == [[2, 2, 2, None], [2, 2, 2, True]]


# -- columns that call tools wrongly (scripted) ------------------------------------------------
THOUGHT = "<think>\nI call the tools.\n</think>\n\n"
UNPARSED = '<tool_call>\n{"name": "get_weather", "arguments": {"city": Paris}}\n</tool_call>'
SCRIPTS = {
    # an unknown tool, arguments that break the schema, a call that does not parse; another answer
    "scripted-wrong": [THOUGHT + "\n".join([block("get_forecast", {"city": "Paris"}),
                                             block("get_weather", {"town": "Paris"}), UNPARSED]),
                       THOUGHT + "I could not get the weather."],
    # one good call, one with a number for the city; the reference's answer
    "scripted-half": [THOUGHT + block("get_weather", {"city": "Paris"}) + "\n" + block("get_weather", {"city": 7}),
                      THOUGHT + ANSWER],
    # calls again and again: the round limit ends it
    "scripted-loop": [THOUGHT + block("get_location", {})],
}


def test_calls_that_are_unknown_break_the_schema_or_do_not_parse_are_invalid():
    backends = {name: Scripted(replies) for name, replies in SCRIPTS.items()}
    # "transformers" only names a library the runner imports before the clock starts
    catalog = [*load_catalog(), *[ModelSpec(name, "transformers", f"test/{name}") for name in SCRIPTS]]
    playground = Playground(catalog=catalog)

    @contextmanager
    def acquire(spec, options, progress):
        if spec.name not in backends:
            with load_fresh(spec, options, progress) as backend:
                yield backend
            return
        backends[spec.name].load(spec, options)
        yield backends[spec.name]

    tools = Toolbox([FunctionTools("test", [(WEATHER_TOOL, lambda city: WEATHER_REPORTS[city]),
                                            (LOCATION_TOOL, lambda: USER_CITY)])], max_rounds=1)
    entries = [EntrySpec(name) for name in ("tiny-bf16", *SCRIPTS)]
    comparison = compare(playground, entries, WEATHER_Q, tools, acquire=acquire)
    reference, wrong, half, loop = comparison.entries
    assert calls(reference) == [(*PARIS, True, WEATHER_REPORTS["Paris"], None, 1)]
    assert [(c["name"], c["valid"], c["error"]) for c in wrong.tool_calls] == [
        ("get_forecast", False, "unknown_tool"), ("get_weather", False, "bad_arguments"),
        (None, False, "invalid_call")]
    assert [c["problem"].split(":")[0] for c in wrong.tool_calls] == ["unknown tool 'get_forecast'", "bad arguments",
                                                                      "did not parse"]
    assert "'city' is a required property" in wrong.tool_calls[1]["problem"]
    assert [(c["valid"], c["error"]) for c in half.tool_calls] == [(True, None), (False, "bad_arguments")]
    assert half.tool_calls[0]["result"] == WEATHER_REPORTS["Paris"]
    # the loop's second call came after the last round: counted, checked, never run
    assert [(c["valid"], c["result"], c["round"]) for c in loop.tool_calls] == [(True, USER_CITY, 1), (True, None, 2)]
    assert loop.stop_reason == "round_limit"
    rows = comparison.rows()
    assert [[row[key] for key in TOOL_KEYS] for row in rows] == [
        [1, 1, 2, None], [3, 0, 2, False], [2, 1, 2, True], [2, 2, 2, False]]
    assert rows[3]["error"] == "round_limit"
    table = results_table(comparison)
    assert list(table["valid calls"]) == ["1", "0", "1", "2"] and list(table["same final answer"]) == [
        "ref", "no", "yes", "no"]
    titles = [(m.get("metadata") or {}).get("title", "") for m in column_messages(comparison, 1)]
    assert "Invalid tool call (unknown tool 'get_forecast'): get_forecast {\"city\": \"Paris\"}" in titles
    assert any(t.startswith("Invalid tool call (did not parse: ") and t.endswith(UNPARSED) for t in titles)
    loop_messages = column_messages(comparison, 3)
    assert loop_messages[-3]["content"] == "Not run." and loop_messages[-2]["metadata"]["title"].startswith(
        "Round limit: the model still called tools after 1 rounds")
    markdown = comparison.to_markdown()
    assert "| 3 | 0 | 2 | no |" in markdown and "**invalid**: unknown tool 'get_forecast'" in markdown
    assert "`get_location {}` → not run" in markdown and "**Round limit:**" in markdown


# -- the command line ---------------------------------------------------------------------------
def run_cli(tmp_path, *flags: str) -> subprocess.CompletedProcess:
    config = tmp_path / "weather.json"
    config.write_text(json.dumps(WEATHER_SERVER))
    return subprocess.run([sys.executable, "app.py", "compare", "--models", "tiny-bf16", "tiny-gguf-q4_k_m",
                           "--prompt", WEATHER_Q, "--seed", "7", "--max-new-tokens", "200", "--mcp", str(config),
                           "--max-tool-rounds", "3", *flags], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_compare_command_with_mcp_prints_the_tool_columns(tmp_path):
    result = run_cli(tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.count('tool call: get_weather {"city": "Paris"} ---') == 2
    assert out.count("--- result, ") == 2 and WEATHER_REPORTS["Paris"] in out
    assert "**Tools:** get_weather, get_location · up to 3 rounds per entry" in out
    assert "| tool calls | valid calls | rounds | same final answer |" in out
    assert "| 1 | 1 | 2 | ref |" in out and "| 1 | 1 | 2 | yes |" in out


def test_the_compare_command_with_mcp_and_json(tmp_path):
    result = run_cli(tmp_path, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["tools"] == ["get_weather", "get_location"] and data["max_tool_rounds"] == 3
    assert [[row[key] for key in TOOL_KEYS] for row in data["table"]] == [[1, 1, 2, None], [1, 1, 2, True]]
    assert [e["answer"] for e in data["entries"]] == [ANSWER, ANSWER]
    assert Comparison.from_dict(data).to_dict() == data


def test_the_compare_command_refuses_a_bad_mcp_config_before_loading(tmp_path):
    config = tmp_path / "bad.json"
    config.write_text('{"mcpServers": {"x": {"command": "no-such-command-here"}}}')
    result = subprocess.run([sys.executable, "app.py", "compare", "--models", "tiny-bf16", "tiny-bf16",
                             "--prompt", WEATHER_Q, "--mcp", str(config)], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "===" not in result.stdout


# -- the tab's API ------------------------------------------------------------------------------
PANEL = {"mcp_config": WEATHER_SERVER, "approve_each": True}  # what the chat's tools panel would hold


@pytest.fixture(scope="module")
def tab_url():
    """The Compare tab alone, wired to a tools panel (a gr.State holding a ToolSelection dict)."""
    import gradio as gr

    from backends.pool import ModelPool
    from conftest import launch_in_process
    from ui.compare_tab import build_compare_tab, wire_compare_tab

    playground = Playground(AppConfig(), ModelPool(max_models=3))
    playground.start_up("tiny-bf16")
    with gr.Blocks() as demo:
        panel = gr.State(PANEL)
        wire_compare_tab(playground, build_compare_tab(playground), panel)
    url = launch_in_process(demo)
    yield url
    demo.close()
    playground.close()
    playground.pool.unload_all()


def submit(url, prompt=WEATHER_Q, *tools):
    from gradio_client import Client

    client = Client(url, verbose=False)
    models = ["tiny-bf16", 1.0, "tiny-gguf-q4_k_m", 1.0, "", 1.0, "", 1.0]
    return client, client.submit(*models, prompt, "", True, "auto", 7, 200, False, *tools, api_name="/compare")


def table_of(output) -> list[dict]:
    return [dict(zip(output["headers"], row)) for row in output["data"]]


def test_the_api_takes_tools_and_the_table_shows_the_tool_columns(tab_url):
    client, job = submit(tab_url, WEATHER_Q, {"mcp_config": WEATHER_SERVER, "max_rounds": 2})
    steps = list(job)
    final = job.result()
    assert any("with tools (calls run automatically)" in step[7] for step in steps) and final[7].startswith("Done")
    rows = table_of(final[4])
    assert [(r["tool calls"], r["valid calls"], r["rounds"], r["same final answer"]) for r in rows] == [
        ("1", "1", "2", "ref"), ("1", "1", "2", "yes")]
    titles = [(m.get("metadata") or {}).get("title") for m in final[0]["value"]]
    assert 'Tool call: get_weather {"city": "Paris"}' in titles
    json_path = client.predict(api_name="/compare_export")[0]
    exported = json.loads(Path(json_path).read_text(encoding="utf-8"))
    assert exported["max_tool_rounds"] == 2  # the API's tools, not the panel's (8 rounds)
    from gradio_client import Client, handle_file

    imported = Client(tab_url, verbose=False).predict(handle_file(json_path), api_name="/compare_import")
    assert imported[4]["data"] == final[4]["data"]  # another session shows the same table


def test_without_api_tools_the_chat_panel_s_tools_are_used(tab_url):
    client, job = submit(tab_url)
    rows = table_of(job.result()[4])
    assert [r["same final answer"] for r in rows] == ["ref", "yes"]
    exported = json.loads(Path(client.predict(api_name="/compare_export")[0]).read_text(encoding="utf-8"))
    assert exported["max_tool_rounds"] == 8 and exported["tools"] == ["get_weather", "get_location"]


def test_a_tool_selection_that_fails_is_refused_with_its_reason(tab_url):
    from gradio_client.exceptions import AppError

    _, job = submit(tab_url, WEATHER_Q, {"mcp_config": {"mcpServers": {"x": {"command": "no-such-command-here"}}}})
    with pytest.raises(AppError, match="Tools: "):
        job.result()
    _, job = submit(tab_url, WEATHER_Q, {"max_rounds": "many"})
    with pytest.raises(AppError, match="Tools: max_rounds must be a whole number"):
        job.result()
