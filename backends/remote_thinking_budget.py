"""The thinking budget on an OpenAI-compatible server: the server's own cap when it has one,
else the playground's (README "Thinking budget").

Which server answers is read from ``/v1/models``' ``owned_by`` ("vllm", "sglang", "llamacpp" for
llama.cpp's ``llama-server``); each caps reasoning per request with its own field, once started
with the flag named here. Any other server (llama-cpp-python's ``llama_cpp.server``, proxies),
and a known one that refuses or ignores its field, gets the playground's way: the reply is
requested with ``max_tokens`` = the budget (the server counts the tokens), and if the reasoning
is still open, the client continues it from ``/v1/completions`` with the conversation rendered by
the Qwen3 chat template, the reasoning so far and Qwen's early-stop text.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.chat import Message
from core.reasoning import EARLY_STOP_SENTENCE, EARLY_STOP_TEXT


@dataclass(frozen=True)
class ServerBudget:
    """One server's per-request thinking budget."""

    server: str
    fields: Callable[[int], dict[str, Any]]  # extra body fields for a budget of N tokens
    needs: str  # how the server must be started for the fields to work
    inserted: str  # what the server writes at the budget, before the answer

    def note(self) -> str:
        return (f"thinking budget: applied by the server ({self.server}: {', '.join(self.fields(1))}; "
                f"needs {self.needs}); at the budget it inserts {self.inserted!r}")


SERVER_BUDGETS: dict[str, ServerBudget] = {
    "vllm": ServerBudget(
        "vLLM", lambda n: {"thinking_token_budget": n},
        "--reasoning-config '{\"reasoning_start_str\": \"<think>\", \"reasoning_end_str\": \"</think>\"}'",
        "</think>"),
    "sglang": ServerBudget(
        "SGLang", lambda n: {"custom_params": {"thinking_budget": n}},
        "--enable-strict-thinking and --reasoning-parser qwen3", "</think>"),
    "llamacpp": ServerBudget(
        "llama-server", lambda n: {"thinking_budget_tokens": n, "thinking_budget_message": EARLY_STOP_SENTENCE},
        "a build with per-request reasoning budgets and --reasoning-format deepseek", EARLY_STOP_TEXT),
}

CLIENT_NOTE = ("thinking budget: applied by the playground (max_tokens = the budget, then the reply "
               "continues from /v1/completions after Qwen's early-stop text)")


def server_budget(owned_by: Any) -> ServerBudget | None:
    """The budget mechanism of the server that lists its models as ``owned_by``, if known."""
    return SERVER_BUDGETS.get(str(owned_by or "").lower())


def ignored_budget(budget: int, reasoning_tokens: int) -> bool:
    """The reasoning ran well past a budget the server was asked to apply: it did not."""
    return reasoning_tokens > budget + max(16, budget // 10)


def _tojson(value: Any) -> str:
    """transformers' ``tojson``: keys in order, non-ASCII as is."""
    return json.dumps(value, ensure_ascii=False)


def continuation_prompt(messages: list[Message], tools: list[dict[str, Any]] | None, prefix: str) -> str:
    """The text a completion continues: the conversation in Qwen3's chat template (what real
    Qwen3 checkpoints ship, ``core/qwen3_template.py``), the assistant turn opened, then
    ``prefix`` (the reply so far, ``<think>`` included)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from core.qwen3_template import QWEN3_CHAT_TEMPLATE

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = _tojson
    rendered = env.from_string(QWEN3_CHAT_TEMPLATE).render(
        messages=messages, tools=tools, add_generation_prompt=True, enable_thinking=True)
    return rendered + prefix
