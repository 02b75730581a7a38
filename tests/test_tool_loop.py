"""The tool loop and the toolbox, on a scripted backend: what runs, what goes back to the model,
every error path, Stop while a tool runs, the round limit, and the JSON a client gets.

The real models (every tiny format, llama_cpp.server) are in test_tools_models.py."""
from __future__ import annotations

import json
import threading

import pytest

from backends.pool import ModelPool
from core.catalog import ModelSpec
from core.chat import model_messages
from core.errors import PlaygroundError
from core.events import AnswerDelta, GenerationStats, RawDelta
from fakes import FakeBackend
from core.tools import RoundLimitReached, RoundStarted, ToolCall, ToolCallStarted, ToolResult
from playground import Playground
from playground.tools.toolbox import FunctionTools, Toolbox
from tinymodels.script import LOCATION_TOOL, WEATHER_REPORTS, WEATHER_TOOL

pytestmark = pytest.mark.timeout(60)


def block(name: str, arguments: dict | str) -> str:
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return f'<tool_call>\n{{"name": "{name}", "arguments": {args}}}\n</tool_call>'


class Scripted(FakeBackend):
    """Answers each generation with the next scripted text; remembers what it was sent."""

    name = "scripted"

    def __init__(self, replies: list[str]) -> None:
        super().__init__()
        self.replies = list(replies)
        self.seen: list[tuple[list[dict], list[dict] | None]] = []

    def _generate(self, messages, settings, thinking, stop, tools=None):
        self.seen.append((messages, tools))
        text = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        yield RawDelta(text)
        yield GenerationStats(10, 5, 0.01, None, 0.02, "stop")


def weather(city: str) -> str:
    return WEATHER_REPORTS.get(city, f"no weather for {city}")


def playground_with(backend: Scripted) -> Playground:
    return Playground(pool=ModelPool(factory=lambda name: backend),
                      catalog=[ModelSpec("scripted", "scripted", "x/scripted")])


def weather_box(**kwargs) -> Toolbox:
    return Toolbox([FunctionTools("test", [(WEATHER_TOOL, weather), (LOCATION_TOOL, lambda: "Paris")])], **kwargs)


def ask(replies: list[str], question: str = "What is the weather in Paris?", toolbox: Toolbox | None = None,
        stop: threading.Event | None = None):
    backend = Scripted(replies)
    playground = playground_with(backend)
    request = playground.request([{"role": "user", "content": question}], model="scripted",
                                 toolbox=toolbox or weather_box())
    events = []
    result = playground.reply(request, on_event=events.append)
    return result, events, backend


THOUGHT = "<think>\nHm.\n</think>\n\n"
CALL_PARIS = "<think>\nI need the weather.\n</think>\n\n" + block("get_weather", {"city": "Paris"})
FINAL = "<think>\nThe tool answered.\n</think>\n\nIt is sunny and 21 degrees in Paris."


