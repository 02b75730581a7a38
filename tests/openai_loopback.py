"""A loopback OpenAI-compatible chat server for tests and benchmarks, and a helper that starts
the playground web app as a user would (``start_app``).

    python tests/openai_loopback.py --port 8000 --chunks 10 --delay 0.05   # stand-alone, Ctrl-C stops

In a test or a benchmark it runs in a background thread of the same process::

    with LoopbackServer(model="loopback-qwen3", reply_seconds=1.0) as server:
        ...  # server.url is http://127.0.0.1:<port>/v1

What it serves (standard library only, any number of requests at once: one thread per request):

- ``GET /v1/models``: one model (``model``) with ``max_model_len``, as vLLM lists it;
- ``POST /v1/chat/completions``: a scripted reply to the last user message (:func:`scripted_reply`):
  ``chunks`` ``reasoning_content`` deltas, then ``chunks`` ``content`` deltas, one every ``delay``
  seconds (default: spread so that a whole reply takes ``reply_seconds``).  With ``stream: true``
  the chunks go out as server-sent events in OpenAI's ``chat.completion.chunk`` shape: a first
  chunk with the role, the deltas, a chunk with ``finish_reason`` ("stop", or "length" when
  ``max_tokens`` chunks were sent), then, when ``stream_options.include_usage`` is set, a chunk
  with ``usage`` and no choices (as OpenAI and vLLM send it), then ``data: [DONE]``.  Without
  ``stream`` the whole ``chat.completion`` comes at the end, after the same time.
  ``chat_template_kwargs: {"enable_thinking": false}`` (vLLM's per-request switch) leaves the
  reasoning out.  Each chunk counts as one completion token.  With a ``tool_script`` and a request
  that offers ``tools``, the reply after the reasoning is the script's calls as structured
  ``tool_calls`` deltas (as vLLM's ``--tool-call-parser hermes`` sends them; streaming only).
- ``POST /v1/completions`` (streamed): the scripted answer to the prompt's last user turn, as
  ``text`` chunks (what a reply continued after the playground's thinking budget gets).
- ``owned_by`` names the server it plays ("vllm", "sglang", "llamacpp"); that server's own
  thinking-budget field is honoured (the reasoning cut after that many chunks), ignored, or
  refused with a 400 (``thinking_budget``: "honour", "ignore", "refuse").

For tests it counts the chat requests in flight (thread-safe: ``in_flight``, ``max_in_flight``,
``total``, ``completed``, ``aborted``; ``timings``: when each arrived, sent its first delta and
ended), lets a test wait until N requests are in flight at once
(:meth:`LoopbackServer.wait_for_in_flight`, with a timeout: no sleeps), and can hold every reply
before its first delta until :meth:`LoopbackServer.release` (so that "N at once" does not depend
on how fast the client is).  The bodies of the requests are kept in ``requests``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from processes import wait_until_serving

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = "loopback-qwen3"

Script = Callable[[str], tuple[str, str]]
# the calls a request offered ``tools`` gets, as (name, arguments), or None for a plain reply
ToolScript = Callable[[dict[str, Any]], "list[tuple[str, dict[str, Any]]] | None"]


def scripted_reply(question: str) -> tuple[str, str]:
    """(reasoning, answer) the server sends for the last user message ``question``: each
    question gets its own text, so a test can tell the replies of concurrent requests apart."""
    question = " ".join(question.split()) or "(nothing)"
    return (f"The user asks: {question} I will answer that one.",
            f"Loopback answer to: {question}")


def split_text(text: str, n: int) -> list[str]:
    """``text`` in ``n`` consecutive pieces of about the same length (empty ones if it is shorter)."""
    n = max(1, n)
    return [text[i * len(text) // n:(i + 1) * len(text) // n] for i in range(n)]


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI's content parts
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    for message in reversed(list(messages or [])):
        if isinstance(message, Mapping) and message.get("role") == "user":
            return _text(message.get("content"))
    return ""


_BUDGET_FIELDS = {"vllm": "thinking_token_budget", "sglang": "custom_params.thinking_budget",
                  "llamacpp": "thinking_budget_tokens"}


def _budget_of(body: Mapping[str, Any], owned_by: str) -> int | None:
    """The thinking budget a request asks the server called ``owned_by`` for, in its own field."""
    if owned_by == "sglang":
        value = (body.get("custom_params") or {}).get("thinking_budget")
    else:
        value = body.get(_BUDGET_FIELDS.get(owned_by, ""))
    return value if isinstance(value, int) else None


class _ClientGone(Exception):
    """The client closed the connection (Stop, a timeout): the reply is abandoned."""


class LoopbackServer:
    """The server (see the module docstring). ``start()`` / ``stop()``, or use it as a context manager."""

    def __init__(self, model: str = DEFAULT_MODEL, *, chunks: int = 10, reply_seconds: float = 1.0,
                 delay: float | None = None, max_model_len: int = 32768, api_key: str | None = None,
                 script: Script = scripted_reply, tool_script: ToolScript | None = None, host: str = "127.0.0.1",
                 port: int = 0, owned_by: str = "openai-loopback", thinking_budget: str = "honour") -> None:
        self.model = model
        self.owned_by = owned_by  # "vllm", "sglang", "llamacpp": that server's thinking-budget field
        self.thinking_budget = thinking_budget  # what it does with that field: "honour", "ignore", "refuse"
        self.chunks = max(1, int(chunks))
        # one delta every `delay` seconds; a reply has 2 x chunks deltas (reasoning, then answer)
        self.delay = float(delay) if delay is not None else float(reply_seconds) / (2 * self.chunks)
        self.max_model_len = max_model_len
        self.api_key = api_key
        self.script = script
        self.tool_script = tool_script
        self.host, self.port = host, port
        self.hold_timeout_s = 120.0  # a held reply goes on by itself after this, so nothing hangs forever
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._cond = threading.Condition()
        self._released = threading.Event()
        self._released.set()
        self.in_flight = 0
        self.max_in_flight = 0
        self.total = 0  # chat requests received
        self.completed = 0  # replies sent to the end
        self.aborted = 0  # replies the client walked away from
        self.requests: list[dict[str, Any]] = []  # the chat requests' bodies, in arrival order
        # per chat request, in arrival order: time.perf_counter() at "arrived", "first_delta", "ended"; "outcome"
        self.timings: list[dict[str, Any]] = []

    # -- life cycle --------------------------------------------------------------------------
    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The base URL an OpenAI client takes (``.../v1``)."""
        return f"{self.base}/v1"

    def start(self) -> LoopbackServer:
        server = self

        class Handler(_Handler):
            loopback = server

        httpd = ThreadingHTTPServer((self.host, self.port), Handler, bind_and_activate=False)
        httpd.daemon_threads = True
        httpd.request_queue_size = 128  # many clients connecting at once
        httpd.allow_reuse_address = True
        httpd.server_bind()
        httpd.server_activate()
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"openai-loopback-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> LoopbackServer:
        return self.start() if self._httpd is None else self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- for tests ---------------------------------------------------------------------------
    def reset_stats(self) -> None:
        """Start counting afresh (``max_in_flight`` becomes what is in flight now)."""
        with self._cond:
            self.max_in_flight = self.in_flight
            self.total = self.completed = self.aborted = 0
            self.requests.clear()
            self.timings.clear()

    def wait_for_in_flight(self, n: int, timeout: float) -> bool:
        """Wait until at least ``n`` chat requests are in flight at the same time; False after
        ``timeout`` seconds without that (``max_in_flight`` then says how many were)."""
        with self._cond:
            return self._cond.wait_for(lambda: self.in_flight >= n, timeout=timeout)

    def wait_for_completed(self, n: int, timeout: float) -> bool:
        """Wait until ``n`` replies were sent to the end (since the last ``reset_stats``)."""
        with self._cond:
            return self._cond.wait_for(lambda: self.completed >= n, timeout=timeout)

    def wait_idle(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.in_flight == 0, timeout=timeout)

    def hold(self) -> None:
        """Replies wait before their first delta until :meth:`release` (or ``hold_timeout_s``)."""
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def stats(self) -> dict[str, int]:
        with self._cond:
            return {"in_flight": self.in_flight, "max_in_flight": self.max_in_flight, "total": self.total,
                    "completed": self.completed, "aborted": self.aborted}

    # -- bookkeeping (the handler's threads) -------------------------------------------------
    def _enter(self, body: dict[str, Any]) -> dict[str, Any]:
        timing: dict[str, Any] = {"arrived": time.perf_counter(), "first_delta": None, "ended": None, "outcome": None}
        with self._cond:
            self.in_flight += 1
            self.total += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.requests.append(body)
            self.timings.append(timing)
            self._cond.notify_all()
        return timing

    def _leave(self, timing: dict[str, Any], outcome: str) -> None:
        with self._cond:
            timing["ended"], timing["outcome"] = time.perf_counter(), outcome
            self.in_flight -= 1
            if outcome == "completed":
                self.completed += 1
            elif outcome == "aborted":
                self.aborted += 1
            self._cond.notify_all()

    def _wait_released(self) -> None:
        self._released.wait(self.hold_timeout_s)


