"""Tool calls as chat messages: the records their messages carry, the history rules that send
them back to the model, export and import, reload, and the reply view that builds them."""
from __future__ import annotations

import json
import threading

import pytest

from core import chat_io
from core.chat import model_messages
from core.events import AnswerDelta, GenerationStats, ReasoningDelta
from core.messages import goes_to_model, kind_of, record_of, reply_id_of, tool_record
from core.tools import (ApprovalRequested, RoundLimitReached, RoundStarted, ToolCall, ToolCallError, ToolCallStarted,
                        ToolResult)
from playground.tools.approval import LiveReplies, ReplyControl
from playground.tools.selection import ToolSelection
from ui.formatting import close_reply, tool_call_message, tool_result_message
from ui.reply_view import ReplyView

pytestmark = pytest.mark.timeout(60)

CALL = ToolCall("call_1", "get_weather", {"city": "Paris"}, "", 0)
CALL_2 = ToolCall("call_2", "get_weather", {"city": "Tokyo"}, "", 1)


def stats() -> GenerationStats:
    return GenerationStats(10, 5, 0.01, 100.0, 0.1, "stop")


def result(call: ToolCall, content: str, round: int = 1, error=None) -> ToolResult:
    return ToolResult(call.id, call.name, call.arguments, content, error, 0.02, False, round)


def reply_messages(events) -> list[dict]:
    history = [{"role": "user", "content": "What is the weather in Paris and Tokyo?"}]
    view = ReplyView(history, "r1")
    for event in events:
        view.add(event)
    view.close()
    return history


TWO_ROUNDS = [ReasoningDelta("I call both."), AnswerDelta("Let me check."), CALL, CALL_2, stats(),
              ToolCallStarted(CALL.id, CALL.name, CALL.arguments, 1), result(CALL, "sunny"),
              ToolCallStarted(CALL_2.id, CALL_2.name, CALL_2.arguments, 1), result(CALL_2, "rainy"),
              RoundStarted(2), ReasoningDelta("Both are back."), AnswerDelta("Paris: sunny; Tokyo: rainy."), stats()]


def test_a_reply_with_calls_is_shown_round_by_round_and_carries_its_calls():
    history = reply_messages(TWO_ROUNDS)
    kinds = [kind_of(m) for m in history]
    assert kinds == [None, "reasoning", "answer", "tool_call", "tool_result", "tool_call", "tool_result",
                     "reasoning", "answer"]
    call, shown = history[3], history[4]
    assert call["metadata"]["status"] == "done" and call["metadata"]["log"] == "sunny"
    assert shown["metadata"]["parent_id"] == call["metadata"]["id"]  # the result is nested in its call
    assert "sunny" in shown["content"]
    assert record_of(shown) == {"id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"},
                                "result": "sunny", "error": None, "round": 1, "duration_s": 0.02,
                                "truncated": False}
    assert reply_id_of(shown) == "r1"
    assert not goes_to_model(call) and not goes_to_model(shown)


def test_the_history_goes_back_to_the_model_by_the_templates_rules():
    history = reply_messages(TWO_ROUNDS) + [{"role": "user", "content": "Thanks!"}]
    messages = model_messages(history)
    assert messages == [
        {"role": "user", "content": "What is the weather in Paris and Tokyo?"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Tokyo"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": "rainy"},
        {"role": "assistant", "content": "Paris: sunny; Tokyo: rainy."},
        {"role": "user", "content": "Thanks!"},
    ]


def test_a_round_without_text_gets_its_own_assistant_message_and_rounds_stay_apart():
    chain = [CALL, stats(), ToolCallStarted(CALL.id, CALL.name, CALL.arguments, 1), result(CALL, "Paris"),
             RoundStarted(2), CALL_2, stats(), ToolCallStarted(CALL_2.id, CALL_2.name, CALL_2.arguments, 2),
             result(CALL_2, "rainy", round=2), RoundStarted(3), AnswerDelta("Done."), stats()]
    messages = model_messages(reply_messages(chain) + [{"role": "user", "content": "ok"}])
    roles = [(m["role"], m.get("content"), [c["id"] for c in m.get("tool_calls", [])]) for m in messages]
    assert roles == [("user", "What is the weather in Paris and Tokyo?", []), ("assistant", "", ["call_1"]),
                     ("tool", "Paris", []), ("assistant", "", ["call_2"]), ("tool", "rainy", []),
                     ("assistant", "Done.", []), ("user", "ok", [])]


