""":class:`Playground`: the one owner of a chat request, between the edges and the engines.

It holds the configuration (hosted mode's rules), the catalog, presets and published figures (read once), the shared
model pool and the start model. The web UI, the API, the CLI and the benchmarks all go through it:

    request = playground.request(history, model="tiny-bf16", thinking=True)   # checked once
    for event in playground.chat(request):                                      # leased model
        ...   # ModelReady, then ReasoningDelta / AnswerDelta, then GenerationStats

``playground.reply(request)`` collects the same stream into a :class:`ChatResult`, the object
``app.py chat --json`` prints and the ``/chat_json`` endpoint returns. Backends know nothing of
this layer; it holds nothing that belongs to one visitor.
"""
from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit
from typing import Any

from backends.base import Backend, ModelInfo, StopSignal
from backends.host_memory import free_memory
from backends.hub import checkpoint_size
from backends.pool import ModelPool
from backends.registry import backend_class
from core import chat_io
from core.branches import Branches
from core.catalog import ModelSpec, load_catalog
from core.compare import Comparison
from core.config import AppConfig
from core.errors import InvalidSettings, ModelNotFound, ModelNotServed, PlaygroundError
from core.events import AnswerDelta, ChatEvent, LoopStopped, ProgressFn, ReasoningDelta, Reply
from core.loop_guard import LoopGuard
from core.memory import GB, HostMemory, fit_problem
from core.mcp_config import ServerConfig, parse_mcp_config
from core.messages import plain_history
from core.presets import Preset, default_preset_name, load_presets
from core.published import PublishedFigures, load_published
from core.request import ChatRequest, LoadOptions
from core.redact import public_text, redact
from core.settings import GenerationSettings
from core.tools import DEFAULT_MAX_ROUNDS, DEFAULT_RESULT_CHARS, DEFAULT_TOOL_TIMEOUT_S, ToolSource, ToolSpec
from core.values import strict_bool, strict_text
from playground.exports import ExportFolder
from playground.models import materialise
from playground.tools.code_interpreter import CodeInterpreter
from playground.tools.loop import Approve, run_tool_loop
from playground.tools.mcp_servers import McpServerError
from playground.tools.policy import (UNAVAILABLE, HostedToolbox, HostSource, RateLimiter, anonymous_id,
                                     is_anonymous_id)
from playground.tools.sources import ToolSources
from playground.tools.selection import ToolSelection
from playground.tools.toolbox import Toolbox
from playground.startup import TINY_MODEL, StartModel, Warmup, choose_start_model, tiny_start
from playground.zerogpu import gpu

log = logging.getLogger("qwen3_playground.tools")
errors_log = logging.getLogger("qwen3_playground.errors")

# the cards' advice against endless repetition (the GPTQ card; the ``-quantized`` presets' value)
LOOP_RETRY_PRESENCE_PENALTY = 1.5


def guard_loops(stream: Iterator[ChatEvent], tripped: threading.Event, *, drain: bool = True,
                guard: LoopGuard | None = None) -> Iterator[ChatEvent]:
    """``stream`` (one generation's events) watched by a :class:`LoopGuard`: once the text repeats
    itself, ``tripped`` is set (the generation's stop sees it) and, with ``drain``, the stream is
    read to its end (the backend winds down and yields its stats), else closed at once (a stop
    that does not reach the generation). Ends with :class:`LoopStopped` when the guard fired."""
    guard = guard or LoopGuard()
    try:
        for event in stream:
            yield event
            if guard.loop is None and isinstance(event, (ReasoningDelta, AnswerDelta)) and guard.feed(event.text):
                tripped.set()
                if not drain:
                    break
    finally:
        stream.close()
    if guard.loop is not None:
        yield LoopStopped(guard.loop.period_chars, guard.loop.repeats)


@dataclass(frozen=True)
class ModelReady:
    """The first event of :meth:`Playground.chat`: the model is loaded, the reply starts now."""

    info: ModelInfo
    load_s: float  # time spent getting the model (0 when the pool had it)