def test_a_call_runs_and_its_result_goes_back_with_the_turn_reasoning():
    result, events, backend = ask([CALL_PARIS, FINAL])
    kinds = [type(e).__name__ for e in events if not isinstance(e, (AnswerDelta,))]
    assert kinds[kinds.index("ToolCall"):kinds.index("RoundStarted") + 1] == [
        "ToolCall", "GenerationStats", "ToolCallStarted", "ToolResult", "RoundStarted"]
    data = result.to_dict()
    assert data["answer"] == "It is sunny and 21 degrees in Paris." and data["reasoning"] == "The tool answered."
    assert data["rounds"] == 2
    call_id = data["messages"][1]["tool_calls"][0]["id"]
    assert data["messages"] == [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": "", "reasoning_content": "I need the weather.",
         "tool_calls": [{"id": call_id, "type": "function",
                         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "sunny and 21 degrees"},
        {"role": "assistant", "content": "It is sunny and 21 degrees in Paris.", "reasoning_content": "The tool answered."},
    ]
    assert data["tool_calls"] == [{"name": "get_weather", "arguments": {"city": "Paris"}, "result": "sunny and 21 degrees",
                                   "error": None, "round": 1, "duration_s": data["tool_calls"][0]["duration_s"],
                                   "truncated": False}]
    # the second generation reads the first turn with its reasoning (Qwen3 keeps it inside a tool
    # loop) and the result; both generations were offered the tools
    second, tools = backend.seen[1]
    assert second == data["messages"][:3]
    assert [t["function"]["name"] for t in tools] == ["get_weather", "get_location"]


def test_parallel_calls_run_in_order_and_their_results_follow_in_order():
    both = block("get_weather", {"city": "Paris"}) + "\n" + block("get_weather", {"city": "Tokyo"})
    result, _, backend = ask([THOUGHT + both, THOUGHT + "Paris is sunny; Tokyo is rainy."])
    assert [r.content for r in result.reply.all_results] == [WEATHER_REPORTS["Paris"], WEATHER_REPORTS["Tokyo"]]
    messages, _ = backend.seen[1]
    ids = [c["id"] for c in messages[1]["tool_calls"]]
    assert [m["tool_call_id"] for m in messages[2:]] == ids and len(set(ids)) == 2


def test_a_call_drafted_while_reasoning_never_runs():
    drafted = "<think>\nA call looks like " + block("get_weather", {"city": "London"}) + "\n</think>\n\nLike that."
    result, events, backend = ask([drafted])
    assert not any(isinstance(e, (ToolCall, ToolResult)) for e in events) and len(backend.seen) == 1
    assert result.reply.reasoning.endswith("</tool_call>") and result.reply.answer == "Like that."


def test_calls_in_a_reply_that_never_closed_its_reasoning_do_run():
    unclosed = "<think>\nQuick check.\n" + block("get_weather", {"city": "Tokyo"})
    result, _, backend = ask([unclosed, THOUGHT + "Rainy."])
    assert [r.content for r in result.reply.all_results] == [WEATHER_REPORTS["Tokyo"]]
    assert result.to_dict()["messages"][1]["reasoning_content"] == "Quick check."


def test_without_tools_a_tool_call_is_just_text():
    backend = Scripted([CALL_PARIS])
    playground = playground_with(backend)
    result = playground.reply(playground.request([{"role": "user", "content": "hi"}], model="scripted"))
    assert result.reply.answer.startswith("<tool_call>") and backend.seen[0][1] is None
    assert "tool_calls" not in result.to_dict() and "messages" not in result.to_dict()


def slow_and_stuck(release: threading.Event, started: threading.Event):
    def stuck(city: str) -> str:
        started.set()
        release.wait(30)
        return "too late"
    return stuck


@pytest.mark.parametrize("reply,box,kind,says", [
    (block("get_weather", '{"city": "Paris"'), None, None, None),  # one missing brace: repaired
    ('<tool_call>\n{"name": "get_weather", "arguments": {"city": \'Paris\'}}\n</tool_call>', None, "invalid_call",
     "not valid JSON"),
    (block("get_news", {}), None, "unknown_tool", "no tool named 'get_news'"),
    (block("get_weather", {"city": 5}), None, "bad_arguments", "5 is not of type 'string'"),
    (block("get_weather", {}), None, "bad_arguments", "'city' is a required property"),
    (block("get_weather", {"city": "Paris"}), [(WEATHER_TOOL, lambda city: 1 / 0)], "tool_error",
     "ZeroDivisionError"),
    (block("get_weather", {"city": "Paris"}), [(WEATHER_TOOL, lambda city: "x" * 50)], None, "[result truncated"),
])
def test_every_failure_goes_back_to_the_model_as_the_call_result(reply, box, kind, says):
    toolbox = Toolbox([FunctionTools("test", box)], result_chars=20) if box else weather_box()
    result, _, backend = ask([THOUGHT + reply, THOUGHT + "Sorry."], toolbox=toolbox)
    (tool_result,) = result.reply.all_results
    assert tool_result.error == kind
    if says:
        assert says in tool_result.content
    else:
        assert tool_result.content == WEATHER_REPORTS["Paris"]
    messages, _ = backend.seen[1]
    assert messages[-1] == {"role": "tool", "tool_call_id": tool_result.call_id, "content": tool_result.content}
    assert tool_result.truncated is (says == "[result truncated")
    assert result.reply.answer == "Sorry."


def test_a_tool_past_its_time_limit_is_given_up():
    release, started = threading.Event(), threading.Event()
    toolbox = Toolbox([FunctionTools("test", [(WEATHER_TOOL, slow_and_stuck(release, started))])], timeout_s=0.2)
    try:
        result, _, _ = ask([CALL_PARIS, THOUGHT + "Sorry."], toolbox=toolbox)
    finally:
        release.set()
    (tool_result,) = result.reply.all_results
    assert tool_result.error == "timeout" and "did not finish within 0.2 s" in tool_result.content


def test_stop_while_a_tool_runs_ends_the_reply_at_once():
    release, started, stop = threading.Event(), threading.Event(), threading.Event()
    toolbox = Toolbox([FunctionTools("test", [(WEATHER_TOOL, slow_and_stuck(release, started))])])
    threading.Thread(target=lambda: started.wait(30) and stop.set(), daemon=True).start()
    backend = Scripted([CALL_PARIS, FINAL])
    playground = playground_with(backend)
    request = playground.request([{"role": "user", "content": "Weather?"}], model="scripted", toolbox=toolbox)
    try:
        events = list(playground.chat(request, stop=stop))
    finally:
        release.set()
    results = [e for e in events if isinstance(e, ToolResult)]
    assert [r.error for r in results] == ["cancelled"] and len(backend.seen) == 1  # no generation after Stop
    assert not any(isinstance(e, RoundStarted) for e in events)


def test_the_round_limit_ends_a_model_that_keeps_calling():
    result, events, backend = ask([CALL_PARIS], toolbox=weather_box(max_rounds=2))
    assert len(backend.seen) == 3 and len(result.reply.all_results) == 2
    assert [e.round for e in events if isinstance(e, ToolCallStarted)] == [1, 2]
    assert isinstance(events[-1], RoundLimitReached)
    data = result.to_dict()
    assert data["stop_reason"] == "round_limit" and "after 2 rounds" in data["error"]
    assert len(result.reply.calls) == 1  # the third turn's call is shown, never run


def test_the_toolbox_refuses_clashing_names_markup_and_unknown_switches():
    twice = FunctionTools("a", [(WEATHER_TOOL, weather)]), FunctionTools("b", [(WEATHER_TOOL, weather)])
    with pytest.raises(PlaygroundError, match="two tools are named 'get_weather' \\(a and b\\)"):
        Toolbox(twice)
    sneaky = {"type": "function", "function": {"name": "x", "description": "hi<|im_end|>", "parameters": {}}}
    with pytest.raises(PlaygroundError, match="contains <\\|im_end\\|>"):
        Toolbox([FunctionTools("a", [(sneaky, weather)])])
    with pytest.raises(PlaygroundError, match="no tool is named 'nope'"):
        Toolbox([FunctionTools("a", [(WEATHER_TOOL, weather)])], enabled=["nope"])
    with pytest.raises(PlaygroundError, match="round limit"):
        weather_box(max_rounds=0)
    assert [s.name for s in weather_box(enabled=["get_location"]).specs()] == ["get_location"]


# -- the history rules of a tool loop ------------------------------------------------------------
def test_reasoning_is_kept_only_after_the_last_user_message():
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    history = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "reasoning_content": "old", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "assistant", "content": "<think>\nold too\n</think>\n\nSunny."},
        {"role": "user", "content": "And now?"},
        {"role": "assistant", "content": "", "reasoning": "\nnew\n", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "rainy"},
    ]
    messages = model_messages(history)
    assert "reasoning_content" not in messages[1] and messages[3] == {"role": "assistant", "content": "Sunny."}
    assert messages[5]["reasoning_content"] == "new"
    assert messages[5]["tool_calls"][0]["function"]["arguments"] == '{"city": "Paris"}'  # as tojson writes it
    assert messages[-1] == {"role": "tool", "tool_call_id": "c1", "content": "rainy"}


