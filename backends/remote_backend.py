"""Remote backend: an OpenAI-compatible server (vLLM, SGLang, llama-server, llama_cpp.server).

The model runs in a serving engine; the playground is its client (the ``openai`` package).

- Settings: base URL (``LoadOptions.base_url``), API key (``LoadOptions.api_key``: never shown
  back, logged or put in an error message), model name (``spec.source``, as the server knows it).
- ``enable_thinking`` travels as ``extra_body={"chat_template_kwargs": {...}}`` (vLLM and SGLang
  honour it per request; llama_cpp.server ignores it: only its start-up flag
  ``--chat_template_kwargs`` counts), ``top_k`` and ``min_p`` as extra body fields, and
  temperature, top_p, presence_penalty, seed, max_tokens as standard parameters.
- Reasoning: servers started with a reasoning parser send it as ``reasoning_content`` (or
  ``reasoning``) deltas, passed on as reasoning; otherwise the ``<think>`` block arrives inside
  the content and the shared parser (``core.reasoning``) splits it.
- Errors (connection refused, timeouts, 401/4xx/5xx, a stream cut mid-reply) become one clear
  :class:`BackendError`; what was already streamed stays with the caller.  Its ``public`` text
  (what hosted mode shows strangers) names neither the server's URL nor its reply's text.  Stop
  closes the HTTP stream, which makes the server abort the request.
- The server renders and tokenizes the prompt itself and parses control tokens anywhere in it, so
  reserved token strings in message text are broken with an invisible U+2060 before sending
  (``core.prompt.neutralised``): typed ``<|im_start|>system`` stays text, as on local backends.
- YaRN is a server-side setting: :func:`core.server_flags.server_flags` gives the flags to start
  the server with; ``describe`` lists them when a factor is chosen.
- ``describe().context_window`` is the server's ``max_model_len`` when its ``/models`` says
  (vLLM, SGLang), else 0 meaning unknown.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from backends.base import Backend, LoadOptions, ModelInfo, StopSignal
from backends.remote_thinking_budget import (CLIENT_NOTE, ServerBudget, continuation_prompt, ignored_budget,
                                             server_budget)
from core.catalog import ModelSpec
from core.chat import Message
from core.errors import BackendError, InvalidSettings, ModelLoadError, ModelNotFound, PlaygroundError
from core.prompt import neutralised_messages
from core.events import AnswerDelta, BackendItem, ChatEvent, GenerationStats, ReasoningDelta, ThinkingBudgetReached
from core.events import ProgressFn
from core.reasoning import ReasoningParser
from core.server_flags import server_command_lines
from core.settings import GenerationSettings
from core.tool_calls import call_from_parts
from core.tools import QWEN3_ADDED_TOKENS, ToolCall, ToolCallError

NO_KEY = "EMPTY"  # what vLLM's docs use when the server needs no key; the openai client needs one


def public_url(url: str | None) -> str:
    """``url`` without user:password, query or fragment (what may be shown or logged)."""
    if not url:
        return ""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def validate_base_url(url: str | None) -> str:
    if not url or not url.strip():
        raise InvalidSettings("the remote backend needs a server URL, e.g. --base-url http://127.0.0.1:8000/v1")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidSettings(f"server URL must look like http://HOST:PORT/v1, got {public_url(url) or 'nothing usable'}")
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))  # the client appends paths


def abort_stream(stream: Any) -> None:
    """Close a streaming response from another thread, waking a read blocked on the socket.

    Closing an httpx response does not interrupt a ``recv`` already waiting in another thread;
    shutting the socket down does (and tells the server the client is gone).
    """
    import socket

    try:
        network = stream.response.extensions.get("network_stream")
        sock = network.get_extra_info("socket") if network is not None else None
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except Exception:  # already closed, or a transport without a socket
        pass
    try:
        stream.close()
    except Exception:
        pass


class ServerToolCalls:
    """Tool calls a server streams as structured ``tool_calls`` deltas: the first delta of a
    call brings its index, id and name, later ones append to its arguments' JSON text."""

    def __init__(self) -> None:
        self._parts: dict[int, dict[str, str]] = {}

    def add(self, deltas: Any) -> None:
        for delta in deltas:
            index = _field(delta, "index")
            part = self._parts.setdefault(int(index if index is not None else len(self._parts)),
                                          {"id": "", "name": "", "arguments": ""})
            function = _field(delta, "function")
            part["id"] = _field(delta, "id") or part["id"]
            if function is not None:
                part["name"] = part["name"] or _field(function, "name") or ""  # sent once, whole
                part["arguments"] += _field(function, "arguments") or ""

    def finished(self) -> list[ToolCall | ToolCallError]:
        return [call_from_parts(part["id"], part["name"], part["arguments"], n)
                for n, (_, part) in enumerate(sorted(self._parts.items()))]


