"""Faults, as a user of the web UI meets them (driven through its API with ``gradio_client``).

- a backend that fails mid-stream: the real transformers backend on the tiny model, whose
  forward pass raises inside ``generate`` after a few tokens (a hook on the loaded model), while
  reasoning or in the answer;
- a model folder deleted while loaded: a copy of the tiny model loaded from its path, deleted
  while a reply is being generated (from a forward hook, so it really is mid-generation);
- the remote server killed mid-reply: a real ``llama_cpp.server`` on the tiny GGUF, on
  127.0.0.1, as the host's remote server (the app's ``config.remote_base_url``; the page only
  names ``remote:<served model>``, never a URL), killed with SIGKILL while the reasoning streams
  (each token is delayed a little in the server so the kill lands mid-reply on a busy machine),
  then started again on the same port.

Every time the test checks what a user would see: the error text in the chat, the earlier turns
untouched in the returned history, the partial reply kept and marked (a reasoning panel cut off
says "cut off"; a partial answer is followed directly by the error note, and no stats note),
and the next message answered correctly: the user asks the failed question again, with all of
the above in the history (the tiny model only knows its script, ``tinymodels.script``; these
follow-ups are ones it answers reliably after such a history, checked over a dozen seeds).
Other sessions keep being served throughout.
"""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from processes import wait_until_serving
from tinymodels.script import ADD_ANSWER, ADD_Q, FRUIT_ANSWER, FRUIT_Q, SKY_ANSWER, SKY_Q, case

# The scripted second turn ("Name a fruit." -> "Apple.", then "Another one?"): after the fruit
# turn, only this question has a scripted reply (any other is whatever the tiny model makes of it).
ANOTHER = case("multi_turn")
ANOTHER_Q = ANOTHER.messages[-1]["content"]

THINKING_TITLE = "Thinking…"  # ui.formatting: the reasoning panel while it streams
THINKING = dict(temperature=0.6, top_p=0.95, top_k=20, min_p=0.0, presence_penalty=0.0)
FAULT = "device lost (simulated fault)"
REMOTE_ALIAS = "tiny-qwen3"
REMOTE = f"remote:{REMOTE_ALIAS}"  # a model on the host's remote server


def text(message: dict) -> str:
    content = message["content"]
    return content if isinstance(content, str) else "".join(part.get("text", "") for part in content)


def title(message: dict) -> str:
    return (message.get("metadata") or {}).get("title") or ""


def answers(history: list[dict]) -> list[str]:
    return [text(m) for m in history if m["role"] == "assistant" and not title(m)]


def chat(client, message, history, model, *, max_new_tokens=60, seed=0, yarn_factor=1.0, stream=None):
    """One /chat call with thinking on; ``stream(step)`` sees every streamed history."""
    job = client.submit(message, list(history), "", True, *THINKING.values(), max_new_tokens, seed, 0, model,
                        yarn_factor, api_name="/chat")
    for step in job:
        if stream is not None:
            stream(step)
    return job.result(timeout=120)


def new_client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False, download_files=False)


def check_answered(before: list[dict], question: str, final: list[dict], expected: str | None) -> None:
    """A complete turn after ``before``: thought, the expected answer (None: a conversation the tiny
    model has no script for, e.g. the same question twice in a row: any answer), a stats note;
    nothing lost."""
    assert final[: len(before)] == before, "earlier turns changed"
    new = final[len(before):]
    assert text(new[0]) == question and new[0]["role"] == "user"
    assert len(new) == 4 and title(new[1]).startswith("Thought for"), new
    if expected is None:
        assert len(answers(new)) == 1 and answers(new)[0].strip(), new
    else:
        assert answers(new) == [expected], new
    assert "completion tokens" in title(new[-1]) and new[-1]["metadata"]["id"].startswith("stats:"), new[-1]


def generation_idle(backend, timeout: float = 5.0) -> bool:
    return backend._generation_lock.wait_free(timeout)


# -- the app, on its own pool -------------------------------------------------------------------------
@dataclass
class App:
    url: str
    demo: object
    pool: object

    @property
    def playground(self):
        return self.demo.playground

    def backend(self, model: str, yarn_factor: float = 1.0):
        """The pool's loaded backend for ``model`` (a catalog name or a local path)."""
        return self.demo.playground.peek(model, yarn_factor)


@pytest.fixture(scope="module")
def app(tiny_bf16):
    import torch

    torch.set_num_threads(1)
    from backends.pool import ModelPool
    from conftest import build_test_app, launch_in_process

    pool = ModelPool(max_models=4)
    demo = build_test_app(pool, "tiny-bf16")
    url = launch_in_process(demo)
    try:
        yield App(url, demo, pool)
    finally:
        demo.close()
        pool.unload_all()


