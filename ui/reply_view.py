"""One reply as chat messages, built from the playground's events as they stream.

Per round of a tool loop: the reasoning panel ("Thinking…", then "Thought for N s"), the text the
model wrote, then each tool call as its own collapsible message (pending while it runs or waits
for Run / Skip; then its duration and a preview of the result) with the full result nested in it.
The final round's answer follows, then the note with the figures (``finish``).
"""
from __future__ import annotations

import time
from typing import Any

from core.events import AnswerDelta, ChatEvent, ReasoningDelta, Reply, ThinkingBudgetReached
from core.messages import content_text, field, is_pending, kind_of, metadata_of, reply_id_of, tool_record
from core.tools import (ApprovalRequested, ReasoningCut, RoundLimitReached, RoundStarted, ToolCallStarted,
                        ToolResult)
from ui.formatting import (answer_message, finish_thought, finish_tool_call, note_message, thought_message,
                           tool_call_message, tool_result_message)

History = list[Any]


class ReplyView:
    """Appends the reply's messages to ``history`` (a list the caller yields to Gradio)."""

    def __init__(self, history: History, reply_id: str, thinking_budget: int = 0) -> None:
        self.history, self.reply_id = history, reply_id
        self.thinking_budget = thinking_budget  # shown while the model thinks (0: none)
        self._reasoning_steps = 0  # reasoning deltas of this round: about one a token
        self.reply = Reply()
        self.started = time.perf_counter()
        self._thought: dict[str, Any] | None = None
        self._answer: dict[str, Any] | None = None
        self._calls: dict[str, dict[str, Any]] = {}  # call id -> its message
        self.shown_any = False

    def resume(self, reasoning: str | None, answer: str | None) -> None:
        """Continue a reply cut short (``core.continuation``): its reasoning panel and answer,
        already in the history, take the continuation's text after their own; a panel cut
        while the model was thinking spins again."""
        for i, message in enumerate(self.history):
            kind = kind_of(message)
            if kind not in ("reasoning", "answer") or reply_id_of(message) != self.reply_id:
                continue
            copy = {"role": "assistant", "content": content_text(field(message, "content")),
                    "metadata": dict(metadata_of(message))}
            self.history[i] = copy
            if kind == "reasoning":
                self._thought = copy
            else:
                self._answer = copy
        self.reply.reasoning, self.reply.answer = reasoning or "", answer or ""
        if self._thought is not None and self._answer is None:
            reopened = thought_message(self._thought["content"], self.reply_id)
            self._thought["metadata"] = reopened["metadata"]
        self.shown_any = self._thought is not None or self._answer is not None

    def restart_clock(self) -> None:
        self.started = time.perf_counter()

    def add(self, event: ChatEvent) -> bool:
        """Take one event; True when the messages changed (worth a UI update)."""
        previous_calls = list(self.reply.calls)  # RoundStarted moves them into reply.turns
        self.reply.add(event)
        if isinstance(event, (ReasoningDelta, ReasoningCut)):
            if self._thought is None:
                self._thought = self._append(thought_message("", self.reply_id))
            self._thought["content"] = self.reply.reasoning
            self._reasoning_steps += 1
            if self.thinking_budget and is_pending(self._thought) and self.reply.budget_reached is None:
                self._thought["metadata"]["log"] = \
                    f"≈{min(self._reasoning_steps, self.thinking_budget):,} / {self.thinking_budget:,} tokens"
        if isinstance(event, (AnswerDelta, ReasoningCut)) and self.reply.answer:
            self._close_thought()
            if self._answer is None:
                self._answer = self._append(answer_message("", self.reply_id))
            self._answer["content"] = self.reply.answer
        elif isinstance(event, ApprovalRequested):
            self._close_thought()
            self._call_message(event.call_id, event.name, event.arguments, awaiting=True)
        elif isinstance(event, ToolCallStarted):
            self._close_thought()
            message = self._call_message(event.call_id, event.name, event.arguments)
            message.pop("options", None)
            message["metadata"]["log"] = "running…"
        elif isinstance(event, ToolResult):
            self._close_thought()
            self._finish_call(event, previous_calls)
        elif isinstance(event, ThinkingBudgetReached) and self._thought is not None:
            if is_pending(self._thought):
                self._thought["metadata"]["log"] = f"budget of {event.budget:,} tokens reached: its end is inserted"
            else:  # a server's budget, known once the reply ended
                self._mark_budget_cut()
        elif isinstance(event, RoundStarted):
            self._thought = self._answer = None  # the next round's reasoning and text are new messages
            self._reasoning_steps = 0
        elif isinstance(event, RoundLimitReached):
            self._append(note_message(f"Round limit reached: the model still called tools after "
                                      f"{event.max_rounds} rounds", self.reply_id,
                                      "These calls did not run. Raise the round limit in the Tools panel to allow more."))
        elif not isinstance(event, (ReasoningDelta, ReasoningCut, AnswerDelta)):
            return False
        return True

    def close(self) -> None:
        """The reply ended (or was cut off): a panel still spinning is closed, its text kept."""
        if self._thought is not None and is_pending(self._thought):
            finish_thought(self._thought, self._elapsed(), cut_off=True)
        if not self.shown_any:
            self._append(answer_message("", self.reply_id))

    # -- helpers ----------------------------------------------------------------------------
    def _append(self, message: dict[str, Any]) -> dict[str, Any]:
        self.history.append(message)
        self.shown_any = True
        return message

    def _elapsed(self) -> float:
        return time.perf_counter() - self.started

    def _close_thought(self) -> None:
        if self._thought is not None and is_pending(self._thought):
            finish_thought(self._thought, self._elapsed())
            if self.reply.budget_reached is not None:
                self._mark_budget_cut()

    def _mark_budget_cut(self) -> None:
        """Said on the reasoning panel: its end was not the model's."""
        cut = self.reply.budget_reached
        metadata = self._thought["metadata"]
        metadata["title"] += f" · cut at the {cut.budget:,}-token thinking budget"
        metadata["log"] = ("the server ended it" + (" with Qwen's early-stop text" if cut.text.strip() != "</think>" else "")
                           if cut.by_server else "the last sentence was inserted (Qwen's early-stop text)")

    def _call_message(self, call_id: str, name: str, arguments: Any, awaiting: bool = False) -> dict[str, Any]:
        message = self._calls.get(call_id)
        if message is None:
            message = self._calls[call_id] = self._append(
                tool_call_message(call_id, name, arguments, self.reply_id, awaiting))
        return message

    def _finish_call(self, result: ToolResult, calls: list[Any]) -> None:
        call = next((c for c in calls if c.id == result.call_id), None)
        openai_call = call.to_openai() if call is not None else \
            {"id": result.call_id, "function": {"name": result.name, "arguments": ""}}
        record = tool_record(openai_call, result.to_dict())
        record["name"] = record["name"] or "(unparsed call)"
        shown = result.arguments if result.arguments is not None else record.get("raw", "")
        message = self._call_message(result.call_id, record["name"], shown)
        finish_tool_call(message, record)
        self._append(tool_result_message(record, self.reply_id, metadata_of(message)["id"]))