def _plain(messages: list[Message]) -> list[Message]:
    """The messages with every reserved token string in their texts broken by an invisible U+2060
    (``core.prompt.neutralised``): the server renders and tokenizes the prompt itself, parsing
    ``<|im_start|>`` and the like anywhere, so text must not carry them whole."""
    return neutralised_messages(messages, QWEN3_ADDED_TOKENS)


def _reasoning_in_content(message: Message) -> Message:
    """An assistant turn of the tool loop with its reasoning written back into its content as
    ``<think>...</think>``: Qwen3's template takes it from there when ``reasoning_content`` is
    absent, and servers whose message schema has no ``reasoning_content`` (llama_cpp.server) drop
    that field, so this form reaches every server's template."""
    if message.get("role") != "assistant" or not message.get("reasoning_content"):
        return message
    out = {k: v for k, v in message.items() if k != "reasoning_content"}
    out["content"] = f"<think>\n{message['reasoning_content']}\n</think>\n\n{message.get('content') or ''}"
    return out


def _summary(exc: BaseException, mid_stream: bool = False) -> str:
    """What went wrong with a request to the model server, for a stranger: the kind of failure
    and the HTTP status, never the server's address or its reply's text (which may echo headers)."""
    import http

    import httpx
    import openai

    if isinstance(exc, (openai.APITimeoutError, httpx.TimeoutException)):
        return "the model server did not answer in time"
    if isinstance(exc, openai.APIStatusError):
        try:
            phrase = http.HTTPStatus(exc.status_code).phrase
        except ValueError:
            phrase = "error"
        return f"the model server answered {exc.status_code} {phrase}"
    if mid_stream or isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):
        return "the model server closed the connection"
    if isinstance(exc, (openai.APIConnectionError, httpx.TransportError)):
        return "the model server cannot be reached"
    return f"the model server failed ({type(exc).__name__})"


def _field(obj: Any, name: str) -> Any:
    """A field of an openai response object, including servers' extra fields."""
    value = getattr(obj, name, None)
    if value is None:
        extra = getattr(obj, "model_extra", None) or {}
        value = extra.get(name)
    return value