@contextmanager
def forward_hook(backend, hook):
    """``hook(n)`` runs before the model's n-th forward pass (1 = the prompt, then one per token)."""
    calls = [0]

    def pre_hook(module, args):
        calls[0] += 1
        hook(calls[0])

    handle = backend.model.register_forward_pre_hook(pre_hook)
    try:
        yield calls
    finally:
        handle.remove()


# -- a backend failing mid-stream ------------------------------------------------------------------
@pytest.mark.parametrize("where, forward_passes", [("reasoning", 5), ("answer", 20)])  # reasoning: 17 tokens
def test_backend_failing_mid_stream_keeps_history_and_partial_reply(app, where, forward_passes):
    client = new_client(app.url)
    first = chat(client, FRUIT_Q, [], "tiny-bf16")
    assert answers(first) == [FRUIT_ANSWER], first
    backend = app.backend("tiny-bf16")

    def fail(n: int) -> None:  # inside generate, as a device error would
        if n == forward_passes:
            raise RuntimeError(FAULT)

    with forward_hook(backend, fail):
        failed = chat(client, ANOTHER_Q, first, "tiny-bf16")
    assert failed[: len(first)] == first  # the earlier turn is untouched
    user, thought, *rest = failed[len(first):]
    assert text(user) == ANOTHER_Q
    error = failed[-1]
    assert title(error) == "Error" and FAULT in text(error) and "failed while generating" in text(error)
    if where == "reasoning":  # the panel is closed, marked as cut off, and keeps what it had
        assert "cut off" in title(thought) and thought["metadata"]["status"] == "done"
        assert text(thought) and ANOTHER.reasoning.startswith(text(thought)) and text(thought) != ANOTHER.reasoning
        assert rest == [error]  # no answer, no stats note: the error note ends the turn
    else:  # complete reasoning; the partial answer is kept, with the error note right after it
        assert title(thought).startswith("Thought for") and "cut off" not in title(thought)
        assert text(thought) == ANOTHER.reasoning
        partial, note = rest
        assert title(partial) == "" and text(partial) and ANOTHER.answer.startswith(text(partial))
        assert text(partial) != ANOTHER.answer and note is error
    assert not any("completion tokens" in title(m) for m in failed[len(first):])  # no stats: not a full reply
    assert generation_idle(backend)

    # the user asks again on the same model, with everything above in the history: answered
    again = chat(client, SKY_Q, failed, "tiny-bf16")
    check_answered(failed, SKY_Q, again, None)  # after a failed turn: unscripted, any answer


# -- a model folder deleted while loaded ---------------------------------------------------------------
def test_model_folder_deleted_while_generating(app, tiny_bf16, tmp_path):
    folder = tmp_path / "tiny-copy"
    shutil.copytree(tiny_bf16, folder)
    client = new_client(app.url)
    model, factor, status, info = client.predict(str(folder), 1.0, ("tiny-bf16", 1.0), api_name="/load_model")
    assert (model, factor) == (str(folder), 1.0) and "ready" in status
    first = chat(client, FRUIT_Q, [], str(folder))
    assert answers(first) == [FRUIT_ANSWER]

    backend = app.backend(str(folder))
    deleted_during: list[bool] = []

    def delete_folder(n: int) -> None:  # the 5th forward pass of the next reply: mid-generation
        if n == 5:
            shutil.rmtree(folder)
            deleted_during.append(backend._generation_lock.locked())

    with forward_hook(backend, delete_folder):
        second = chat(client, ANOTHER_Q, first, str(folder))
    assert deleted_during == [True] and not folder.exists()
    check_answered(first, ANOTHER_Q, second, ANOTHER.answer)  # the reply being generated finished normally

    # the model is still in memory: the session keeps chatting with it
    third = chat(client, SKY_Q, second, str(folder))
    check_answered(second, SKY_Q, third, SKY_ANSWER)
    # a reload from disk (a new YaRN factor) fails clearly; the session keeps the model it had
    model, factor, status, info = client.predict(str(folder), 2.0, (str(folder), 1.0), api_name="/load_model")
    assert (model, factor) == (str(folder), 1.0)
    assert "Could not load" in status and "no longer exists" in status and "Still using" in status
    assert "tiny-copy" in info and "context 32,768" in info  # the info line still shows the loaded model
    failed = chat(client, FRUIT_Q, third, str(folder), yarn_factor=2.0)
    assert failed[: len(third)] == third and title(failed[-1]) == "Error" and "no longer exists" in text(failed[-1])
    # and the app serves everyone else as before
    other = chat(new_client(app.url), ADD_Q, [], "tiny-bf16")
    assert answers(other) == [ADD_ANSWER]


