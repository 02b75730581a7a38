"""The chat's named endpoints with tools, on the tiny bf16 model and the tests' MCP weather server
(over stdio): the calls come back as data, Regenerate answers again with its own calls, export
and import keep them; and Stop reaches a call waiting for Run / Skip."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from core.messages import kind_of, record_of, reply_id_of
from tinymodels.script import WEATHER_Q, WEATHER_REPORTS

pytestmark = pytest.mark.timeout(300)

WEATHER = json.dumps({"mcpServers": {"weather": {"command": sys.executable,
                                                 "args": [str(Path(__file__).with_name("mcp_weather_server.py"))]}}})
SETTINGS = [None] * 6 + [7, None]  # the card's preset values, seed 7, no thinking budget
ANSWER = "It is sunny and 21 degrees in Paris."


@pytest.fixture(scope="module")
def client():
    from gradio_client import Client

    from conftest import build_test_app, launch_in_process

    demo = build_test_app(None, "tiny-bf16")
    url = launch_in_process(demo)
    try:
        yield Client(url, verbose=False)
    finally:
        demo.close()
        demo.playground.close()


def calls(history: list[dict]) -> list[dict]:
    return [record_of(m) for m in history if kind_of(m) == "tool_result"]


def answers(history: list[dict]) -> list[str]:
    return [m["content"] for m in history if kind_of(m) == "answer" and m["content"]]


def test_chat_regenerate_export_and_import_keep_the_calls(client):
    tools = {"mcp_config": WEATHER}
    history = client.predict(WEATHER_Q, [], "", True, *SETTINGS, "tiny-bf16", 1.0, tools, api_name="/chat")
    assert answers(history) == [ANSWER]
    [record] = calls(history)
    assert (record["name"], record["arguments"], record["result"], record["error"], record["round"]) == \
        ("get_weather", {"city": "Paris"}, WEATHER_REPORTS["Paris"], None, 1)
    call = next(m for m in history if kind_of(m) == "tool_call")
    result = next(m for m in history if kind_of(m) == "tool_result")
    assert result["metadata"]["parent_id"] == call["metadata"]["id"] == f"tool_call:{reply_id_of(call)}:{record['id']}"

    # Regenerate: the reply is answered again, with a call of its own
    again = client.predict(history, "", True, *SETTINGS, "tiny-bf16", 1.0, tools, api_name="/regenerate")
    assert answers(again) == [ANSWER] and len(calls(again)) == 1
    assert calls(again)[0]["id"] != record["id"] and again[0] == history[0]

    # export (JSON and Markdown) and import give the same chat back, calls included
    for fmt in ("json", "markdown"):
        text = client.predict(history, "tiny-bf16", fmt, api_name="/chat_export")
        back = client.predict(text, api_name="/chat_import")
        assert calls(back) == calls(history) and answers(back) == answers(history)


def test_chat_json_returns_the_calls_like_the_cli(client):
    result = client.predict(WEATHER_Q, [], "", True, *SETTINGS, "tiny-bf16", 1.0, {"mcp_config": WEATHER},
                            api_name="/chat_json")
    assert result["answer"] == ANSWER and result["rounds"] == 2
    assert [(c["name"], c["arguments"], c["result"]) for c in result["tool_calls"]] == \
        [("get_weather", {"city": "Paris"}, WEATHER_REPORTS["Paris"])]
    assert [m["role"] for m in result["messages"]] == ["user", "assistant", "tool", "assistant"]


@pytest.mark.parametrize("tools, why", [
    ({"mcp_config": "{}"}, 'no "mcpServers"'),
    ({"code_interpreter": "yes"}, "code_interpreter must be true or false"),
    ({"mcp_config": WEATHER, "enabled": ["nope"]}, "no tool is named 'nope'"),
])
def test_a_bad_tool_selection_is_said_plainly(client, tools, why):
    history = client.predict(WEATHER_Q, [], "", True, *SETTINGS, "tiny-bf16", 1.0, tools, api_name="/chat")
    assert kind_of(history[-1]) == "error" and why in history[-1]["content"]


def test_stop_reaches_a_call_waiting_for_run_or_skip(tiny_bf16):
    from core.config import AppConfig
    from playground import Playground
    from playground.tools.approval import ReplyControl
    from ui.chat_tab import stream_reply
    from ui.formatting import user_message

    playground = Playground(AppConfig())
    control = ReplyControl()
    stream = stream_reply(playground, [user_message(WEATHER_Q)], "", True, {"seed": 7}, "tiny-bf16", 1.0,
                          tools={"mcp_config": WEATHER, "approve_each": True}, control=control)
    try:
        for history in stream:
            if history[-1].get("options"):  # the call waits: the next step would block on the user
                break
        assert control.waiting_for is None  # not waiting yet: the loop waits once it is asked again
        control.request_stop()
        *_, final = stream
        [record] = calls(final)
        assert record["error"] == "cancelled" and "stopped by the user" in record["result"]
        assert not any(m.get("options") for m in final)
        assert kind_of(final[-1]) == "stats"
    finally:
        playground.pool.unload_all()
        playground.close()
