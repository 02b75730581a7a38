"""The OpenAI-compatible API's request and response shapes: parsed once, at the edge.

``POST /v1/chat/completions`` bodies are checked here against OpenAI's chat parameters as vLLM
extends them (``top_k``, ``min_p``, ``chat_template_kwargs.enable_thinking``) plus the
playground's own extras (``thinking_budget``, ``yarn_factor``, ``loop_guard``); every refusal is
an :class:`ApiError` naming the field (``param``), which the route sends as OpenAI's
``{"error": {"message", "type", "param", "code"}}`` with status 400. The values then go to
``Playground.request`` (the one owner of a chat request), which applies the card's preset for the
mode, the settings' ranges and every hosted rule. Library-free: the route module
(``ui/openai_routes.py``) does the HTTP.
"""
from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.errors import (InvalidSettings, ModelNotFound, ModelNotServed, ModelSlotsBusy, PlaygroundError,
                         PromptError)
from core.settings import GREEDY_IN_THINKING_REASON, SCHEMA_BY_NAME
from core.tools import ToolSpec
from core.values import MAX_DEPTH, check_depth

MAX_STOP_STRINGS = 4  # as OpenAI
MAX_STOP_CHARS = 200  # per stop string
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names
ROLES = ("system", "developer", "user", "assistant", "tool")
# OpenAI parameters with no counterpart here: refused unless left at their neutral value
NEUTRAL = {"frequency_penalty": (0, 0.0), "n": (1,), "logprobs": (False,), "top_logprobs": (0,),
           "logit_bias": ({},), "repetition_penalty": (1, 1.0), "best_of": (1,), "use_beam_search": (False,)}
# sampling parameters -> the setting of core.settings.SCHEMA they set
SAMPLING = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
            "presence_penalty": "presence_penalty", "seed": "seed"}


class ApiError(Exception):
    """An OpenAI-style error: ``status`` and the body's ``message``, ``type``, ``param``, ``code``."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None, status: int = 400,
                 type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.message, self.param, self.code, self.status, self.type = message, param, code, status, type

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class ChatCompletionParams:
    """A checked ``/v1/chat/completions`` body, in the playground's terms."""

    model: str
    messages: list[dict[str, Any]]
    stream: bool = False
    include_usage: bool = False
    thinking: bool = True  # chat_template_kwargs.enable_thinking (Qwen3's default: on)
    settings: dict[str, Any] = field(default_factory=dict)  # raw values by core.settings name
    fields: dict[str, str] = field(default_factory=dict)  # setting name -> the request field that set it
    yarn_factor: float = 1.0
    stop: tuple[str, ...] = ()
    tools: tuple[dict[str, Any], ...] = ()  # OpenAI tools items the client runs itself ("none": empty)
    loop_guard: bool = False  # the playground's loop guard (off: a plain OpenAI server does not cut replies)


def _number(body: Mapping[str, Any], name: str, *, whole: bool = False) -> int | float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ApiError(f"{name} must be a number, got {_shown(value)}", name)
    if whole and int(value) != value:
        raise ApiError(f"{name} must be a whole number, got {_shown(value)}", name)
    return int(value) if whole else value