def test_a_call_that_did_not_parse_goes_back_as_the_model_wrote_it():
    bad = ToolCallError('<tool_call>\n{"name": "get_weather", "arguments": {"city": Paris}}\n</tool_call>',
                        "the arguments are not valid JSON", 0, "call_9", "get_weather")
    failure = ToolResult(bad.id, bad.name, None, "Error: the arguments are not valid JSON", "invalid_call", 0.0)
    history = reply_messages([bad, stats(), failure, RoundStarted(2), AnswerDelta("Sorry."), stats()])
    shown = next(m for m in history if kind_of(m) == "tool_result")
    body = '{"name": "get_weather", "arguments": {"city": Paris}}'
    assert record_of(shown)["raw"] == body
    assert shown["metadata"]["title"] == "Error: the call did not parse"
    messages = model_messages(history + [{"role": "user", "content": "again"}])
    assert messages[1]["tool_calls"][0]["function"]["arguments"] == body
    assert messages[2] == {"role": "tool", "tool_call_id": "call_9", "content": "Error: the arguments are not valid JSON"}


def test_a_call_waiting_for_approval_shows_run_and_skip_and_a_skip_reaches_the_model():
    history = [{"role": "user", "content": "q"}]
    view = ReplyView(history, "r2")
    view.add(CALL)
    view.add(ApprovalRequested(CALL.id, CALL.name, CALL.arguments, 1))
    waiting = history[-1]
    assert [o["label"] for o in waiting["options"]] == ["▶ Run", "Skip"]
    assert waiting["options"][0]["value"] == "run:call_1" and waiting["metadata"]["status"] == "pending"
    view.add(ToolResult(CALL.id, CALL.name, CALL.arguments, "The user declined to run this tool call.", "declined"))
    assert "options" not in waiting and waiting["metadata"]["log"] == "skipped by you"
    assert record_of(history[-1])["error"] == "declined"


def test_the_round_limit_is_a_note_that_never_reaches_the_model():
    history = reply_messages([CALL, stats(), RoundLimitReached(8)])
    note = history[-1]
    assert kind_of(note) == "note" and "Round limit reached" in note["metadata"]["title"]


@pytest.mark.parametrize("fmt", ["json", "markdown"])
def test_export_and_import_keep_the_calls_exactly(fmt):
    history = reply_messages(TWO_ROUNDS)
    text = chat_io.to_json(history, "tiny-bf16") if fmt == "json" else chat_io.to_markdown(history, "tiny-bf16")
    back = chat_io.parse(text)
    assert back == chat_io.normalise(history)
    assert [record_of(m) for m in back if kind_of(m) == "tool_result"] == \
        [record_of(m) for m in history if kind_of(m) == "tool_result"]
    if fmt == "markdown":
        assert "**Tool call** · *Tool call: get_weather*" in text and "> rainy" in text


def test_a_reload_mid_call_marks_the_call_interrupted_and_drops_it_from_the_model():
    history = [{"role": "user", "content": "q"}]
    view = ReplyView(history, "r3")
    view.add(CALL)
    view.add(ToolCallStarted(CALL.id, CALL.name, CALL.arguments, 1))
    restored = close_reply(chat_io.normalise(history), "interrupted")
    call = restored[1]
    assert call["metadata"]["status"] == "done" and call["metadata"]["log"] == "interrupted"
    assert kind_of(restored[-1]) == "interrupted"
    assert model_messages(restored + [{"role": "user", "content": "again"}]) == [
        {"role": "user", "content": "q"}, {"role": "user", "content": "again"}]


