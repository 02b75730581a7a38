"""The tool loop: generate, run the calls, hand the results back, generate again.

Each round the model writes a turn; if it called tools, the toolbox runs them in order, the turn
(with its reasoning, which Qwen3's template keeps inside a tool loop) and one ``tool`` message per
call are appended to the conversation, and the model goes on. It ends with a turn without calls,
at Stop (also while a tool runs), or when the model still calls tools after the round limit.

With ``approve`` (the UI's "ask before each call"), each call waits for it: the loop yields
:class:`ApprovalRequested`, then calls ``approve``, which blocks until the user runs or skips the
call; a skipped call returns "declined" to the model.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

from core.events import ChatEvent, Reply
from core.request import ChatRequest
from core.tools import (ApprovalRequested, RoundLimitReached, RoundStarted, ToolCall, ToolCallStarted, ToolResult,
                        tool_message)

Generate = Callable[[ChatRequest], Iterator[ChatEvent]]
Approve = Callable[[ToolCall], bool]  # True: run the call; False: skip it (or Stop was pressed)
DECLINED = "The user declined to run this tool call."


def run_tool_loop(generate: Generate, request: ChatRequest, stop: threading.Event | None = None,
                  approve: Approve | None = None) -> Iterator[ChatEvent]:
    """The events of every round (see the module docstring); ``request.toolbox`` runs the calls."""
    toolbox = request.toolbox
    assert toolbox is not None, "run_tool_loop needs a request with tools"
    for round in range(1, toolbox.max_rounds + 2):
        turn = Reply()
        stream = generate(request)
        try:
            for event in stream:
                turn.add(event)
                yield event
        finally:
            stream.close()
        stopped = (stop is not None and stop.is_set()) or (turn.stats and turn.stats.finish_reason == "cancelled")
        if not turn.calls or stopped:
            return
        if round > toolbox.max_rounds:
            yield RoundLimitReached(toolbox.max_rounds)
            return
        results = []
        for call in turn.calls:
            if isinstance(call, ToolCall) and approve is not None:
                yield ApprovalRequested(call.id, call.name, call.arguments, round)
                if not approve(call):
                    stopped = stop is not None and stop.is_set()
                    result = ToolResult(call.id, call.name, call.arguments,
                                        f"Error: {call.name} was stopped by the user" if stopped else DECLINED,
                                        "cancelled" if stopped else "declined", round=round)
                    results.append(result)
                    yield result
                    if stopped:
                        return
                    continue
            if isinstance(call, ToolCall):
                yield ToolCallStarted(call.id, call.name, call.arguments, round)
            result = toolbox.run(call, round, stop)
            results.append(result)
            yield result
            if stop is not None and stop.is_set():
                return
        assistant = turn.exchange()[0]  # the turn as an assistant message with its tool_calls
        request = request.continued(assistant, *map(tool_message, results))
        yield RoundStarted(round + 1)