def _bool(body: Mapping[str, Any], name: str, default: bool, where: str | None = None) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(f"{where or name} must be true or false, got {_shown(value)}", where or name)
    return value


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_chat_completion(body: Any) -> ChatCompletionParams:
    """``body`` (the request's JSON) as :class:`ChatCompletionParams`; :class:`ApiError` if any
    field is wrong. Unknown fields are ignored (as vLLM does); OpenAI features the playground
    does not have are refused unless neutral."""
    if not isinstance(body, Mapping):
        raise ApiError("the request body must be a JSON object")
    try:
        check_depth(body, "the request body")
    except InvalidSettings as exc:
        raise ApiError(str(exc)) from None
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise ApiError("model is required: a model name (GET /v1/models lists them)", "model")
    for name, neutral in NEUTRAL.items():
        if name in body and body[name] is not None and body[name] not in neutral:
            raise ApiError(f"{name} is not supported by this server (leave it out)", name, "unsupported_parameter")
    response_format = body.get("response_format")
    if response_format is not None and response_format != {"type": "text"}:
        raise ApiError("response_format is not supported by this server (only {\"type\": \"text\"})",
                       "response_format", "unsupported_parameter")
    stream = _bool(body, "stream", False)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, Mapping):
        raise ApiError("stream_options must be an object", "stream_options")
    if options and not stream:
        raise ApiError("stream_options is only allowed with stream: true", "stream_options")
    include_usage = _bool(options or {}, "include_usage", False, "stream_options.include_usage")

    settings: dict[str, Any] = {}
    fields: dict[str, str] = {}
    for name, setting in SAMPLING.items():
        value = _number(body, name, whole=SCHEMA_BY_NAME[setting].type is int)
        if value is None:
            continue
        if name == "top_k" and value == -1:
            value = 0  # vLLM's "disabled"
        settings[setting], fields[setting] = value, name
    for name in ("max_completion_tokens", "max_tokens"):  # the newer name wins
        value = _number(body, name, whole=True)
        if value is not None and "max_new_tokens" not in settings:
            if value < 1:
                raise ApiError(f"{name} must be at least 1, got {value}", name)
            settings["max_new_tokens"], fields["max_new_tokens"] = value, name
    for name in ("thinking_budget", "thinking_token_budget"):  # ours, and vLLM's name
        value = _number(body, name, whole=True)
        if value is not None and "thinking_budget" not in settings:
            settings["thinking_budget"], fields["thinking_budget"] = value, name
    yarn = _number(body, "yarn_factor")

    kwargs = body.get("chat_template_kwargs")
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise ApiError("chat_template_kwargs must be an object", "chat_template_kwargs")
    for key in kwargs or {}:
        if key != "enable_thinking":
            raise ApiError(f"chat_template_kwargs.{key} is not supported (only enable_thinking)",
                           f"chat_template_kwargs.{key}", "unsupported_parameter")
    thinking = _bool(kwargs or {}, "enable_thinking", True, "chat_template_kwargs.enable_thinking")

    return ChatCompletionParams(
        model=model.strip(), messages=parse_messages(body.get("messages")), stream=stream,
        include_usage=include_usage, thinking=thinking, settings=settings, fields=fields,
        yarn_factor=1.0 if yarn is None else float(yarn), stop=parse_stop(body.get("stop")),
        tools=parse_tools(body.get("tools"), body.get("tool_choice")),
        loop_guard=_bool(body, "loop_guard", False))


def parse_messages(messages: Any) -> list[dict[str, Any]]:
    """OpenAI chat messages as the playground's history (``developer`` is a system message;
    an assistant's ``reasoning_content`` is kept: the history rules drop it where Qwen3 does)."""
    if not isinstance(messages, list) or not messages:
        raise ApiError("messages must be a non-empty list of messages", "messages")
    out = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise ApiError(f"{where} must be an object with role and content", where)
        role = message.get("role")
        if role not in ROLES:
            raise ApiError(f"{where}.role must be one of {', '.join(ROLES)}, got {_shown(role)}", f"{where}.role")
        item: dict[str, Any] = {"role": "system" if role == "developer" else role,
                                "content": _content(message.get("content"), f"{where}.content",
                                                    optional=role == "assistant")}
        if role == "assistant":
            for key in ("reasoning_content", "reasoning"):
                value = message.get(key)
                if value is not None and not isinstance(value, str):
                    raise ApiError(f"{where}.{key} must be text", f"{where}.{key}")
                if value:
                    item["reasoning_content"] = value
                    break
            calls = message.get("tool_calls")
            if calls is not None:
                item["tool_calls"] = _assistant_calls(calls, f"{where}.tool_calls")
        if role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str):
                raise ApiError(f"{where}.tool_call_id must be text", f"{where}.tool_call_id")
            item["tool_call_id"] = call_id
        out.append(item)
    return out