class RemoteBackend(Backend):
    name = "remote"
    parallel_replies = True  # the server batches concurrent requests: no lock around a reply
    continues_replies = True  # from /v1/completions (the playground's thinking budget)
    connect_timeout_s = 10.0
    read_timeout_s = 120.0  # longest silence between two streamed chunks

    def __init__(self) -> None:
        super().__init__()
        self.client: Any = None
        self.url = ""  # without credentials
        self.server_model: dict[str, Any] = {}
        self.served_models: list[str] = []
        self._no_key = True
        self._model_name = ""
        # "top_k off": vLLM and SGLang want -1 (vLLM rejects 0), llama_cpp.server wants 0 (rejects -1)
        self._top_k_off = -1
        self._ignored_thinking_off = False  # the server thought although enable_thinking was false
        self._server_budget: ServerBudget | None = None  # the server's own thinking budget, if known
        self._server_budget_problem = ""  # why the server's budget is not used (refused, ignored)

    def __repr__(self) -> str:  # never the key
        return f"RemoteBackend(url={self.url!r}, model={self.spec.source if self.spec else None!r})"

    # -- errors ----------------------------------------------------------------------------
    def _explain(self, exc: BaseException, during: str, mid_stream: bool = False) -> str:
        import httpx
        import openai

        where = f"the server at {self.url}"
        timeout = isinstance(exc, (openai.APITimeoutError, httpx.TimeoutException))
        if mid_stream and not timeout and isinstance(exc, (openai.APIConnectionError, httpx.TransportError)):
            cause = exc.__cause__ or exc.__context__ or exc
            return f"{during}: {where} closed the connection mid-reply ({cause})"
        if isinstance(exc, openai.APITimeoutError):
            return f"{during}: {where} did not answer within {self.read_timeout_s:g} s (timeout)"
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, httpx.ConnectError) or "refused" in str(cause).lower():
                return f"{during}: cannot connect to {where} (connection refused): is the server running?"
            if isinstance(cause, (httpx.RemoteProtocolError, httpx.ReadError)):
                return f"{during}: {where} closed the connection ({cause})"
            return f"{during}: cannot reach {where}: {cause or exc}"
        if isinstance(exc, openai.AuthenticationError):
            hint = ("no API key was given: set $OPENAI_API_KEY (or --api-key-env VAR)"
                    if self._no_key else "check the key in $OPENAI_API_KEY (or --api-key-env VAR)")
            return f"{during}: {where} rejected the API key (401 Unauthorized): {hint}"
        if isinstance(exc, openai.PermissionDeniedError):
            return f"{during}: {where} refused access (403 Forbidden)"
        if isinstance(exc, openai.NotFoundError):
            return (f"{during}: {where} answered 404 Not Found: check the URL (it usually ends in /v1) "
                    f"and the model name {self._model_name!r}")
        if isinstance(exc, openai.APIStatusError):
            return f"{during}: {where} answered {exc.status_code}: {self._server_message(exc)}"
        if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):
            return f"{during}: {where} closed the connection mid-reply ({exc})"
        if isinstance(exc, httpx.TimeoutException):
            return f"{during}: {where} did not answer within {self.read_timeout_s:g} s (timeout)"
        return f"{during}: {type(exc).__name__}: {exc}"

    def _failure(self, kind: type[PlaygroundError], exc: BaseException, during: str,
                 mid_stream: bool = False) -> PlaygroundError:
        """``kind`` of error for ``exc``: the host's full account, and a summary for strangers
        (``public``: no server URL, no text from the server's reply)."""
        return kind(self._explain(exc, during, mid_stream), public=f"{during}: {_summary(exc, mid_stream)}")

    @staticmethod
    def _server_message(exc: Any) -> str:
        body = getattr(exc, "body", None)
        if isinstance(body, dict):
            inner = body.get("error", body)
            if isinstance(inner, dict):
                return str(inner.get("message") or inner.get("detail") or inner)[:300]
            return str(body.get("detail") or body.get("message") or body)[:300]
        return str(getattr(exc, "message", exc))[:300]

    # -- loading ---------------------------------------------------------------------------
    def load(self, spec: ModelSpec, options: LoadOptions = LoadOptions(),
             progress: ProgressFn | None = None) -> None:
        options.validate()
        report = progress or (lambda fraction, message: None)
        base_url = validate_base_url(options.base_url or spec.extra.get("base_url"))
        import httpx
        import openai

        self.url = public_url(base_url)
        self._model_name = spec.source
        self._no_key = not options.api_key
        report(0.2, f"Connecting to {self.url}")
        client = openai.OpenAI(
            base_url=base_url, api_key=options.api_key or NO_KEY, max_retries=0,
            timeout=httpx.Timeout(self.read_timeout_s, connect=self.connect_timeout_s),
        )
        try:
            listed = client.models.list()
            models = list(listed.data)
        except Exception as exc:  # refused, 401, 404, not an OpenAI server...
            client.close()
            raise self._failure(ModelLoadError, exc, f"loading {spec.source!r}") from None
        served = [m.id for m in models]
        chosen = next((m for m in models if m.id == spec.source), None)
        if chosen is None and served:
            client.close()
            raise ModelNotFound(f"the server at {self.url} does not serve {spec.source!r}; it serves: "
                                f"{', '.join(served[:10])}", public=f"the model server does not serve {spec.source!r}")
        self.unload()
        self.client = client
        self.served_models = served
        self.server_model = chosen.model_dump() if chosen is not None else {}
        self._server_budget = server_budget(self.server_model.get("owned_by"))
        self._server_budget_problem = ""
        self.spec, self.options = spec, options
        report(1.0, f"{spec.source} on {self.url} ready")

    def unload(self) -> None:
        if self.client is not None:
            self.client.close()
        self.client = None
        self.spec = None

    # -- describing ------------------------------------------------------------------------
    @property
    def context_window(self) -> int:
        """The server's ``max_model_len`` if its /models says, else 0 (unknown)."""
        for key in ("max_model_len", "context_length", "max_context_length"):
            value = self.server_model.get(key)
            if isinstance(value, int) and value > 0:
                return value
        return 0

    def describe(self) -> ModelInfo:
        if not self.loaded:
            raise PlaygroundError("no model is loaded")
        factor = self.options.yarn_factor
        notes = ["YaRN is a server-side setting: start the server with the flags for the factor "
                 "you need (vLLM --rope-scaling, SGLang --json-model-override-args, llama-server "
                 "--rope-scaling yarn)"]
        if not self.context_window:
            notes.append("context window unknown: the server's /models does not report max_model_len")
        details: dict[str, Any] = {
            "server": self.url,
            "owned_by": self.server_model.get("owned_by"),
            "served_models": self.served_models,
            "api_key": "set" if not self._no_key else "none",
        }
        if self._ignored_thinking_off:
            notes.append("this server ignored enable_thinking=false per request (llama_cpp.server does): "
                         "start it with --chat_template_kwargs '{\"enable_thinking\": false}', or end "
                         "the message with /no_think")
        notes.append("message text is sent with an invisible U+2060 inside any reserved token string "
                     "(<|im_start|>, <think>...), so the server reads it as text, not as control tokens")
        details["thinking_budget"] = "server" if self.budget_by_server else "playground"
        if self.budget_by_server:
            notes.append(self._server_budget.note())
        else:
            notes.append(CLIENT_NOTE + (f"; {self._server_budget_problem}" if self._server_budget_problem else ""))
        if factor != 1.0:
            details["server_flags"] = server_command_lines(factor)
            notes.append(f"YaRN factor {factor:g} requested: it only applies if the server was started "
                         "with the matching flags (details.server_flags)")
        return ModelInfo(
            backend=self.name,
            model=self.spec.name,
            source=self.spec.source,
            format="remote",
            quantization=None,
            dtype="server-side",
            device=self.url,
            memory_bytes=0,
            context_window=self.context_window,
            rope_scaling=None,
            notes=notes,
            details=details,
            parallel_replies=self.parallel_replies,
        )

    # -- the thinking budget -----------------------------------------------------------------
    @property
    def budget_by_server(self) -> bool:
        return self._server_budget is not None and not self._server_budget_problem

    def _sends_server_budget(self, settings: GenerationSettings, thinking: bool) -> bool:
        return self.budget_by_server and thinking and 0 < settings.thinking_budget < settings.max_new_tokens

    def _server_budget_outcome(self, budget: int, reasoning_tokens: int) -> Iterator[ChatEvent]:
        if self._server_budget is None or self._server_budget_problem:  # refused: the reply ran without
            return
        if ignored_budget(budget, reasoning_tokens):
            self._server_budget_problem = (f"the server ignored its budget field (a {budget:,}-token budget, "
                                           f"{reasoning_tokens:,} reasoning tokens)")
        elif reasoning_tokens >= budget:
            yield ThinkingBudgetReached(budget, self._server_budget.inserted, by_server=True)

    # -- generating ------------------------------------------------------------------------
    def request(self, messages: list[Message], settings: GenerationSettings, thinking: bool,
                tools: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The chat.completions.create arguments for one reply."""
        max_tokens = settings.max_new_tokens
        if self.context_window:  # leave room for the prompt (rough: ~2 characters per token)
            estimate = sum(len(json.dumps(m, ensure_ascii=False)) // 2 + 8 for m in [*messages, *(tools or [])])
            max_tokens = max(1, min(max_tokens, self.context_window - estimate))
        body: dict[str, Any] = {
            "top_k": settings.top_k if settings.top_k > 0 else self._top_k_off,
            "min_p": settings.min_p,
            "chat_template_kwargs": {"enable_thinking": thinking},
        }
        kwargs: dict[str, Any] = dict(
            model=self.spec.source, messages=[_reasoning_in_content(m) for m in _plain(messages)], stream=True,
            stream_options={"include_usage": True},
            temperature=0.0 if settings.greedy else settings.temperature,
            top_p=settings.top_p, presence_penalty=settings.presence_penalty,
            max_tokens=max_tokens, extra_body=body,
        )
        if settings.seed is not None:
            kwargs["seed"] = settings.seed
        if self._sends_server_budget(settings, thinking):
            body.update(self._server_budget.fields(settings.thinking_budget))
        if tools:  # the server renders them with the model's template; results come back as tool messages
            kwargs["tools"] = tools
        return kwargs

    def continuation(self, messages: list[Message], settings: GenerationSettings,
                     tools: list[dict[str, Any]] | None, prefix: str) -> dict[str, Any]:
        """The completions.create arguments that continue a reply from ``prefix`` (the
        playground's thinking budget; see ``backends.remote_thinking_budget``)."""
        kwargs = self.request(messages, settings.with_updates(thinking_budget=0), True, tools)
        for chat_only in ("messages", "tools"):
            kwargs.pop(chat_only, None)
        kwargs["extra_body"].pop("chat_template_kwargs")
        kwargs["prompt"] = continuation_prompt(_plain(messages), tools, prefix)
        return kwargs

    def _open(self, create: Any, settings: GenerationSettings, thinking: bool) -> Any:
        """The streamed response of ``create()``; a server that spells "top_k off" as 0, or that
        refuses its own thinking-budget field, is remembered and asked once more."""
        import openai

        try:
            try:
                return create()
            except openai.APIStatusError as exc:
                if self._sends_server_budget(settings, thinking) and any(
                        name in str(exc) for name in self._server_budget.fields(1)):
                    self._server_budget_problem = f"the server refused its budget field ({self._server_message(exc)})"
                    return create()
                if settings.top_k > 0 or "top_k" not in str(exc) or self._top_k_off == 0:
                    raise
                self._top_k_off = 0
                return create()
        except Exception as exc:
            raise self._failure(BackendError, exc, "sending the request") from None

    def _generate(self, messages: list[Message], settings: GenerationSettings, thinking: bool,
                  stop: StopSignal, tools: list[dict[str, Any]] | None = None, prefix: str = ""
                  ) -> Iterator[BackendItem]:
        started = time.perf_counter()
        if prefix:  # the playground's thinking budget: go on from the reply so far
            stream = self._open(lambda: self.client.completions.create(
                **self.continuation(messages, settings, tools, prefix)), settings, thinking)
        else:
            stream = self._open(lambda: self.client.chat.completions.create(
                **self.request(messages, settings, thinking, tools)), settings, thinking)
        # Stop must not wait for the next chunk (a server busy with a long prompt sends none):
        # a watcher closes the HTTP stream as soon as the signal is set, which ends the read.
        finished = threading.Event()

        def watch() -> None:
            while not finished.wait(0.05):
                if stop.is_set():
                    abort_stream(stream)
                    return

        threading.Thread(target=watch, name="remote-stop-watch", daemon=True).start()
        # Content is split by the shared parser; a model whose template opens <think> in the
        # prompt starts inside the reasoning. A continuation goes on where the reply so far
        # stands: the parser reads that first (its text is not streamed again). Once the server
        # sends reasoning separately, content is the answer.
        parser = ReasoningParser(starts_in_reasoning=not prefix and self.spec.fixed_thinking is True)
        parser.feed(prefix)
        separated = False
        reasoning_started = answer_started = False
        n_chunks = reasoning_chunks = 0  # servers stream about one token per chunk
        first_at = last_at = None
        finish: str | None = None
        usage: Any = None
        calls = ServerToolCalls()  # structured tool_calls deltas (vLLM / SGLang tool parsers)
        try:
            for chunk in stream:
                if stop.is_set():
                    finish = "cancelled"
                    break
                usage = getattr(chunk, "usage", None) or usage
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                delta = getattr(choice, "delta", None)  # None: a completion chunk (continuation)
                reasoning = _field(delta, "reasoning_content") or _field(delta, "reasoning") if delta else None
                content = delta.content if delta else getattr(choice, "text", None)
                if delta and _field(delta, "tool_calls"):
                    calls.add(_field(delta, "tool_calls"))
                if reasoning or content:
                    now = time.perf_counter()
                    first_at = first_at or now
                    last_at = now
                    n_chunks += 1
                if reasoning:
                    separated = True
                    reasoning_chunks += 1
                    if not reasoning_started:
                        reasoning = reasoning.lstrip()
                        reasoning_started = bool(reasoning)
                    if reasoning:
                        yield ReasoningDelta(reasoning)
                if content:
                    if separated:
                        if not answer_started:
                            content = content.lstrip()
                            answer_started = bool(content)
                        if content:
                            yield AnswerDelta(content)
                    else:
                        deltas = parser.feed(content)
                        reasoning_chunks += any(isinstance(d, ReasoningDelta) for d in deltas)
                        yield from deltas
                if choice.finish_reason:
                    finish = choice.finish_reason
                if stop.is_set():
                    finish = "cancelled"
                    break
        except PlaygroundError:
            raise
        except Exception as exc:  # the connection dropped, a timeout between chunks...
            if not stop.is_set():
                raise self._failure(BackendError, exc, "the reply was cut off", mid_stream=True) from None
            finish = "cancelled"  # the watcher closed the stream under the read
        finally:
            finished.set()
            stream.close()  # closes the HTTP response: the server aborts the request
        if finish is None and stop.is_set():
            finish = "cancelled"
        if finish is None:
            raise BackendError(f"the reply was cut off: the server at {self.url} closed the stream "
                               "before the end of the reply",
                               public="the reply was cut off: the model server closed the stream early")
        yield from parser.finalize()
        yield from calls.finished()
        if not thinking and (reasoning_started or parser.saw_close):
            self._ignored_thinking_off = True
        ended = time.perf_counter()
        completion = getattr(usage, "completion_tokens", None) if usage else None
        prompt_tokens = getattr(usage, "prompt_tokens", None) if usage else None
        details = getattr(usage, "prompt_tokens_details", None) if usage else None
        completion_details = getattr(usage, "completion_tokens_details", None) if usage else None
        reasoning_tokens = getattr(completion_details, "reasoning_tokens", None) if completion_details else None
        n = int(completion) if completion is not None else n_chunks  # ~1 token per chunk
        decode_s = (last_at or ended) - (first_at or ended)
        yield GenerationStats(
            prompt_tokens=int(prompt_tokens or 0),
            completion_tokens=n,
            ttft_s=(first_at - started) if first_at else None,
            tokens_per_s=(n - 1) / decode_s if n > 1 and decode_s > 0 else None,
            total_s=ended - started,
            finish_reason={"stop": "stop", "length": "length", "cancelled": "cancelled"}.get(finish, "stop"),  # type: ignore[arg-type]
            cached_prompt_tokens=int(getattr(details, "cached_tokens", 0) or 0) if details else 0,
            reasoning_tokens=int(reasoning_tokens) if reasoning_tokens is not None else reasoning_chunks,
        )
