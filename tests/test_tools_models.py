"""Tool calling on real tiny models of every format, with real MCP servers over stdio.

The tiny models are trained (``tinymodels/script.py``, the tool cases) on tool conversations
rendered with Qwen3's template: the exact calls, the answer quoting the result, parallel calls,
a call drafted inside ``<think>`` that must not run, a call in reasoning never closed, a chain of
two rounds. The tools come from the tests' own MCP server (``tests/mcp_weather_server.py``) and
the cards' third-party ``mcp-server-time``, started by the playground from an ``mcpServers``
configuration as a user writes it.
"""
from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from core.config import AppConfig
from core.tools import RoundLimitReached, ToolCallStarted, ToolResult
from playground import Playground
from playground.tools.mcp_servers import parse_mcp_config
from playground.tools.toolbox import FunctionTools, Toolbox
from tinymodels.script import LOCATION_TOOL, USER_CITY, WEATHER_REPORTS, WEATHER_TOOL, case

pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parent.parent
WEATHER_SERVER = {"mcpServers": {"weather": {"command": sys.executable,
                                             "args": [str(ROOT / "tests" / "mcp_weather_server.py")]}}}
TIME_SERVER = {"mcpServers": {"time": {"command": sys.executable,
                                       "args": ["-m", "mcp_server_time", "--local-timezone=Asia/Shanghai"]}}}
EVERY_FORMAT = ["tiny-bf16", "tiny-fp8", "tiny-gptq-int4", "tiny-awq-int4", "tiny-moe", "tiny-gguf-q4_k_m"]
SOME_FORMATS = ["tiny-bf16", "tiny-gguf-q4_k_m"]


@pytest.fixture(scope="module")
def playground():
    playground = Playground(AppConfig(max_models=1))
    yield playground
    playground.close()


@pytest.fixture(scope="module")
def weather(playground):
    return playground.toolbox(mcp=parse_mcp_config(WEATHER_SERVER))


def ask(playground, model, question, toolbox, stop=None, **settings):
    request = playground.request([{"role": "user", "content": question}], model=model, toolbox=toolbox,
                                 settings={"seed": 7, **settings})
    events = []
    result = playground.reply(request, on_event=events.append) if stop is None else None
    if stop is not None:
        events = list(playground.chat(request, stop=stop))
    return result, events


def calls_of(result):
    return [(r.name, r.arguments) for r in result.reply.all_results]


def question_of(name):
    return case(name).messages[-1]["content"]


@pytest.mark.parametrize("model", EVERY_FORMAT)
def test_a_call_its_result_and_the_answer_that_quotes_it(playground, weather, model):
    result, _ = ask(playground, model, question_of("tool_call"), weather)
    assert calls_of(result) == list(case("tool_call").calls)
    assert [r.content for r in result.reply.all_results] == [WEATHER_REPORTS["Paris"]]
    assert result.reply.turns[0].reasoning == case("tool_call").reasoning
    assert (result.reply.reasoning, result.reply.answer) == (case("tool_answer").reasoning, case("tool_answer").answer)


@pytest.mark.parametrize("model", EVERY_FORMAT)
def test_parallel_calls_run_in_order(playground, weather, model):
    result, events = ask(playground, model, question_of("tool_parallel"), weather)
    assert calls_of(result) == list(case("tool_parallel").calls)
    assert [e.round for e in events if isinstance(e, ToolCallStarted)] == [1, 1]
    assert result.reply.answer == case("tool_parallel_answer").answer


@pytest.mark.parametrize("model", EVERY_FORMAT)
def test_a_call_drafted_while_thinking_does_not_run(playground, weather, model):
    result, events = ask(playground, model, question_of("tool_drafted"), weather)
    assert not any(isinstance(e, ToolResult) for e in events)
    assert "<tool_call>" in result.reply.reasoning and result.reply.answer == case("tool_drafted").answer


@pytest.mark.parametrize("model", EVERY_FORMAT)
def test_without_tools_the_model_answers_without_calling(playground, model):
    result, _ = ask(playground, model, question_of("tool_none_offered"), None)
    assert result.reply.answer == case("tool_none_offered").answer and not result.reply.calls
    assert "tool_calls" not in result.to_dict()