PlaygroundEvent = ModelReady | ChatEvent


@dataclass
class ChatResult:
    """A whole reply with its figures: what ``chat --json`` prints and ``/chat_json`` returns."""

    backend: str
    model: str
    reply: Reply
    info: ModelInfo
    load_s: float
    seed: int | None
    request: ChatRequest

    def to_dict(self) -> dict[str, Any]:
        """``answer`` / ``reasoning`` / ``stats`` are the final turn's; with tools, ``messages`` is
        the whole exchange in OpenAI's chat format and ``tool_calls`` every call with its result."""
        reply = self.reply
        stats = reply.stats.to_dict() if reply.stats else {}
        data = {"backend": self.backend, "model": self.model, "reasoning": reply.reasoning,
                "answer": reply.answer, "stats": {**stats, "load_s": self.load_s, "seed": self.seed},
                "info": self.info.to_dict()}
        if self.request.settings.thinking_budget and self.request.thinking:
            data["thinking_budget"] = {"budget": self.request.settings.thinking_budget,
                                       "reached": reply.budget_reached is not None}
        if reply.loop is not None:
            data["stats"].update(stopped_by="loop_guard", loop_period_chars=reply.loop.period_chars,
                                 loop_repeats=reply.loop.repeats)
        if self.request.tools:
            data["messages"] = self.request.message_list + reply.exchange()
            data["tool_calls"] = [{"name": r.name, "arguments": r.arguments, "result": r.content, "error": r.error,
                                   "round": r.round, "duration_s": round(r.duration_s, 3), "truncated": r.truncated}
                                  for r in reply.all_results]
            data["rounds"] = len(reply.turns) + 1
        if reply.stop_reason == "repeating":
            data.update(stop_reason="repeating", error=None)
        elif reply.stop_reason:
            data.update(stop_reason=reply.stop_reason, error=reply.error)
        elif reply.round_limit:
            data.update(stop_reason="round_limit",
                        error=f"the model still called tools after {self.request.toolbox.max_rounds} rounds")
        return data


