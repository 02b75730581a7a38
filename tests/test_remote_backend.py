"""Remote backend against a real OpenAI-compatible server on 127.0.0.1 (llama_cpp.server + tiny GGUF).

Servers are started and stopped (SIGINT) by fixtures; nothing but loopback is contacted.
llama_cpp.server ignores a request's ``chat_template_kwargs`` (vLLM and SGLang honour them), so
the hard switch "thinking off" is tested on a second server started with its
``--chat_template_kwargs '{"enable_thinking": false}'`` flag, and the soft switch with ``/no_think``.
"""
from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ask
from processes import wait_until_serving

pytest.importorskip("openai")
pytest.importorskip("llama_cpp.server.app")

import tinymodels  # noqa: E402
from backends.base import LoadOptions  # noqa: E402
from playground import open_model  # noqa: E402
from backends.remote_backend import RemoteBackend, public_url  # noqa: E402
from core.errors import BackendError, InvalidSettings, ModelLoadError, ModelNotFound, PlaygroundError  # noqa: E402
from core.events import Reply  # noqa: E402
from core.presets import get_preset  # noqa: E402
from core.server_flags import server_command_lines, server_flags  # noqa: E402
from core.settings import GenerationSettings  # noqa: E402
from tinymodels.gguf import gguf_file  # noqa: E402
from tinymodels.script import case  # noqa: E402