def _content(content: Any, where: str, optional: bool = False) -> str:
    if content is None:
        if optional:
            return ""
        raise ApiError(f"{where} is required", where)
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ApiError(f"{where}[{j}] must be a text part ({{\"type\": \"text\", \"text\": ...}}): "
                               "this server takes text only", f"{where}[{j}]")
            texts.append(part["text"])
        return "".join(texts)
    raise ApiError(f"{where} must be text or a list of text parts", where)


def _assistant_calls(calls: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(calls, list):
        raise ApiError(f"{where} must be a list", where)
    out = []
    for j, call in enumerate(calls):
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise ApiError(f"{where}[{j}] must be a function call: {{\"type\": \"function\", \"function\": "
                           "{\"name\", \"arguments\"}}", f"{where}[{j}]")
        arguments = function.get("arguments", "{}")
        if not isinstance(arguments, str):
            raise ApiError(f"{where}[{j}].function.arguments must be a JSON string", f"{where}[{j}].function.arguments")
        out.append({"id": str(call.get("id") or ""), "type": "function",
                    "function": {"name": function["name"], "arguments": arguments}})
    return out


def parse_stop(stop: Any) -> tuple[str, ...]:
    """``stop``: a string or up to 4 strings, none empty."""
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise ApiError("stop must be a string or a list of strings", "stop")
    if len(stops) > MAX_STOP_STRINGS:
        raise ApiError(f"stop takes at most {MAX_STOP_STRINGS} strings, got {len(stops)}", "stop")
    if any(not s or len(s) > MAX_STOP_CHARS for s in stops):
        raise ApiError(f"each stop string must be 1 to {MAX_STOP_CHARS} characters long", "stop")
    return tuple(dict.fromkeys(stops))


def parse_tools(tools: Any, tool_choice: Any) -> tuple[dict[str, Any], ...]:
    """The ``tools`` the model is offered (OpenAI function tools), under ``tool_choice``:
    ``"none"`` offers none, ``"auto"`` (the default) lets the model choose; ``"required"`` and a
    named function are refused (the model cannot be forced to call)."""
    if tool_choice is not None and tool_choice not in ("none", "auto"):
        raise ApiError("tool_choice must be \"auto\" or \"none\": this server cannot force the model to call a "
                       "tool (\"required\" or a named function)", "tool_choice", "unsupported_parameter")
    if tools is None:
        return ()
    if not isinstance(tools, list):
        raise ApiError("tools must be a list of function tools", "tools")
    out, names = [], set()
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(tool, Mapping) or tool.get("type") != "function" or not isinstance(function, Mapping):
            raise ApiError(f"{where} must be {{\"type\": \"function\", \"function\": {{...}}}}", where)
        name = function.get("name")
        if not isinstance(name, str) or not TOOL_NAME.match(name):
            raise ApiError(f"{where}.function.name must be 1 to 64 letters, digits, _ or -, got {_shown(name)}",
                           f"{where}.function.name")
        if name in names:
            raise ApiError(f"{where}.function.name: two tools are named {name!r}", f"{where}.function.name")
        names.add(name)
        description = function.get("description")
        if description is not None and not isinstance(description, str):
            raise ApiError(f"{where}.function.description must be text", f"{where}.function.description")
        parameters = function.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(parameters, Mapping):
            raise ApiError(f"{where}.function.parameters must be a JSON schema object", f"{where}.function.parameters")
        spec = ToolSpec(name, description, dict(parameters), "client")
        markup = spec.markup_in_schema()
        if markup is not None:
            raise ApiError(f"{where} holds the control token {markup!r}: refused", where)
        out.append(spec.to_openai())
    return () if tool_choice == "none" else tuple(out)


# -- errors from the playground ------------------------------------------------------------
_SETTING_AT_START = re.compile(r"^(?:a generation setting is not valid: )?([a-z_]+) ")


def api_error(exc: PlaygroundError, text: str, params: ChatCompletionParams | None = None) -> ApiError:
    """A playground error (``text``: its words for this visitor, ``Playground.error_text``) as
    an :class:`ApiError`: its status, and the request field it is about when it names one."""
    if isinstance(exc, ModelNotFound):
        return ApiError(text, "model", "model_not_found", 404)
    if isinstance(exc, ModelNotServed):
        return ApiError(text, "model", "model_not_allowed", 403, "permission_error")
    if isinstance(exc, ModelSlotsBusy):
        return ApiError(text, None, "server_busy", 503, "server_error")
    if isinstance(exc, InvalidSettings):
        fields = params.fields if params else {}
        if text.startswith(GREEDY_IN_THINKING_REASON[:30]):
            return ApiError(text, "temperature")
        match = _SETTING_AT_START.match(str(exc))
        name = match.group(1) if match else None
        if name == "yarn_factor" or "YaRN" in text or "yarn" in text:
            return ApiError(text, "yarn_factor")
        if name in SCHEMA_BY_NAME:
            field_name = fields.get(name, name)  # the request's own word: max_tokens, not max_new_tokens
            return ApiError(text.replace(name, field_name, 1), field_name)
        return ApiError(text)
    if isinstance(exc, PromptError):
        code = "context_length_exceeded" if "context window" in text else "invalid_prompt"
        return ApiError(text, "messages", code)
    return ApiError(text, None, "generation_error", 500, "server_error")


# -- responses -----------------------------------------------------------------------------
def completion_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


def usage(prompt_tokens: int, completion_tokens: int, reasoning_tokens: int | None,
          cached_tokens: int = 0) -> dict[str, Any]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": reasoning_tokens or 0}}


def completion(cid: str, model: str, message: dict[str, Any], finish_reason: str, usage_: dict[str, Any] | None,
               stop_reason: str | None = None) -> dict[str, Any]:
    """A whole ``chat.completion`` (``message``: role, content, reasoning_content, tool_calls)."""
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason,
                         "stop_reason": stop_reason}],
            "usage": usage_}