class Playground:
    """See the module docstring. ``config``: the app's rules (``AppConfig()``: not hosted);
    ``pool``: shared loaded models (a new one sized by the config if None)."""

    def __init__(self, config: AppConfig | None = None, pool: ModelPool | None = None, *,
                 catalog: list[ModelSpec] | None = None, presets: dict[str, Preset] | None = None,
                 published: PublishedFigures | None = None) -> None:
        self.config = config or AppConfig()
        self.catalog = load_catalog() if catalog is None else catalog
        self.presets = load_presets() if presets is None else presets
        self.published = load_published() if published is None else published  # presets/published_figures.json
        self.pool = pool or ModelPool(max_models=self.config.max_models)
        if self.pool.admit is None:
            self.pool.admit = self.admit  # every load, from any tab or endpoint, is vetted
        self._memory: HostMemory | None = None  # hosted mode: measured once, before anything loads
        self._sizes: dict[tuple[str, str | None, str | None], int | None] = {}  # checkpoint sizes looked up
        self._memory_lock = threading.Lock()
        self.start = StartModel(TINY_MODEL)
        self.warmup: Warmup | None = None
        self.tool_sources = ToolSources()
        self.exports = ExportFolder()  # exported chats and comparisons: one folder, bounded
        self.tool_calls = RateLimiter(self.config.tool_calls_per_minute)  # per visitor, hosted mode
        self._visitor_salt = secrets.token_bytes(32)  # visitor ids mean nothing outside this process
        # On a ZeroGPU Space only the generation runs with a GPU attached (spaces.GPU, sized
        # from max_new_tokens); everywhere else this is the plain method.
        generate = self._generate
        self._generate_on_gpu = gpu(generate)
        # ZeroGPU's worker gets plain data only: there a stop event stays behind (Stop closes the stream)
        self._stop_reaches_generation = self._generate_on_gpu is generate

    @property
    def stop_reaches_generation(self) -> bool:
        """Whether a ``stop`` event given to :meth:`chat` reaches the generation itself (not on
        ZeroGPU: there only closing the stream stops it)."""
        return self._stop_reaches_generation

    # -- start-up ------------------------------------------------------------------------
    def start_up(self, requested: str | None = None) -> StartModel:
        """Choose the model new sessions start on (``requested``, else a cached catalog model,
        else the tiny one); an unusable name falls back to the tiny model, saying why."""
        start = choose_start_model(requested if requested is not None else self.config.default_model, self.catalog)
        if self.config.hosted:
            self.host_memory()  # measured now, before the start model loads
        try:
            self.resolve(start.ref)
        except PlaygroundError as exc:
            return self.fall_back(f"`{start.ref}` is unusable: {self.error_text(exc)}.")
        self.start = start
        return start

    def fall_back(self, reason: str) -> StartModel:
        """Sessions start on the tiny demo model from now on; ``reason`` tells them why."""
        self.start = tiny_start(reason)
        return self.start

    def warm_up(self, log: Callable[[str], None] | None = None) -> Warmup:
        """Load the start model in a background thread (started by the caller)."""
        self.warmup = Warmup(self, self.start.ref, log)
        return self.warmup

    # -- models --------------------------------------------------------------------------
    def resolve(self, ref: str, backend: str | None = None) -> ModelSpec:
        """What a user typed -> a model, under the configuration's rules (hosted mode: the
        catalog only; ``remote:<name>``: the host's server)."""
        try:
            return self.config.resolve(ref, backend, self.catalog)
        except ModelNotFound:
            # a local model whose folder was deleted after it loaded keeps serving from memory
            spec = None if self.config.hosted else self.pool.loaded_spec(_local_source(ref))
            if spec is None:
                raise
            return spec

    def load_options(self, spec: ModelSpec, yarn_factor: Any = 1.0, **overrides: Any) -> LoadOptions:
        """Remote models get the host's URL and key (from the environment), never a page's;
        ``overrides`` (device, a CLI's own server...) apply outside hosted mode only."""
        factor = yarn_factor_value(yarn_factor)
        if spec.backend == "remote":
            base = LoadOptions(yarn_factor=factor, base_url=self.config.remote_base_url,
                               api_key=self.config.remote_api_key)
        else:
            base = LoadOptions(yarn_factor=factor)
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if overrides and self.config.hosted:
            raise InvalidSettings("this hosted playground sets how models load")
        return LoadOptions(**{**base.__dict__, **overrides}).validate()

    def admit(self, spec: ModelSpec, options: LoadOptions) -> None:
        """The pool's check before every lease, whichever tab, event or endpoint asked (hosted
        mode: catalog models, the host's server; the host's model unless visitors may switch;
        a model the machine can hold)."""
        self.config.check_spec(spec, options.base_url, self.catalog)
        if self.config.visitors_may_switch and not self.config.hosted:
            return
        host = self._host_model()
        if host is not None and _same_model(spec, host) and options.yarn_factor == 1.0:
            return  # the host's own choice: always served
        if not self.config.visitors_may_switch:
            shown = host.name if host is not None else self.start.ref
            raise ModelNotServed(f"only the host of this playground can switch its model: it serves {shown} "
                                 "with YaRN off (factor 1)")
        problem = self.fit_problem(spec)
        if problem is not None:
            raise ModelNotServed(problem)

    def fit_problem(self, spec: ModelSpec) -> str | None:
        """Hosted mode: why the machine cannot hold ``spec`` (None: it can, or it is not hosted,
        remote, or of unknown size)."""
        if not self.config.hosted or spec.backend == "remote":
            return None
        key = (spec.source, spec.filename, spec.local_path)
        if key not in self._sizes:
            self._sizes[key] = checkpoint_size(spec)
        return fit_problem(spec, self._sizes[key], self.host_memory(), self.pool.max_models)

    def host_memory(self) -> HostMemory:
        """Memory models may use: the host's ``QWEN3_PLAYGROUND_MEMORY_GB``, else the free memory
        measured the first time it is asked (``start_up``, before the start model loads)."""
        with self._memory_lock:
            if self._memory is None:
                measured = free_memory()
                if self.config.memory_gb is not None:
                    measured = HostMemory(int(self.config.memory_gb * GB), "set by the host", measured.native_fp8)
                self._memory = measured
            return self._memory

    def _host_model(self) -> ModelSpec | None:
        try:
            return self.resolve(self.start.ref)
        except PlaygroundError:
            return None

    @contextmanager
    def lease(self, spec: ModelSpec, options: LoadOptions,
              progress: ProgressFn | None = None, stop: Any = None) -> Iterator[Backend]:
        """The pooled backend for (spec, options), loading it if needed; not evicted until the
        block ends. ``stop`` set while every slot is busy: the wait ends (``ModelSlotsBusy``)."""
        self.admit(spec, options.validate())  # before any work: a tiny model is built on first use
        with self.pool.lease(materialise(spec, progress), options, progress, stop) as backend:
            yield backend

    def load(self, ref: str, yarn_factor: Any = 1.0, progress: ProgressFn | None = None) -> Backend:
        """The model ``ref`` from the pool, loading it if needed (PlaygroundError on failure)."""
        spec = self.resolve(ref)
        with self.lease(spec, self.load_options(spec, yarn_factor), progress) as backend:
            return backend

    def peek(self, ref: str, yarn_factor: Any = 1.0) -> Backend | None:
        """The loaded model, or None (never loads)."""
        spec = self.resolve(ref)
        return self.pool.peek(spec, self.load_options(spec, yarn_factor))

    # -- settings --------------------------------------------------------------------------
    def preset_name(self, spec: ModelSpec, thinking: bool) -> str:
        """The card's preset for the mode the model will be in (quantized variant if needed)."""
        return default_preset_name(spec.effective_thinking(thinking), spec.quantized)

    def default_settings(self, spec: ModelSpec, thinking: bool) -> GenerationSettings:
        return self.presets[self.preset_name(spec, thinking)].settings

    def presets_for(self, thinking: bool) -> list[str]:
        mode = "thinking" if thinking else "non-thinking"
        return [name for name, preset in self.presets.items() if preset.mode == mode]

    def catalog_choices(self) -> list[tuple[str, str]]:
        """(label, value) pairs for a model picker (hosted mode: what a visitor may load: the
        host's model alone, unless visitors may switch; then the models the machine can hold)."""
        label = lambda spec: f"{spec.name} — {spec.format}, {spec.params}" if spec.params else spec.name  # noqa: E731
        host = self._host_model()
        if not self.config.visitors_may_switch:
            return [(label(host) if host is not None and host.name == self.start.ref else self.start.ref,
                     self.start.ref)]
        choices = [(label(spec), spec.name) for spec in self.catalog
                   if (host is not None and _same_model(spec, host)) or self.fit_problem(spec) is None]
        values = {value for _, value in choices}
        extra = [ref for ref in self.config.allowed_models if ref not in values and self._allowed_fits(ref)]
        if self.start.ref.startswith("remote:") and self.start.ref not in values | set(extra):
            extra.append(self.start.ref)  # the host's served model
        return choices + [(ref, ref) for ref in extra]

    def _allowed_fits(self, ref: str) -> bool:
        try:
            return self.fit_problem(self.resolve(ref)) is None
        except PlaygroundError:
            return False

    # -- tools -----------------------------------------------------------------------------
    def toolbox(self, *, mcp: Mapping[str, ServerConfig] | None = None, code_interpreter: bool = False,
                enabled: Collection[str] | None = None, max_rounds: int = DEFAULT_MAX_ROUNDS,
                timeout_s: float = DEFAULT_TOOL_TIMEOUT_S) -> Toolbox | None:
        """The tools of a chat (None: no tools): the servers of an ``mcpServers`` configuration
        (parsed by ``playground.tools.mcp_servers``) and the code interpreter. A hosted playground
        lets visitors add neither."""
        if self.config.hosted and (mcp or code_interpreter):
            raise InvalidSettings("this hosted playground does not let visitors add MCP servers or run code")
        sources: list[ToolSource] = list(self.tool_sources.mcp(mcp)) if mcp else []
        if code_interpreter:
            sources.append(CodeInterpreter())
        return Toolbox(sources, enabled=enabled, max_rounds=max_rounds, timeout_s=timeout_s) if sources else None

    def toolbox_for(self, selection: ToolSelection | Any,
                    visitor: str | None = None) -> Toolbox | HostedToolbox | None:
        """The toolbox of a chat's :class:`ToolSelection` (a UI panel's, an API call's; raw JSON
        data is parsed strictly), under the configuration's rules; None: no tools (an empty
        selection). The host's tools (:meth:`offered_tools`) come first.

        Hosted mode: visitors may only pick (``enabled``) among the host's tools, with the round
        limit capped at ``config.max_tool_rounds``; the toolbox is a :class:`HostedToolbox` (rate
        limit per ``visitor``, size limits, a log line per call). ``visitor``: an id from
        :meth:`visitor_id` (anything else is made anonymous here; None: one shared id)."""
        selection = ToolSelection.from_value(selection)
        if self.config.hosted:
            return self._hosted_toolbox(selection, visitor)
        if selection.empty:
            return None
        host = self._host_sources()
        own: list[ToolSource] = []
        if selection.mcp_config.strip():
            own += self.tool_sources.mcp(parse_mcp_config(selection.mcp_config))
        if selection.code_interpreter and not self.config.code_interpreter:  # else the host's is there
            own.append(CodeInterpreter())
        sources = [*host, *own]
        return Toolbox(sources, enabled=selection.enabled, max_rounds=selection.max_rounds) if sources else None

    def offered_tools(self) -> list[ToolSpec]:
        """The host's tools (``QWEN3_PLAYGROUND_MCP_CONFIG``'s servers, narrowed by
        ``QWEN3_PLAYGROUND_TOOLS``; outside hosted mode also its code interpreter), for a UI to
        list: starts the host's servers the first time, runs no tool."""
        return [spec for source in self._host_sources() for spec in source.tools()]

    def applies_thinking_budget(self, spec: ModelSpec) -> bool:
        """Whether ``spec``'s backend can cut the reasoning at a thinking budget (it continues a reply)."""
        return backend_class(spec.backend).continues_replies

    def error_text(self, error: BaseException) -> str:
        """What a user is shown of ``error`` (the one place errors are worded for visitors): its
        line; in hosted mode what a stranger may read (``core.redact``: the error's ``public``
        line, no server path, no URL of the host's server, no text of an unexpected exception,
        which the host's log gets instead)."""
        if not self.config.hosted:
            return str(error) if isinstance(error, PlaygroundError) else f"unexpected error: {type(error).__name__}: {error}"
        if not isinstance(error, PlaygroundError):
            errors_log.error("unexpected error (a visitor was shown its type only)", exc_info=error)
        return public_text(error, self._hidden_strings())

    def describe(self, backend: Backend) -> ModelInfo:
        """What a user is shown of a loaded model (``backend.describe()``); in hosted mode without
        server paths or the host's server URL (``core.redact``), as :meth:`error_text` words errors."""
        info = backend.describe()
        if not self.config.hosted:
            return info
        hide = self._hidden_strings()
        return replace(info, source=redact(info.source, hide), device=redact(info.device, hide),
                       notes=[redact(note, hide) for note in info.notes],
                       details=json.loads(redact(json.dumps(info.details, ensure_ascii=False), hide)))

    def _hidden_strings(self) -> tuple[str, ...]:
        url = self.config.remote_base_url or ""
        return (url, urlsplit(url).netloc, urlsplit(url).hostname or "") if url else ()

    def visitor_id(self, raw: str | None) -> str:
        """An anonymous, stable id (``v-`` and 10 hex digits) for ``raw``, a Gradio session hash or
        a client address: what limits and logs use, never the raw value."""
        return anonymous_id(raw or "", self._visitor_salt)

    def _hosted_toolbox(self, selection: ToolSelection, visitor: str | None) -> HostedToolbox | None:
        if selection.mcp_config.strip() or selection.code_interpreter:
            raise InvalidSettings("this hosted playground does not let visitors add MCP servers or run code; "
                                  + self._offer_line())
        if not selection.enabled:
            return None
        sources = self._host_sources()
        offered = {spec.name for source in sources for spec in source.tools()}
        unknown = next((name for name in selection.enabled if name not in offered), None)
        if unknown is not None:
            shown = unknown if len(unknown) <= 64 else unknown[:64] + "..."
            raise InvalidSettings(f"this hosted playground does not offer a tool named {shown!r}; "
                                  + self._offer_line())
        config = self.config
        try:
            # the inner cap leaves room for its note under the size limit HostedToolbox enforces
            inner = Toolbox(sources, enabled=selection.enabled,
                            max_rounds=min(selection.max_rounds, config.max_tool_rounds),
                            result_chars=max(1, min(DEFAULT_RESULT_CHARS, config.max_message_chars - 100)))
        except PlaygroundError as exc:  # the host's tools clash or are refused: details for the host only
            log.error("the host's tools cannot be offered: %s", exc)
            raise McpServerError(UNAVAILABLE) from None
        visitor = visitor if visitor and is_anonymous_id(visitor) else self.visitor_id(visitor)
        return HostedToolbox(inner, visitor=visitor, limiter=self.tool_calls, result_chars=config.max_message_chars,
                             reply_chars=config.max_conversation_chars)

    def _host_sources(self) -> list[HostSource]:
        """The host's tool sources: its MCP servers narrowed to the allow-list (hosted mode: failures
        summarised), then (outside hosted mode) its code interpreter."""
        hosted, config = self.config.hosted, self.config
        sources: list[ToolSource] = []
        if config.tool_servers:
            try:
                sources += self.tool_sources.mcp(config.tool_servers)
            except PlaygroundError as exc:
                if not hosted:
                    raise
                log.error("the host's MCP servers did not start: %s", exc)
                raise McpServerError(UNAVAILABLE) from None
        host = [HostSource(source, config.allowed_tools or None, private_errors=hosted) for source in sources]
        if config.code_interpreter and not hosted:  # turned on by its own variable: not in the allow-list's scope
            host.append(HostSource(CodeInterpreter()))
        return host

    def _offer_line(self) -> str:
        try:
            names = [spec.name for spec in self.offered_tools()]
        except PlaygroundError:
            return "its own tools are unavailable right now"
        return f"it offers: {', '.join(names)}" if names else "it offers no tools"

    def close(self) -> None:
        """Stop what the playground started besides models (MCP servers), delete its exports."""
        self.tool_sources.close()
        self.exports.close()

    # -- the chat request ------------------------------------------------------------------
    def check_conversation(self, history: Sequence[Any], system_prompt: Any = None) -> list[dict[str, Any]]:
        """The size limits (``AppConfig.check_conversation``) of one conversation, whatever asks
        (a chat, each Compare column, an import): ``history`` in any shape (Gradio's messages with
        their metadata, OpenAI's), with ``system_prompt``. Returns the history as plain data."""
        history = plain_history(list(history or []))
        self.config.check_conversation(history, strict_text(system_prompt, "system_prompt"))
        return history

    def check_branches(self, branches: Branches) -> None:
        """The size limit of the alternatives a chat keeps (``AppConfig.check_alternatives``)."""
        self.config.check_alternatives(branches.chars())

    def read_chat(self, data: bytes | str) -> list[dict[str, Any]]:
        """The messages of a chat file (``core.chat_io.parse``: its bytes, or its text) under the
        size limits: the file's size (``AppConfig.check_upload``), then the conversation it holds."""
        return self.read_chat_tree(data)[0]

    def read_chat_tree(self, data: bytes | str) -> tuple[list[dict[str, Any]], Branches]:
        """A chat file's messages and the alternatives it keeps, under the size limits (each
        alternative's conversation too, and all of them together)."""
        size = len(data) if isinstance(data, (bytes, bytearray)) else len(data.encode("utf-8", "surrogatepass"))
        self.config.check_upload(size, "the chat file")
        messages, branches = chat_io.parse_tree(data)
        self.check_conversation(messages)
        branches = branches.pruned(messages)
        self.check_branches(branches)
        for fork in branches.forks.values():
            for tail in fork.tails:
                self.check_conversation(tail or [])
        return messages, branches

    def check_comparison(self, comparison: Comparison) -> None:
        """The size limits of a comparison (an imported one, or the next turn of one): its prompt
        and system prompt are typed text; each column's conversation is a conversation."""
        self.config.check_text(comparison.prompt, "the prompt")
        for entry in comparison.entries:
            self.check_conversation(entry.history, comparison.system_prompt)

    def request(self, history: Sequence[Any], *, model: str, yarn_factor: Any = 1.0,
                settings: GenerationSettings | Mapping[str, Any] | None = None, thinking: bool = True,
                system_prompt: str | None = None, backend: str | None = None,
                options: LoadOptions | None = None, toolbox: Toolbox | None = None,
                loop_guard: bool = True, client_tools: Sequence[Mapping[str, Any]] = (),
                continue_from: str = "") -> ChatRequest:
        """Everything a chat request carries, checked once, before any model loads or any token
        is computed; raises a ``PlaygroundError`` that says what is wrong.

        ``history`` ends with the user's message (OpenAI-style or Gradio messages; reasoning
        panels and notes are never sent to the model). ``settings``: typed settings, or raw
        values by name (from a form, flags or JSON; a missing one is the card's preset value for
        the model and mode). ``toolbox``: the tools the model may call (the tool loop runs them).
        ``loop_guard``: stop a reply that repeats itself (see :meth:`chat`). ``client_tools``
        (OpenAI ``tools`` items, not with ``toolbox``): tools a client runs itself (the OpenAI
        API): the model is offered them and its calls come back as events; nothing runs here.
        ``continue_from``: the reply so far, cut short (``core.continuation``): the model continues it.
        """
        thinking = strict_bool(thinking, "thinking", default=True)
        loop_guard = strict_bool(loop_guard, "loop_guard", default=True)
        history = self.check_conversation(history, system_prompt)
        system_prompt = strict_text(system_prompt, "system_prompt")
        spec = self.resolve(model, backend)
        options = options or self.load_options(spec, yarn_factor)
        if not isinstance(settings, GenerationSettings):
            try:
                settings = self.default_settings(spec, thinking).with_values(**dict(settings or {}))
            except (TypeError, ValueError, OverflowError) as exc:
                raise InvalidSettings(f"a generation setting is not valid: {exc}") from None
        if continue_from and not backend_class(spec.backend).continues_replies:
            raise InvalidSettings(f"the {spec.backend} backend cannot continue a reply: regenerate it instead")
        request = ChatRequest.build(spec, options, history, settings, thinking, system_prompt, toolbox,
                                    loop_guard=loop_guard, continue_from=strict_text(continue_from, "continue_from") or "")
        if client_tools:
            if toolbox is not None:
                raise InvalidSettings("a chat offers either the playground's tools or a client's, not both")
            request = replace(request, tools=tuple(dict(tool) for tool in client_tools))
        return request

    @staticmethod
    def loop_retry_settings(settings: GenerationSettings) -> tuple[GenerationSettings, dict[str, list[Any]]]:
        """The settings to retry a reply the loop guard stopped with: the card's advice against
        endless repetition, presence_penalty 1.5; and what changed ({name: [old, new]}, empty
        when it already was 1.5)."""
        changes = {"presence_penalty": LOOP_RETRY_PRESENCE_PENALTY}
        changed = {name: [getattr(settings, name), value] for name, value in changes.items()
                   if getattr(settings, name) != value}
        return settings.with_updates(**changes), changed

    def chat(self, request: ChatRequest, progress: ProgressFn | None = None,
             stop: Any = None, approve: Approve | None = None) -> Iterator[PlaygroundEvent]:
        """Stream the reply: :class:`ModelReady` once the model is there (loaded with
        ``progress`` if needed), then the backend's events. Closing the iterator (Stop, a
        client gone) or setting ``stop`` (a ``threading.Event``) ends the generation.
        ``approve``: asked before each tool call (see ``playground.tools.loop``).

        With ``request.loop_guard``, every generation (each round of a tool loop) is watched by a
        :class:`LoopGuard`: a reply that repeats itself is stopped like Stop would, keeps what it
        wrote, and ends with :class:`LoopStopped` (after its stats); the tool loop ends there."""
        started = time.perf_counter()
        tripped = threading.Event()  # set by the loop guard
        if request.loop_guard:
            stop = StopSignal(stop, tripped)
        with self.lease(request.spec, request.options, progress, stop) as backend:
            yield ModelReady(self.describe(backend), time.perf_counter() - started)

            def generate(turn: ChatRequest) -> Iterator[ChatEvent]:
                if self._stop_reaches_generation:
                    stream = self._generate_on_gpu(turn, stop, max_new_tokens=turn.settings.max_new_tokens)
                else:  # the tools themselves stay here (the tool loop runs them); the model gets their specs
                    stream = self._generate_on_gpu(replace(turn, toolbox=None), None,
                                                   max_new_tokens=turn.settings.max_new_tokens)
                if not turn.loop_guard:
                    return stream
                return guard_loops(stream, tripped, drain=self._stop_reaches_generation)

            stream = run_tool_loop(generate, request, stop, approve) if request.toolbox else generate(request)
            try:
                yield from stream
            finally:  # Stop / client gone: closing the stream ends the generation
                stream.close()

    def _generate(self, request: ChatRequest, stop: Any = None, max_new_tokens: int | None = None
                  ) -> Iterator[ChatEvent]:
        """The reply's events from the pooled model (leased by :meth:`chat`, in this process: on
        ZeroGPU this runs in the GPU worker; ``max_new_tokens`` sizes its slot)."""
        backend = self.pool.peek(request.spec, request.options)
        if backend is None:
            raise PlaygroundError(f"{request.spec.name} is not loaded any more: send the message again")
        stream = backend.stream_chat(request, stop)
        try:
            yield from stream
        finally:
            stream.close()

    def reply(self, request: ChatRequest, progress: ProgressFn | None = None,
              on_event: Callable[[PlaygroundEvent], None] | None = None) -> ChatResult:
        """The whole reply as a :class:`ChatResult`. A failure before any text raises; one
        mid-reply keeps what was generated and says why it ended (``stop_reason``)."""
        reply, ready = Reply(), None
        try:
            for event in self.chat(request, progress):
                if isinstance(event, ModelReady):
                    ready = event
                else:
                    reply.add(event)
                if on_event:
                    on_event(event)
        except PlaygroundError as exc:
            if ready is None or not (reply.reasoning or reply.answer):  # nothing to keep: a plain error
                raise
            reply.stop_reason, reply.error = "error", self.error_text(exc)
        assert ready is not None
        return ChatResult(ready.info.backend, request.spec.name, reply, ready.info, ready.load_s,
                          request.settings.seed, request)


def yarn_factor_value(value: Any) -> float:
    """A YaRN factor as typed or sent (empty: 1, off); anything else than a number is refused."""
    try:
        return float(value if value not in (None, "") else 1.0)
    except (TypeError, ValueError):
        raise InvalidSettings(f"yarn_factor must be a number, got {value!r}") from None


def _local_source(ref: str) -> str:
    """The source a local path ``ref`` was loaded under (``core.catalog.resolve_model``)."""
    return str(Path((ref or "").strip()).expanduser().resolve())


def _same_model(spec: ModelSpec, other: ModelSpec) -> bool:
    """The same checkpoint on the same backend (whatever name it was asked by)."""
    return (spec.backend, spec.source, spec.filename) == (other.backend, other.source, other.filename)