KEY = "sk-test-secret-4242"
MODEL = "tiny-qwen3"
THINKING = get_preset("thinking").settings.with_updates(seed=3, max_new_tokens=64)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def start_server(tmp: Path, *extra: str, api_key: str | None = None) -> Server:
    model = gguf_file(tinymodels.build(("gguf-q8_0",))["gguf-q8_0"])
    port = free_port()
    log = tmp / f"server-{port}.log"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", MODEL,
           "--host", "127.0.0.1", "--port", str(port), "--n_threads", "1", "--n_threads_batch", "1",
           "--n_ctx", "4096", *extra]
    if api_key:
        cmd += ["--api_key", api_key]
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    server = Server(process, port, log)
    try:  # any status counts: a 401 without the key means it is up
        wait_until_serving(f"{server.url}/models", process, timeout=60, log=log, any_status=True,
                           what="llama_cpp.server")
    except RuntimeError:
        server.stop(signal.SIGKILL)
        raise
    return server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Thinking template as shipped, protected by an API key."""
    srv = start_server(tmp_path_factory.mktemp("remote"), api_key=KEY)
    yield srv
    srv.stop()
    assert srv.process.returncode == 0, srv.log.read_text()[-1000:]  # SIGINT: clean exit


@pytest.fixture(scope="module")
def no_thinking_server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("remote-nothink"), "--chat_template_kwargs",
                       '{"enable_thinking": false}')
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def remote(server):
    backend = open_model(MODEL, backend="remote", options=LoadOptions(base_url=server.url, api_key=KEY))
    yield backend
    backend.unload()


def chat(backend, messages, settings, thinking=True, stop=None) -> Reply:
    reply = Reply()
    for event in ask(backend, messages, settings, thinking=thinking, stop=stop):
        reply.add(event)
    return reply


# --- chat -------------------------------------------------------------------------------

def test_chat_with_thinking(remote):
    reply = chat(remote, case("think").messages, THINKING)
    assert (reply.reasoning, reply.answer) == ("Two plus three makes five.", "The answer is 5.")
    assert reply.stats.finish_reason == "stop" and reply.stats.completion_tokens >= 10
    assert reply.stats.ttft_s is not None and reply.stats.reasoning_tokens > 0


def test_soft_switch_no_think(remote):
    reply = chat(remote, case("no_think_soft").messages, THINKING)
    assert (reply.reasoning, reply.answer) == ("", "The answer is 5.")


def test_multi_turn_sends_answers_only(remote):
    history = case("multi_turn_leaked").messages  # the assistant turn still holds its <think> block
    reply = chat(remote, history, THINKING)
    assert (reply.reasoning, reply.answer) == ("They want one more fruit.", "Banana.")


def test_hard_switch_off(no_thinking_server):
    backend = open_model(MODEL, backend="remote", options=LoadOptions(base_url=no_thinking_server.url))
    try:
        reply = chat(backend, case("no_think_hard").messages, GenerationSettings(temperature=0, max_new_tokens=64),
                     thinking=False)
        assert (reply.reasoning, reply.answer) == ("", "The answer is 5.")
        other = chat(backend, case("another_no_think_hard").messages,
                     get_preset("non-thinking").settings.with_updates(seed=1, max_new_tokens=64), thinking=False)
        assert other.answer == "The sky is blue."
        assert not any("ignored enable_thinking" in n for n in backend.describe().notes)
    finally:
        backend.unload()


def test_thinking_off_ignored_by_llama_cpp_server_is_reported(remote):
    """llama_cpp.server renders with its start-up kwargs only: the reply still reasons, and says so."""
    reply = chat(remote, case("think").messages, GenerationSettings(temperature=0, max_new_tokens=64), thinking=False)
    assert reply.reasoning == "Two plus three makes five." and reply.answer == "The answer is 5."
    assert any("ignored enable_thinking=false" in n for n in remote.describe().notes)


def test_request_carries_the_settings(remote):
    settings = GenerationSettings(temperature=0.7, top_p=0.8, top_k=20, min_p=0.05, presence_penalty=1.5,
                                  seed=9, max_new_tokens=100)
    kwargs = remote.request([{"role": "user", "content": "hi"}], settings, thinking=False)
    assert kwargs["extra_body"] == {"top_k": 20, "min_p": 0.05, "chat_template_kwargs": {"enable_thinking": False}}
    assert (kwargs["temperature"], kwargs["top_p"], kwargs["presence_penalty"], kwargs["seed"],
            kwargs["max_tokens"], kwargs["model"], kwargs["stream"]) == (0.7, 0.8, 1.5, 9, 100, MODEL, True)
    assert "seed" not in remote.request([{"role": "user", "content": "hi"}], GenerationSettings(), True)


def test_top_k_off_is_accepted(remote):
    """vLLM wants -1 for "no top-k", llama_cpp.server 0: the backend retries once and remembers."""
    remote._top_k_off = -1
    reply = chat(remote, case("no_think_soft").messages, THINKING.with_updates(top_k=0))
    assert reply.answer == "The answer is 5." and remote._top_k_off == 0


def test_stop_closes_the_stream(remote):
    streams = []
    create = remote.client.chat.completions.create

    def spy(**kwargs):
        streams.append(create(**kwargs))
        return streams[-1]

    remote.client.chat.completions.create = spy
    try:
        stop = threading.Event()
        settings = GenerationSettings(temperature=0, max_new_tokens=3000)
        reply = Reply()
        for event in ask(remote, case("endless").messages, settings, thinking=False, stop=stop):
            reply.add(event)
            if len(reply.reasoning + reply.answer) > 20:
                stop.set()
        # cut right after the 20 characters: not the song's 3000 tokens
        assert reply.stats.finish_reason == "cancelled" and len(reply.reasoning + reply.answer) < 100
        assert streams[0].response.is_closed
    finally:
        del remote.client.chat.completions.create
    again = chat(remote, case("no_think_soft").messages, THINKING)  # the server serves the next request
    assert again.answer == "The answer is 5."


def test_describe_never_shows_the_key(remote, server):
    info = remote.describe()
    assert info.backend == "remote" and info.source == MODEL and info.device == server.url
    assert info.context_window == 0 and any("context window unknown" in n for n in info.notes)
    assert any("YaRN is a server-side setting" in n for n in info.notes)
    assert info.details["api_key"] == "set" and info.details["served_models"] == [MODEL]
    for text in (json.dumps(info.to_dict()), info.summary(), repr(remote), repr(remote.options)):
        assert KEY not in text


def test_yarn_factor_lists_server_flags(server):
    backend = open_model(MODEL, backend="remote",
                         options=LoadOptions(base_url=server.url, api_key=KEY, yarn_factor=4.0))
    try:
        flags = backend.describe().details["server_flags"]
        assert flags == server_command_lines(4.0)
        assert "--rope-scale 4 --yarn-orig-ctx 32768" in flags["llama-server"]
    finally:
        backend.unload()


# --- errors -------------------------------------------------------------------------------

def test_wrong_api_key(server):
    with pytest.raises(ModelLoadError, match="rejected the API key \\(401") as info:
        open_model(MODEL, backend="remote", options=LoadOptions(base_url=server.url, api_key="wrong-key-77"))
    assert "wrong-key-77" not in str(info.value)
    with pytest.raises(ModelLoadError, match="no API key was given"):
        open_model(MODEL, backend="remote", options=LoadOptions(base_url=server.url))
    # a key that stops working between load and chat: a BackendError in the chat
    backend = open_model(MODEL, backend="remote", options=LoadOptions(base_url=server.url, api_key=KEY))
    try:
        backend.client = backend.client.with_options(api_key="revoked-key-88")
        with pytest.raises(BackendError, match="401") as info:
            chat(backend, case("think").messages, THINKING)
        assert "revoked-key-88" not in str(info.value) and KEY not in str(info.value)
    finally:
        backend.unload()


def test_unknown_model_and_bad_url(server):
    with pytest.raises(ModelNotFound, match=f"serves: {MODEL}"):
        open_model("no-such-model", backend="remote", options=LoadOptions(base_url=server.url, api_key=KEY))
    with pytest.raises(ModelLoadError, match="404"):
        open_model(MODEL, backend="remote", options=LoadOptions(base_url=server.url[:-3], api_key=KEY))
    with pytest.raises(InvalidSettings, match="needs a server URL"):
        open_model(MODEL, backend="remote")
    with pytest.raises(InvalidSettings, match="http://HOST:PORT/v1"):
        open_model(MODEL, backend="remote", options=LoadOptions(base_url="127.0.0.1:8000"))


def test_server_down_and_killed_mid_stream(tmp_path):
    srv = start_server(tmp_path)
    backend = open_model(MODEL, backend="remote", options=LoadOptions(base_url=srv.url))
    try:
        history = [{"role": "user", "content": case("endless").messages[0]["content"]}]
        reply = Reply()
        with pytest.raises(BackendError, match="cut off: the server at .* closed the connection mid-reply") as info:
            for event in ask(backend, history, GenerationSettings(temperature=0, max_new_tokens=3000),
                                             thinking=False):
                reply.add(event)
                if len(reply.reasoning + reply.answer) > 20 and srv.process.poll() is None:
                    srv.process.kill()  # the server dies mid-reply
                    srv.process.wait()
        assert "la la" in reply.reasoning + reply.answer  # what streamed before the cut is kept
        assert srv.url in str(info.value)
        # the server is gone now: connection refused, in the chat and at load
        with pytest.raises(BackendError, match="connection refused"):
            chat(backend, history, THINKING)
        assert history == [{"role": "user", "content": case("endless").messages[0]["content"]}]
        with pytest.raises(ModelLoadError, match="connection refused.*is the server running"):
            open_model(MODEL, backend="remote", options=LoadOptions(base_url=srv.url))
    finally:
        backend.unload()
        srv.stop(signal.SIGKILL)


def test_timeout():
    """A server that accepts connections but never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
        backend = RemoteBackend()
        backend.read_timeout_s = 0.5
        started = time.monotonic()
        with pytest.raises(ModelLoadError, match="did not answer within 0.5 s"):
            backend.load(RemoteSpec(), LoadOptions(base_url=url))
        assert time.monotonic() - started < 5


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    """/v1/models, and a chat stream that sends one chunk and then goes silent until the test ends
    (the fixture's ``released``, at most ``silence_s``); ``spoke_again`` is set when it ends."""

    silence_s = 60.0

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        body = json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "test",
                                                        "max_model_len": 4096}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        chunk = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": MODEL,
                 "choices": [{"index": 0, "delta": {"role": "assistant", "reasoning_content": "Thinking"},
                              "finish_reason": None}]}
        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.flush()
        self.server.released.wait(self.silence_s)
        self.server.spoke_again.set()