def chunk(cid: str, model: str, created: int, delta: dict[str, Any] | None,
          finish_reason: str | None = None, usage_: dict[str, Any] | None = None,
          stop_reason: str | None = None) -> dict[str, Any]:
    """One ``chat.completion.chunk`` (``delta`` None: the usage chunk, with no choices)."""
    data: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
    if delta is None:
        data["choices"] = []
    else:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        if finish_reason is not None:
            choice["stop_reason"] = stop_reason
        data["choices"] = [choice]
    if usage_ is not None:
        data["usage"] = usage_
    return data


class StopCutter:
    """Finds the first stop string in the answer as it streams: :meth:`feed` returns the text safe
    to send now (held back: what could be the start of a stop string) and the stop string once
    one appeared (the answer ends before it); :meth:`flush` returns what was held back."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.hold = max((len(s) for s in stops), default=1) - 1
        self.pending = ""
        self.hit: str | None = None

    def feed(self, text: str) -> tuple[str, str | None]:
        if self.hit is not None:
            return "", self.hit
        if not self.stops:
            return text, None
        self.pending += text
        found = [(self.pending.find(s), s) for s in self.stops if s in self.pending]
        if found:
            at, stop = min(found)
            out, self.pending, self.hit = self.pending[:at], "", stop
            return out, stop
        cut = len(self.pending) - self.hold
        if cut <= 0:
            return "", None
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, None

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


__all__ = ["MAX_DEPTH", "ApiError", "ChatCompletionParams", "StopCutter", "api_error", "chunk", "completion",
           "completion_id", "parse_chat_completion", "parse_messages", "parse_stop", "parse_tools", "usage"]
