"""The OpenAI-compatible API, served on the same server (and port) as the UI: ``GET /v1/models``
and ``POST /v1/chat/completions`` (streaming and not), mounted on Gradio's FastAPI app
(``ui.launch``: ``app_kwargs={"routes": openai_routes(playground)}``, so they come before
Gradio's own routes).

Every request goes through the playground layer, as the UI's do: ``core.openai_api`` checks the
body once (OpenAI-style 400 errors naming the field), ``Playground.request`` builds the chat
request (the card's preset for the mode, hosted rules, size limits, the history rules) and
``Playground.chat`` streams it in a worker thread. The reasoning comes back as
``reasoning_content`` (vLLM's name), the answer as ``content``, the model's tool calls as
``tool_calls`` (the client runs them). A client that goes away (or a ``stop`` string reached)
sets the generation's stop event, as the UI's Stop does.

Hosted mode: off unless the host turns it on (``QWEN3_PLAYGROUND_OPENAI_API=1``); a Bearer key
when ``QWEN3_PLAYGROUND_API_KEY`` is set (hosted or not); at most ``config.queue_size`` requests
at once (429 past it). Each reply's end is logged (logger ``qwen3_playground.openai_api``).
"""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
import sys
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from core.errors import PlaygroundError
from core.events import (AnswerDelta, GenerationStats, LoopStopped, ReasoningDelta)
from core.openai_api import (ApiError, ChatCompletionParams, StopCutter, api_error, chunk, completion,
                             completion_id, parse_chat_completion, usage)
from core.tools import ReasoningCut, ToolCall, ToolCallError, new_call_id
from playground import ModelReady, Playground

log = logging.getLogger("qwen3_playground.openai_api")
if not log.handlers:  # the app configures no logging: these lines go to stderr (the host's log)
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    log.addHandler(_handler)
    log.setLevel(logging.INFO)
    log.propagate = False

OFF = ("this playground's OpenAI-compatible API is off: its host turns it on with "
       "QWEN3_PLAYGROUND_OPENAI_API=1")
_END = object()


def openai_routes(playground: Playground) -> list[BaseRoute]:
    """The routes to mount on the app serving ``playground``'s UI."""
    api = OpenAIApi(playground)
    return [Route("/v1/models", api.models, methods=["GET"]),
            Route("/v1/chat/completions", api.chat_completions, methods=["POST"]),
            Route("/v1/{rest:path}", api.unknown, methods=["GET", "POST"])]


def error_response(error: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error.to_dict(), status_code=error.status, headers=headers)