@pytest.fixture()
def slow_server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
    httpd.daemon_threads = True
    httpd.released, httpd.spoke_again = threading.Event(), threading.Event()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.released.set()
    httpd.shutdown()
    httpd.server_close()


def silent_url(httpd) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}/v1"


def test_stop_while_the_server_is_silent(slow_server):
    backend = open_model(MODEL, backend="remote", options=LoadOptions(base_url=silent_url(slow_server)))
    assert backend.context_window == 4096  # max_model_len from /models
    stop = threading.Event()
    reply = Reply()
    for event in ask(backend, [{"role": "user", "content": "hi"}], THINKING, stop=stop):
        reply.add(event)
        threading.Timer(0.3, stop.set).start()  # Stop, pressed while the server says nothing
    assert reply.reasoning == "Thinking" and reply.stats.finish_reason == "cancelled"
    assert not slow_server.spoke_again.is_set()  # the reply ended while the server was still silent
    backend.unload()


def test_timeout_mid_stream(slow_server):
    backend = RemoteBackend()
    backend.read_timeout_s = 0.5
    backend.load(RemoteSpec(), LoadOptions(base_url=silent_url(slow_server)))
    reply = Reply()
    with pytest.raises(BackendError, match="did not answer within 0.5 s"):
        for event in ask(backend, [{"role": "user", "content": "hi"}], THINKING):
            reply.add(event)
    assert reply.reasoning == "Thinking"  # kept
    backend.unload()


