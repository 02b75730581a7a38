"""Tools, as data: what a model may call, what a call returned, and the loop's events.

A *tool source* (an MCP server, the code interpreter, Python functions in tests) lists
:class:`ToolSpec`\\ s and runs calls; the playground's toolbox (``playground/tools``) puts sources
together, checks every call and turns whatever happens into a :class:`ToolResult` that goes back
to the model as a ``tool`` message. This module is library-free: the rules, not the plumbing.
"""
from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol, runtime_checkable

# Qwen3's added tokens (docs/library-notes.md, "Qwen3's tokens"): text holding one of them would
# act as markup if it reached a prompt's template text. Tool schemas are rendered as template
# text (the chat template writes them with ``tojson``), so a tool whose schema holds one is refused.
QWEN3_ADDED_TOKENS: tuple[str, ...] = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>",
    "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
    "<tool_response>", "</tool_response>", "<think>", "</think>",
)

DEFAULT_MAX_ROUNDS = 8  # tool rounds per reply (a round: the model calls, the tools run)
MAX_ROUNDS_LIMIT = 64
DEFAULT_TOOL_TIMEOUT_S = 30.0
DEFAULT_RESULT_CHARS = 16_000  # a result longer than this is cut (and marked) before the model reads it


@dataclass(frozen=True)
class ToolSpec:
    """One tool: its name, what it does, and the JSON schema of its arguments."""

    name: str
    description: str | None
    parameters: Mapping[str, Any]  # JSON Schema of the arguments object
    source: str  # where it comes from: "mcp:<server>", "code_interpreter", ...

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI ``tools`` item, which is also what the chat template renders."""
        function: dict[str, Any] = {"name": self.name}
        if self.description is not None:
            function["description"] = self.description
        function["parameters"] = dict(self.parameters)
        return {"type": "function", "function": function}

    def markup_in_schema(self) -> str | None:
        """The first Qwen3 control token the rendered schema would contain, if any."""
        text = json.dumps(self.to_openai(), ensure_ascii=False)
        return next((token for token in QWEN3_ADDED_TOKENS if token in text), None)


def new_call_id() -> str:
    """A fresh OpenAI-style tool call id: ``call_`` and 24 random hex digits."""
    return "call_" + secrets.token_hex(12)


@dataclass(frozen=True)
class ToolCall:
    """A complete, parsed tool call. ``index`` is the block's position among the turn's blocks."""

    id: str
    name: str
    arguments: dict[str, Any]
    raw: str  # the block as the model wrote it, tags included ("" when a server parsed it)
    index: int

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI chat format's ``tool_calls`` item (arguments as a JSON string, written as
        the chat template's ``tojson`` writes them)."""
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": json.dumps(self.arguments, ensure_ascii=False)}}


@dataclass(frozen=True)
class ToolCallError:
    """A ``<tool_call>`` block that cannot be run; ``message`` is one line, fit for the model."""

    raw: str  # the block as the model wrote it, tags included (no closing tag if unterminated)
    message: str
    index: int
    id: str = ""  # an id for the error result sent back to the model
    name: str | None = None  # the tool's name, when the block got that far

    def to_openai(self) -> dict[str, Any]:
        """The call as OpenAI's format keeps one that does not parse: ``arguments`` is the text
        the model wrote between the tags (OpenAI warns it may not be valid JSON)."""
        body = self.raw.removeprefix("<tool_call>").removesuffix("</tool_call>").strip()
        return {"id": self.id, "type": "function", "function": {"name": self.name or "", "arguments": body}}


AnyCall = ToolCall | ToolCallError


@dataclass(frozen=True)
class ToolOutput:
    """What a source's call returned; ``is_error``: the tool itself reports a failure."""

    text: str
    is_error: bool = False


class ToolFailure(Exception):
    """A source could not run a call (the tool raised, its server died): the message goes to
    the model as the call's error result."""


@runtime_checkable
class ToolSource(Protocol):
    """Something that provides tools: an MCP server, the code interpreter, Python functions."""

    name: str

    def tools(self) -> list[ToolSpec]:
        """The tools it offers now."""

    def call(self, name: str, arguments: dict[str, Any], cancel: threading.Event, timeout: float) -> ToolOutput:
        """Run one call; raise :class:`ToolFailure` when it fails, ``TimeoutError`` past
        ``timeout`` seconds; give up soon after ``cancel`` is set (the user pressed Stop)."""

    def close(self) -> None:
        """Release what it holds (processes, connections)."""


class Toolbox(Protocol):
    """The tools of one chat request, checked and run (``playground.tools.toolbox.Toolbox``)."""

    max_rounds: int

    def specs(self) -> list[ToolSpec]:
        """The tools the model is offered."""

    def run(self, call: AnyCall, round: int, stop: threading.Event | None = None) -> ToolResult:
        """Run one call (or report why it cannot run) as the result the model reads next."""


ErrorKind = Literal["invalid_call", "unknown_tool", "bad_arguments", "tool_error", "timeout", "cancelled",
                    "declined", "rate_limited"]


@dataclass(frozen=True)
class ToolResult:
    """One call's outcome, as it goes back to the model (``content``) and as the UI shows it."""

    call_id: str
    name: str | None
    arguments: dict[str, Any] | None  # None when the call did not parse
    content: str  # the ``tool`` message's content
    error: ErrorKind | None = None
    duration_s: float = 0.0
    truncated: bool = False  # the result was cut to the size cap
    round: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ToolCallStarted:
    """A call the loop is about to run (shown as pending until its :class:`ToolResult`)."""

    call_id: str
    name: str
    arguments: dict[str, Any]
    round: int


@dataclass(frozen=True)
class ApprovalRequested:
    """The loop waits for the user to run or skip this call ("ask before each call")."""

    call_id: str
    name: str
    arguments: dict[str, Any]
    round: int


@dataclass(frozen=True)
class RoundStarted:
    """The tools of the previous round ran: the model now generates its next turn."""

    round: int  # 2 for the first generation after tools ran


@dataclass(frozen=True)
class RoundLimitReached:
    """The model called tools again after ``max_rounds`` rounds: those calls do not run."""

    max_rounds: int


@dataclass(frozen=True)
class ReasoningCut:
    """The reply ended inside its reasoning but held complete tool calls (a known model habit):
    the reasoning ends at the first call, and ``answer`` is any text after the calls."""

    reasoning: str
    answer: str


def tool_message(result: ToolResult) -> dict[str, Any]:
    """The OpenAI ``tool`` message that carries ``result`` back to the model."""
    return {"role": "tool", "tool_call_id": result.call_id, "content": result.content}


def truncate_result(text: str, limit: int = DEFAULT_RESULT_CHARS) -> tuple[str, bool]:
    """``text`` cut to ``limit`` characters with a note the model can read, and whether it was cut."""
    if len(text) <= limit:
        return text, False
    return text[:limit] + f"\n[result truncated: {len(text):,} characters, the first {limit:,} shown]", True