class OpenAIApi:
    """The endpoints (see the module docstring)."""

    def __init__(self, playground: Playground) -> None:
        self.playground = playground
        self._lock = threading.Lock()
        self.in_flight = 0

    # -- gate ----------------------------------------------------------------------------
    def _gate(self, request: Request) -> JSONResponse | None:
        config = self.playground.config
        if not config.openai_api_on:
            return error_response(ApiError(OFF, None, "api_off", 404, "not_found_error"))
        if config.api_key:
            given = request.headers.get("authorization", "")
            scheme, _, key = given.partition(" ")
            if scheme.lower() != "bearer" or not secrets.compare_digest(key.strip().encode(), config.api_key.encode()):
                return error_response(ApiError("a valid API key is required: send it as 'Authorization: Bearer "
                                               "<key>'", None, "invalid_api_key", 401, "authentication_error"),
                                      {"WWW-Authenticate": "Bearer"})
        return None

    async def unknown(self, request: Request) -> Response:
        return self._gate(request) or error_response(
            ApiError(f"{request.method} {request.url.path} is not served here: this playground serves "
                     "GET /v1/models and POST /v1/chat/completions", None, "unknown_url", 404, "not_found_error"))

    # -- /v1/models ----------------------------------------------------------------------
    async def models(self, request: Request) -> Response:
        denied = self._gate(request)
        if denied:
            return denied
        choices = await run_in_threadpool(self.playground.catalog_choices)
        created = int(time.time())
        names = list(dict.fromkeys([value for _, value in choices]))
        return JSONResponse({"object": "list", "data": [
            {"id": name, "object": "model", "created": created, "owned_by": "qwen3-playground"} for name in names]})

    # -- /v1/chat/completions ------------------------------------------------------------
    async def chat_completions(self, request: Request) -> Response:
        denied = self._gate(request)
        if denied:
            return denied
        playground = self.playground
        raw = await request.body()
        if len(raw) > playground.config.max_upload_bytes:
            return error_response(ApiError(f"the request is {len(raw):,} bytes; this playground accepts at most "
                                           f"{playground.config.max_upload_bytes:,}", None, "request_too_large", 413))
        try:
            body = json.loads(raw)
        except ValueError:
            return error_response(ApiError("the request body is not valid JSON"))
        params: ChatCompletionParams | None = None
        try:
            params = parse_chat_completion(body)
            chat_request = await run_in_threadpool(self._request, params)
        except ApiError as exc:
            return error_response(exc)
        except PlaygroundError as exc:
            return error_response(api_error(exc, playground.error_text(exc), params))
        limit = playground.config.queue_size
        with self._lock:
            if limit is not None and self.in_flight >= limit:
                return error_response(ApiError(f"this playground is answering {limit} API requests already: try "
                                               "again when they end", None, "rate_limit_exceeded", 429,
                                               "rate_limit_error"))
            self.in_flight += 1
        run = Run(self, chat_request, params)
        run.start()
        first = await run.next()
        if not isinstance(first, ModelReady):  # the model did not load (or was refused): a plain error
            run.stop.set()
            return error_response(run.error_of(first))
        if params.stream:
            return StreamingResponse(run.sse(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                                     background=BackgroundTask(run.stop.set))
        watcher = asyncio.create_task(_stop_on_disconnect(request, run.stop))
        try:
            return await run.whole()
        finally:
            watcher.cancel()

    def _request(self, params: ChatCompletionParams):
        playground = self.playground
        if params.tools:
            playground.config.check_text(json.dumps(list(params.tools), ensure_ascii=False), "the tools")
        return playground.request(params.messages, model=params.model, yarn_factor=params.yarn_factor,
                                  settings=params.settings, thinking=params.thinking,
                                  loop_guard=params.loop_guard, client_tools=params.tools)


async def _stop_on_disconnect(request: Request, stop: threading.Event) -> None:
    """Set ``stop`` when the client of a non-streaming request goes away (its body is read: the
    next message the server gets is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            stop.set()
            return


class Run:
    """One reply: ``Playground.chat`` in a worker thread, its events handed to the event loop,
    turned into OpenAI's shapes. ``stop`` ends the generation (a client gone, a stop string)."""

    def __init__(self, api: OpenAIApi, request: Any, params: ChatCompletionParams) -> None:
        self.api, self.request, self.params = api, request, params
        self.playground = api.playground
        self.stop = threading.Event()
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.id = completion_id()
        self.created = int(time.time())
        self.cutter = StopCutter(params.stop)
        self.stop_hit: str | None = None
        self.calls = 0
        self.stats: GenerationStats | None = None
        self.loop_stopped = False
        self.reasoning: list[str] = []
        self.content: list[str] = []
        self.tool_calls: list[dict[str, Any]] = []

    # -- the worker thread ----------------------------------------------------------------
    def start(self) -> None:
        threading.Thread(target=self._work, name=f"openai-api-{self.id}", daemon=True).start()

    def _put(self, item: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the event loop is closed: the server is stopping
            self.stop.set()

    def _work(self) -> None:
        stats = None
        stream = self.playground.chat(self.request, stop=self.stop)
        try:
            for event in stream:
                if isinstance(event, GenerationStats):
                    stats = event
                    self._log_end(event)  # while the model's turn is still held: the next reply comes after
                self._put(event)
                if self.stop.is_set() and not self.playground.stop_reaches_generation:
                    break  # ZeroGPU: closing the stream is what stops it
        except BaseException as exc:  # noqa: BLE001 - handed to the event loop, worded there
            self._put(exc)
            if not isinstance(exc, PlaygroundError):
                logging.getLogger("qwen3_playground.errors").error("OpenAI API reply failed", exc_info=exc)
        finally:
            stream.close()
            if stats is None:
                log.info("%s %s: ended without a reply%s", self.id, self.params.model,
                         " (client gone)" if self.stop.is_set() else "")
            with self.api._lock:
                self.api.in_flight -= 1
            self._put(_END)

    def _log_end(self, stats: GenerationStats) -> None:
        why = (" (stop string)" if self.stop_hit is not None else " (client gone)" if self.stop.is_set() else "")
        log.info("%s %s: finish_reason=%s completion_tokens=%d%s", self.id, self.params.model,
                 stats.finish_reason, stats.completion_tokens, why)

    # -- the event loop side ----------------------------------------------------------------
    async def next(self) -> Any:
        return await self.queue.get()

    def error_of(self, item: Any) -> ApiError:
        if isinstance(item, ApiError):
            return item
        if isinstance(item, PlaygroundError):
            return api_error(item, self.playground.error_text(item), self.params)
        if isinstance(item, BaseException):
            return ApiError(self.playground.error_text(item), None, "internal_error", 500, "server_error")
        return ApiError("the reply ended before the model was ready", None, "internal_error", 500, "server_error")

    def deltas(self, event: Any) -> list[dict[str, Any]]:
        """What ``event`` adds to the reply, as stream deltas (also kept for a whole reply)."""
        if isinstance(event, ReasoningDelta) and event.text and self.stop_hit is None:
            self.reasoning.append(event.text)
            return [{"reasoning_content": event.text}]
        if isinstance(event, (AnswerDelta, ReasoningCut)) and self.stop_hit is None:
            text = event.text if isinstance(event, AnswerDelta) else event.answer
            out, hit = self.cutter.feed(text)
            if hit is not None:
                self.stop_hit = hit
                self.stop.set()  # the answer ends here: so does the generation
            if out:
                self.content.append(out)
                return [{"content": out}]
            return []
        if isinstance(event, (ToolCall, ToolCallError)) and self.stop_hit is None:
            call = event.to_openai()
            call["id"] = call["id"] or new_call_id()
            self.tool_calls.append(call)
            self.calls += 1
            return [{"tool_calls": [{"index": self.calls - 1, **call}]}]
        if isinstance(event, GenerationStats):
            self.stats = event
        elif isinstance(event, LoopStopped):
            self.loop_stopped = True
        return []

    def finish(self) -> tuple[str, str | None, list[dict[str, Any]]]:
        """(finish_reason, stop_reason, last deltas) once the stream has ended."""
        tail = []
        if self.stop_hit is None:
            rest = self.cutter.flush()
            if rest:
                self.content.append(rest)
                tail.append({"content": rest})
        if self.stop_hit is not None:
            return "stop", self.stop_hit, tail
        if self.tool_calls:
            return "tool_calls", None, tail
        if self.loop_stopped:
            return "stop", "loop_guard", tail
        if self.stats is not None and self.stats.finish_reason == "length":
            return "length", None, tail
        return "stop", None, tail

    def usage(self) -> dict[str, Any] | None:
        stats = self.stats
        if stats is None:
            return None
        return usage(stats.prompt_tokens, stats.completion_tokens, stats.reasoning_tokens, stats.cached_prompt_tokens)

    async def whole(self) -> Response:
        """The whole ``chat.completion``."""
        while (item := await self.next()) is not _END:
            if isinstance(item, BaseException):
                self.stop.set()
                return error_response(self.error_of(item))
            self.deltas(item)
        finish_reason, stop_reason, _ = self.finish()
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.content)}
        if self.reasoning:
            message["reasoning_content"] = "".join(self.reasoning)
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        return JSONResponse(completion(self.id, self.params.model, message, finish_reason, self.usage(), stop_reason))

    async def sse(self) -> AsyncIterator[str]:
        """The reply as server-sent ``chat.completion.chunk``s, then ``data: [DONE]``."""
        params = self.params
        event = lambda data: f"data: {json.dumps(data, ensure_ascii=False)}\n\n"  # noqa: E731
        make = lambda delta, **kw: event(chunk(self.id, params.model, self.created, delta, **kw))  # noqa: E731
        try:
            yield make({"role": "assistant", "content": ""})
            while (item := await self.next()) is not _END:
                if isinstance(item, BaseException):
                    self.stop.set()
                    yield event(self.error_of(item).to_dict())
                    yield "data: [DONE]\n\n"
                    return
                for delta in self.deltas(item):
                    yield make(delta)
            finish_reason, stop_reason, tail = self.finish()
            for delta in tail:
                yield make(delta)
            yield make({}, finish_reason=finish_reason, stop_reason=stop_reason)
            if params.include_usage:
                yield make(None, usage_=self.usage())
            yield "data: [DONE]\n\n"
        finally:  # the client went away (or the stream ended): the generation stops
            self.stop.set()