# -- the remote server killed mid-reply ----------------------------------------------------------------
@dataclass
class Server:
    process: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self, sig: int = signal.SIGINT) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# The real llama_cpp.server, each token delayed a little (Llama.eval wrapped before the server
# starts) so that a kill lands mid-reply whatever the machine's load; nothing else changes.
SLOW_SERVER = """
import ctypes, os, runpy, signal, sys, time
# die with the test process even if it is killed before its clean-up (PR_SET_PDEATHSIG = 1)
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
if os.getppid() == 1:
    sys.exit(1)
import llama_cpp
delay = float(sys.argv.pop(1))
evaluate = llama_cpp.Llama.eval
def slow_eval(self, tokens):
    time.sleep(delay)
    return evaluate(self, tokens)
llama_cpp.Llama.eval = slow_eval
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""
TOKEN_DELAY_S = 0.12  # the reasoning streams for about a second: time to see it and kill


def start_server(folder: Path, port: int | None = None) -> Server:
    """``python -m llama_cpp.server`` on the tiny Q8_0 GGUF, on 127.0.0.1, one thread."""
    import tinymodels
    from conftest import free_port
    from tinymodels.gguf import gguf_file

    model = gguf_file(tinymodels.build(("gguf-q8_0",))["gguf-q8_0"])
    port = port or free_port()
    log = folder / f"server-{port}-{time.monotonic_ns()}.log"
    cmd = [sys.executable, "-c", SLOW_SERVER, str(TOKEN_DELAY_S), "--model", str(model),
           "--model_alias", REMOTE_ALIAS, "--host", "127.0.0.1", "--port", str(port), "--n_threads", "1",
           "--n_threads_batch", "1", "--n_ctx", "2048"]
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    server = Server(process, port, log)
    try:
        wait_until_serving(f"{server.url}/models", process, timeout=60, log=log, what="llama_cpp.server")
    except RuntimeError:
        server.stop(signal.SIGKILL)
        raise
    return server


def host_remote_server(ctx, url: str):
    """Point the app's remote backend at ``url`` as its host does (``config.remote_base_url``;
    pages name ``remote:<served model>``); returns an undo function."""
    configured = ctx.config
    ctx.config = replace(configured, remote_base_url=url)
    return lambda: setattr(ctx, "config", configured)


def test_remote_server_killed_mid_reply(app, tmp_path):
    pytest.importorskip("openai")
    pytest.importorskip("llama_cpp.server.app")
    servers: list[Server] = []
    undo = None
    try:
        server = start_server(tmp_path)
        servers.append(server)
        undo = host_remote_server(app.playground, server.url)
        client = new_client(app.url)
        model, factor, status, info = client.predict(REMOTE, 1.0, ("tiny-bf16", 1.0), api_name="/load_model")
        assert model == REMOTE and "ready" in status, status
        first = chat(client, FRUIT_Q, [], REMOTE)
        assert answers(first) == [FRUIT_ANSWER], first

        killed: list[str] = []

        def kill_while_reasoning(step: list[dict]) -> None:
            new = step[len(first):]
            if not killed and len(new) == 2 and title(new[1]) == THINKING_TITLE and len(text(new[1])) >= 3:
                server.process.kill()  # SIGKILL: the server dies mid-reply
                server.process.wait(timeout=10)
                killed.append(text(new[1]))

        failed = chat(client, ANOTHER_Q, first, REMOTE, stream=kill_while_reasoning)
        assert killed, "the reply ended before the server could be killed"
        assert failed[: len(first)] == first  # the earlier turn is untouched
        user, thought, error = failed[len(first):]  # no answer, no stats note
        assert text(user) == ANOTHER_Q
        # the reasoning that had streamed is kept, its panel closed and marked as cut off
        assert "cut off" in title(thought) and thought["metadata"]["status"] == "done"
        assert text(thought).startswith(killed[0]) and ANOTHER.reasoning.startswith(text(thought))
        assert text(thought) != ANOTHER.reasoning
        assert title(error) == "Error" and "cut off" in text(error)
        assert f"127.0.0.1:{server.port}" in text(error) and "closed the connection" in text(error)

        # meanwhile the app serves others; the dead server is reported clearly, nothing hangs
        other = new_client(app.url)
        down = chat(other, ADD_Q, [], REMOTE)
        assert title(down[-1]) == "Error" and "connection refused" in text(down[-1])
        assert answers(chat(other, ADD_Q, [], "tiny-bf16")) == [ADD_ANSWER]

        # the server comes back on the same address: the session asks again and is answered
        servers.append(start_server(tmp_path, server.port))
        after = chat(client, SKY_Q, failed, REMOTE)
        check_answered(failed, SKY_Q, after, None)  # after a failed turn: unscripted, any answer
    finally:
        if undo is not None:
            undo()
        for srv in servers:
            srv.stop()