@pytest.mark.parametrize("damaged, why", [
    ("tool_result:r1:{not json", "does not hold its call record"),
    ('tool_result:r1:{"id": "c", "name": "x"}', "does not hold its call record"),
    ('tool_result:r1:{"id": "c", "name": "x", "result": "y", "arguments": [1]}', "arguments must be an object"),
    ('tool_result:r1:{"id": "c", "name": "x", "result": "y", "round": "2"}', "round must be a whole number"),
])
def test_an_imported_chat_with_a_damaged_call_record_is_refused(damaged, why):
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "r", "metadata": {"id": damaged}}]
    with pytest.raises(chat_io.ChatFileError, match=why):
        chat_io.normalise(messages)


def test_an_openai_shaped_history_keeps_its_tool_fields():
    messages = [{"role": "user", "content": "q"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]
    normal = chat_io.normalise(messages)
    assert normal[1]["tool_calls"][0]["function"]["arguments"] == '{"city": "Paris"}'
    assert model_messages(normal)[-1] == {"role": "tool", "tool_call_id": "c1", "content": "sunny"}


def test_a_result_shown_in_a_fence_survives_backticks():
    record = tool_record(CALL.to_openai(), result(CALL, "```python\nprint(1)\n```").to_dict())
    shown = tool_result_message(record, "r1", "tool_call:r1:call_1")
    assert shown["content"].startswith("````\n") and shown["content"].endswith("\n````")
    assert record_of(shown)["result"] == "```python\nprint(1)\n```"
    assert tool_call_message("c", "f", {"a": "`"}, "r1")["content"].startswith("```json")


# -- approval ---------------------------------------------------------------------------------
def test_run_and_skip_release_the_waiting_loop():
    control = ReplyControl()
    decisions: list[bool] = []
    waiter = threading.Thread(target=lambda: decisions.append(control.wait(CALL)))
    waiter.start()
    assert control.next_waiting(timeout=5) == CALL.id  # the loop's thread is waiting now
    assert not control.decide("another call", True)
    assert control.decide(CALL.id, True)
    waiter.join(5)
    assert decisions == [True]


def test_stop_releases_a_waiting_call_as_not_run():
    control = ReplyControl()
    decisions: list[bool] = []
    waiter = threading.Thread(target=lambda: decisions.append(control.wait(CALL)))
    waiter.start()
    assert control.next_waiting(timeout=5) == CALL.id  # the loop's thread is waiting now
    control.request_stop()
    waiter.join(5)
    assert decisions == [False] and control.stop.is_set()


def test_an_unanswered_call_is_skipped_after_the_time_limit():
    assert ReplyControl(timeout_s=0.01).wait(CALL) is False


def test_live_replies_find_a_sessions_reply_and_a_new_one_stops_the_old():
    live = LiveReplies()
    with live.start("session") as first:
        assert live.get("session") is first
        with live.start("session") as second:
            assert first.stop.is_set() and live.get("session") is second
    assert live.get("session") is None
    with live.start(None) as anonymous:
        assert live.get(None) is None and not anonymous.stop.is_set()


# -- the selection ------------------------------------------------------------------------------
@pytest.mark.parametrize("value, why", [
    ({"code_interpreter": "false"}, "code_interpreter must be true or false"),
    ({"max_rounds": 0}, "max_rounds must be a whole number from 1 to 64"),
    ({"max_rounds": True}, "max_rounds must be a whole number"),
    ({"enabled": "get_weather"}, "enabled must be a list of tool names"),
    ({"mcp_config": 5}, "mcp_config must be the mcpServers JSON"),
    ({"tools": []}, "unknown key 'tools'"),
    ("[1, 2", "not valid JSON"),
    ([1], "must be an object"),
])
def test_a_bad_tool_selection_is_refused_clearly(value, why):
    from core.errors import InvalidSettings

    with pytest.raises(InvalidSettings, match=why):
        ToolSelection.from_value(value)


def test_a_selection_round_trips_through_json():
    selection = ToolSelection('{"mcpServers": {}}', ("get_weather",), True, 3, True)
    assert ToolSelection.from_value(json.dumps(selection.to_dict())) == selection
    assert ToolSelection.from_value(None).empty and ToolSelection.from_value({"max_rounds": 2.0}).max_rounds == 2