class _Handler(BaseHTTPRequestHandler):
    loopback: LoopbackServer
    server_version = "openai-loopback/1"
    protocol_version = "HTTP/1.0"  # the streamed body ends when the connection closes

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    # -- plumbing ----------------------------------------------------------------------------
    def _send_json(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        self._send_json(status, {"error": {"message": message, "type": kind, "code": status}})

    def _authorised(self) -> bool:
        key = self.loopback.api_key
        if key is None or self.headers.get("Authorization") == f"Bearer {key}":
            return True
        self._error(401, "invalid API key", "authentication_error")
        return False

    def _path(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/")

    # -- endpoints ---------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802
        if not self._authorised():
            return
        if self._path() in ("/v1/models", "/models"):
            server = self.loopback
            self._send_json(200, {"object": "list", "data": [
                {"id": server.model, "object": "model", "created": 0, "owned_by": server.owned_by,
                 "root": server.model, "max_model_len": server.max_model_len}]})
        elif self._path() in ("/health", ""):
            self._send_json(200, {"status": "ok"})
        else:
            self._error(404, f"no route {self._path()}")

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not self._authorised():
            return
        completion = self._path() in ("/v1/completions", "/completions")
        if self._path() not in ("/v1/chat/completions", "/chat/completions") and not completion:
            self._error(404, f"no route {self._path()}")
            return
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ValueError("the body is not a JSON object")
        except ValueError as exc:
            self._error(400, f"malformed JSON body: {exc}")
            return
        server = self.loopback
        if body.get("model") != server.model:
            self._error(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError")
            return
        if completion and not isinstance(body.get("prompt"), str):
            self._error(400, "prompt must be a string")
            return
        if not completion and (not isinstance(body.get("messages"), list) or not body["messages"]):
            self._error(400, "messages must be a non-empty list")
            return
        if server.thinking_budget == "refuse" and _budget_of(body, server.owned_by) is not None:
            self._error(400, f"unknown field in the request: {_BUDGET_FIELDS.get(server.owned_by)}")
            return
        timing = server._enter(body)
        outcome = "failed"
        try:
            if completion:
                self._stream_completion(body, timing)
            elif body.get("stream"):
                self._stream(body, timing)
            else:
                self._complete(body, timing)
            outcome = "completed"
        except (_ClientGone, BrokenPipeError, ConnectionResetError, socket.timeout):
            outcome = "aborted"
            self.close_connection = True
        finally:
            server._leave(timing, outcome)

    # -- the reply ---------------------------------------------------------------------------
    def _plan(self, body: dict[str, Any]) -> tuple[list[tuple[str, Any]], str, dict[str, Any]]:
        """The deltas as (field, value), the finish reason and the usage."""
        server = self.loopback
        kwargs = (body.get("chat_template_kwargs") or {}) if isinstance(body.get("chat_template_kwargs"), dict) else {}
        thinking = kwargs.get("enable_thinking", True) is not False
        reasoning, answer = server.script(last_user_text(body["messages"]))
        deltas = [("reasoning_content", part) for part in split_text(reasoning, server.chunks)] if thinking else []
        budget = _budget_of(body, server.owned_by) if server.thinking_budget == "honour" else None
        if budget is not None and thinking and len(deltas) > budget:  # the server ends the reasoning
            deltas = deltas[:budget] + ([("reasoning_content", body["thinking_budget_message"])]
                                        if body.get("thinking_budget_message") else [])
        calls = server.tool_script(body) if server.tool_script and body.get("tools") else None
        if calls:  # as vLLM's tool parsers stream them: id and name first, then the arguments in pieces
            for index, (name, arguments) in enumerate(calls):
                deltas.append(("tool_calls", [{"index": index, "id": f"call_loopback{index}", "type": "function",
                                               "function": {"name": name, "arguments": ""}}]))
                deltas += [("tool_calls", [{"index": index, "function": {"arguments": part}}])
                           for part in split_text(json.dumps(arguments), 3)]
        else:
            deltas += [("content", part) for part in split_text(answer, server.chunks)]
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        finish = "tool_calls" if calls else "stop"
        if isinstance(limit, int) and 0 < limit < len(deltas):
            deltas, finish = deltas[:limit], "length"
        prompt_tokens = sum(len(_text(m.get("content")).split()) + 4 for m in body["messages"] if isinstance(m, dict))
        n_reasoning = sum(1 for kind, _ in deltas if kind == "reasoning_content")
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(deltas),
                 "total_tokens": prompt_tokens + len(deltas),
                 "completion_tokens_details": {"reasoning_tokens": n_reasoning},
                 "prompt_tokens_details": {"cached_tokens": 0}}
        return deltas, finish, usage

    def _stream(self, body: dict[str, Any], timing: dict[str, Any]) -> None:
        server = self.loopback
        deltas, finish, usage = self._plan(body)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        ident = f"chatcmpl-loopback-{id(self):x}-{time.monotonic_ns()}"
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            out: dict[str, Any] = {"id": ident, "object": "chat.completion.chunk", "created": created,
                                   "model": server.model,
                                   "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                "finish_reason": finish_reason}]}
            if include_usage:
                out["usage"] = None
            return out

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self._event(chunk({"role": "assistant", "content": ""}))
        server._wait_released()
        for kind, text in deltas:
            time.sleep(server.delay)
            self._event(chunk({kind: text}))
            timing["first_delta"] = timing["first_delta"] or time.perf_counter()
        self._event(chunk({}, finish))
        if include_usage:
            self._event({"id": ident, "object": "chat.completion.chunk", "created": created, "model": server.model,
                         "choices": [], "usage": usage})
        self._send(b"data: [DONE]\n\n")

    def _stream_completion(self, body: dict[str, Any], timing: dict[str, Any]) -> None:
        """/v1/completions, streamed: the scripted answer to the prompt's last user turn (what a
        reply continued after its reasoning says)."""
        server = self.loopback
        turns = re.findall(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", body["prompt"], re.S)
        _, answer = server.script(turns[-1] if turns else "")
        parts = split_text(answer, server.chunks)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Connection", "close")
        self.end_headers()
        ident = f"cmpl-loopback-{time.monotonic_ns()}"
        for n, part in enumerate(parts):
            self._event({"id": ident, "object": "text_completion", "model": server.model,
                         "choices": [{"index": 0, "text": part, "logprobs": None,
                                      "finish_reason": "stop" if n == len(parts) - 1 else None}]})
            timing["first_delta"] = timing["first_delta"] or time.perf_counter()
        self._event({"id": ident, "object": "text_completion", "model": server.model, "choices": [],
                     "usage": {"prompt_tokens": len(body["prompt"].split()), "completion_tokens": len(parts),
                               "total_tokens": len(body["prompt"].split()) + len(parts)}})
        self._send(b"data: [DONE]\n\n")

    def _complete(self, body: dict[str, Any], timing: dict[str, Any]) -> None:
        server = self.loopback
        deltas, finish, usage = self._plan(body)
        server._wait_released()
        time.sleep(server.delay * len(deltas))
        timing["first_delta"] = time.perf_counter()
        reasoning = "".join(text for kind, text in deltas if kind == "reasoning_content")
        content = "".join(text for kind, text in deltas if kind == "content")
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if reasoning:
            message["reasoning_content"] = reasoning
        self._send_json(200, {"id": f"chatcmpl-loopback-{time.monotonic_ns()}", "object": "chat.completion",
                              "created": int(time.time()), "model": server.model,
                              "choices": [{"index": 0, "message": message, "logprobs": None,
                                           "finish_reason": finish}],
                              "usage": usage})

    def _event(self, payload: dict[str, Any]) -> None:
        self._send(f"data: {json.dumps(payload)}\n\n".encode())

    def _send(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError as exc:
            raise _ClientGone() from exc


# -- the playground web app as a subprocess ------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class AppProcess:
    """``python app.py ...`` running in a subprocess (its output in ``log``)."""

    process: subprocess.Popen
    port: int
    log: Path
    command: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGINT (Gradio's clean shutdown), then SIGKILL after ``timeout`` s; returns the exit code."""
        if self.process.poll() is None:
            try:
                self.process.send_signal(signal.SIGINT)
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        return self.process.returncode

    def __enter__(self) -> AppProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_app(*args: str, remote_url: str | None = None, port: int | None = None, env: Mapping[str, str] | None = None,
              log: Path | None = None, timeout: float = 120.0) -> AppProcess:
    """Start ``python app.py --port P *args`` from the repository root as a user would, with
    ``QWEN3_PLAYGROUND_REMOTE_URL=remote_url`` when given; return once its page answers.

    ``args`` are the command line's flags, e.g. ``("--model", "remote:loopback-qwen3",
    "--concurrency", "8")``.  Raises RuntimeError (with the end of its output) if it exits or
    does not answer within ``timeout`` seconds; the process is killed then.
    """
    port = port or free_port()
    if log is None:
        fd, name = tempfile.mkstemp(prefix=f"playground-app-{port}-", suffix=".log")
        os.close(fd)
        log = Path(name)
    child_env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1",
                 "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONUNBUFFERED": "1"}
    child_env.pop("QWEN3_PLAYGROUND_REMOTE_URL", None)
    if remote_url is not None:
        child_env["QWEN3_PLAYGROUND_REMOTE_URL"] = remote_url
    child_env.update(env or {})
    command = [sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port), *args]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=child_env, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    app = AppProcess(process, port, log, command)
    try:
        wait_until_serving(f"{app.url}/gradio_api/info", process, timeout=timeout, log=log, what="the app")
    except BaseException:
        app.stop(timeout=5)
        raise
    return app


# -- reading /chat replies -----------------------------------------------------------------

def message_text(message: Mapping[str, Any]) -> str:
    return _text(message.get("content"))


def reply_parts(history: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The last turn of a ``/chat`` history: {"reasoning", "answer", "notes": [titles], "errors": [texts]}.

    Thought panels have a ``metadata.title`` starting with "Thought"/"Thinking", the answer has
    none, notes (stats, errors) have another title."""
    last_user = max((i for i, m in enumerate(history) if m.get("role") == "user"), default=-1)
    reasoning, answer, notes, errors = [], [], [], []
    for message in history[last_user + 1:]:
        title = (message.get("metadata") or {}).get("title")
        if not title:
            answer.append(message_text(message))
        elif str(title).startswith(("Thought", "Thinking")):
            reasoning.append(message_text(message))
        else:
            notes.append(str(title))
            if str(title).lower().startswith("error"):
                errors.append(message_text(message))
    return {"reasoning": "".join(reasoning), "answer": "".join(answer), "notes": notes, "errors": errors}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A loopback OpenAI-compatible chat server (scripted replies).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"the served model's name [default: {DEFAULT_MODEL}]")
    parser.add_argument("--chunks", type=int, default=10, help="reasoning deltas, then as many answer deltas [10]")
    parser.add_argument("--delay", type=float, default=None,
                        help="seconds between two deltas [default: reply-seconds / (2 x chunks)]")
    parser.add_argument("--reply-seconds", type=float, default=1.0, help="length of a whole reply [1.0]")
    parser.add_argument("--max-model-len", type=int, default=32768)
    parser.add_argument("--api-key", default=None, help="require this Bearer key [default: none]")
    args = parser.parse_args(argv)
    server = LoopbackServer(args.model, chunks=args.chunks, reply_seconds=args.reply_seconds, delay=args.delay,
                            max_model_len=args.max_model_len, api_key=args.api_key, host=args.host,
                            port=args.port).start()
    print(f"serving {args.model!r} at {server.url} ({2 * server.chunks} deltas, one every {server.delay:g} s); "
          "Ctrl-C stops", flush=True)

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)  # kill PID, and SIGINT even when started in the background
    signal.signal(signal.SIGINT, interrupt)
    try:
        while True:
            signal.pause()  # until SIGINT/SIGTERM (the handlers raise KeyboardInterrupt)
    except KeyboardInterrupt:
        pass
    finally:
        print(f"stopping: {server.stats()}", flush=True)
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