@pytest.mark.parametrize("model", SOME_FORMATS)
def test_the_answer_depends_on_the_result_the_model_read(playground, model):
    rainy = Toolbox([FunctionTools("test", [(WEATHER_TOOL, lambda city: "rainy and 12 degrees"),
                                            (LOCATION_TOOL, lambda: USER_CITY)])])  # the tools it was trained with
    result, _ = ask(playground, model, question_of("tool_call"), rainy)
    assert result.reply.answer == case("tool_answer_rainy").answer


@pytest.mark.parametrize("model", SOME_FORMATS)
def test_a_chain_of_rounds_and_the_round_limit(playground, weather, model):
    result, _ = ask(playground, model, question_of("tool_chain_location"), weather)
    assert calls_of(result) == [*case("tool_chain_location").calls, *case("tool_chain_weather").calls]
    assert [r.round for r in result.reply.all_results] == [1, 2]
    assert result.reply.answer == case("tool_chain_answer").answer
    limited = playground.toolbox(mcp=parse_mcp_config(WEATHER_SERVER), max_rounds=1)
    result, events = ask(playground, model, question_of("tool_chain_location"), limited)
    assert calls_of(result) == list(case("tool_chain_location").calls)  # the second round's call never ran
    assert isinstance(events[-1], RoundLimitReached) and result.to_dict()["stop_reason"] == "round_limit"


@pytest.mark.parametrize("model", SOME_FORMATS)
def test_calls_in_reasoning_that_never_closed_run(playground, weather, model):
    result, _ = ask(playground, model, question_of("tool_unclosed"), weather)
    assert calls_of(result) == list(case("tool_unclosed").calls)
    assert result.reply.turns[0].reasoning == case("tool_unclosed").reasoning


def test_stop_while_a_tool_runs(playground):
    started, release, stop = threading.Event(), threading.Event(), threading.Event()

    def stuck(city):
        started.set()
        release.wait(60)
        return "too late"

    threading.Thread(target=lambda: started.wait(120) and stop.set(), daemon=True).start()
    toolbox = Toolbox([FunctionTools("test", [(WEATHER_TOOL, stuck), (LOCATION_TOOL, lambda: USER_CITY)])])
    try:
        _, events = ask(playground, "tiny-bf16", question_of("tool_call"), toolbox, stop=stop)
    finally:
        release.set()
    assert [e.error for e in events if isinstance(e, ToolResult)] == ["cancelled"]
    assert events[-1] == next(e for e in events if isinstance(e, ToolResult))  # nothing after Stop


@pytest.mark.parametrize("model", SOME_FORMATS)
def test_the_cards_time_server(playground, model):
    time_tools = playground.toolbox(mcp=parse_mcp_config(TIME_SERVER))
    result, _ = ask(playground, model, question_of("time_call"), time_tools)
    assert calls_of(result) == list(case("time_call").calls)
    (tool_result,) = result.reply.all_results
    assert tool_result.error is None and '"timezone": "Asia/Tokyo"' in tool_result.content
    assert result.reply.answer == case("time_answer").answer


def test_a_real_llama_cpp_server_leaves_calls_in_the_content_and_takes_results_back(tmp_path):
    """llama_cpp.server renders the tools with the GGUF's template and streams the model's
    ``<tool_call>`` text as content: the remote backend parses it and sends results back."""
    from test_remote_backend import MODEL, start_server

    server = start_server(tmp_path)
    remote = Playground(AppConfig(remote_base_url=server.url))
    try:
        weather_tools = remote.toolbox(mcp=parse_mcp_config(WEATHER_SERVER))
        result, _ = ask(remote, f"remote:{MODEL}", question_of("tool_parallel"), weather_tools)
    finally:
        remote.close()
        server.stop()
    assert calls_of(result) == list(case("tool_parallel").calls)
    assert [r.content for r in result.reply.all_results] == [WEATHER_REPORTS["Paris"], WEATHER_REPORTS["Tokyo"]]
    assert result.reply.answer == case("tool_parallel_answer").answer