def RemoteSpec():  # noqa: N802
    from core.catalog import resolve_model

    return resolve_model(MODEL, "remote")


def test_http_errors_are_explained():
    import httpx
    import openai

    backend = RemoteBackend()
    backend.url = "http://127.0.0.1:1/v1"
    request = httpx.Request("POST", "http://127.0.0.1:1/v1/chat/completions")
    for status, cls, expected in [(500, openai.InternalServerError, "answered 500: out of memory"),
                                  (503, openai.InternalServerError, "answered 503"),
                                  (400, openai.BadRequestError, "answered 400: out of memory"),
                                  (403, openai.PermissionDeniedError, "403 Forbidden"),
                                  (429, openai.RateLimitError, "answered 429")]:
        body = {"error": {"message": "out of memory"}}
        exc = cls("boom", response=httpx.Response(status, request=request, json=body), body=body)
        assert expected in backend._explain(exc, "sending the request")
    cut = httpx.RemoteProtocolError("peer closed connection without sending complete message body")
    assert "closed the connection mid-reply" in backend._explain(cut, "the reply was cut off")


# --- server flags (pure) ------------------------------------------------------------------

def test_server_flags():
    assert server_flags(1.0) == {"vllm": [], "sglang": [], "llama-server": []}
    flags = server_flags(4.0)
    scaling = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
    assert flags["vllm"][0] == "--rope-scaling" and json.loads(flags["vllm"][1]) == scaling
    assert flags["vllm"][2:] == ["--max-model-len", "131072"]
    assert flags["sglang"][0] == "--json-model-override-args"
    assert json.loads(flags["sglang"][1]) == {"rope_scaling": scaling}
    assert flags["sglang"][2:] == ["--context-length", "131072"]
    assert flags["llama-server"] == ["--rope-scaling", "yarn", "--rope-scale", "4", "--yarn-orig-ctx", "32768",
                                     "--ctx-size", "131072"]
    assert server_flags(2.5, context_length=70000)["llama-server"][-1] == "70000"
    assert server_flags(2.0)["vllm"][-1] == "65536"
    lines = server_command_lines(2.0)
    assert lines["vllm"] == ("--rope-scaling '{\"rope_type\":\"yarn\",\"factor\":2.0,"
                             "\"original_max_position_embeddings\":32768}' --max-model-len 65536")
    assert server_command_lines(1.0)["sglang"] == ""
    with pytest.raises(PlaygroundError):
        server_flags(5.0)


def test_public_url_strips_credentials():
    assert public_url("https://user:pw@example.org:8443/v1/?api_key=x#f") == "https://example.org:8443/v1"
    assert public_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"


# --- CLI ----------------------------------------------------------------------------------

def test_cli_remote_chat_json(server, tmp_path):
    env = {**os.environ, "OPENAI_API_KEY": KEY, "MY_KEY": KEY}
    root = Path(__file__).resolve().parent.parent
    for extra in ([], ["--api-key-env", "MY_KEY"]):
        done = subprocess.run(
            [sys.executable, "app.py", "chat", "--backend", "remote", "--base-url", server.url, "--model", MODEL,
             "--prompt", "What is 2+3?", "--seed", "1", "--json", *extra],
            cwd=root, env=env if not extra else {**env, "OPENAI_API_KEY": "wrong"},
            capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        out = json.loads(done.stdout)
        assert out["backend"] == "remote" and out["answer"] == "The answer is 5."
        assert out["reasoning"] == "Two plus three makes five." and out["info"]["device"] == server.url
        assert KEY not in done.stdout + done.stderr
    bad = subprocess.run(
        [sys.executable, "app.py", "chat", "--base-url", server.url, "--model", MODEL, "--prompt", "hi"],
        cwd=root, env={**env, "OPENAI_API_KEY": "nope-123"}, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "rejected the API key" in bad.stderr and "nope-123" not in bad.stderr