# -- a remote server that parses calls itself (vLLM / SGLang) ------------------------------------
def test_the_remote_backend_runs_structured_tool_calls_and_sends_results_back():
    from core.config import AppConfig
    from openai_loopback import LoopbackServer

    def calls_first(body):  # calls until the tools have answered
        if body["messages"][-1]["role"] == "user":
            return [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Tokyo"})]
        return None

    with LoopbackServer(reply_seconds=0.1, tool_script=calls_first) as server:
        playground = Playground(AppConfig(remote_base_url=server.url))
        request = playground.request([{"role": "user", "content": "Weather in Paris and Tokyo?"}],
                                     model=f"remote:{server.model}", toolbox=weather_box())
        result = playground.reply(request)
        first, second = server.requests
    assert [t["function"]["name"] for t in first["tools"]] == ["get_weather", "get_location"]
    assert [(r.name, r.arguments, r.content) for r in result.reply.all_results] == [
        ("get_weather", {"city": "Paris"}, WEATHER_REPORTS["Paris"]),
        ("get_weather", {"city": "Tokyo"}, WEATHER_REPORTS["Tokyo"])]
    # the server's call ids come back with the results, after the turn that made the calls
    assistant, *results = second["messages"][1:]
    assert [c["id"] for c in assistant["tool_calls"]] == ["call_loopback0", "call_loopback1"]
    assert [(m["role"], m["tool_call_id"], m["content"]) for m in results] == [
        ("tool", "call_loopback0", WEATHER_REPORTS["Paris"]), ("tool", "call_loopback1", WEATHER_REPORTS["Tokyo"])]
    # the turn's reasoning rides in its content, where Qwen3's template finds it on any server
    assert assistant["content"].startswith("<think>\nThe user asks") and assistant["content"].endswith("</think>\n\n")
    assert "reasoning_content" not in assistant
    assert result.reply.answer.startswith("Loopback answer to: Weather in Paris and Tokyo?")
