"""What a stranger sees of a remote server's failure (``PlaygroundError.public``, hosted mode):
the kind of failure and the HTTP status, never the server's URL or the text of its reply, which
may echo the request's headers (the host's API key). The host still gets the full account."""
from __future__ import annotations

import http.server
import json
import threading

import pytest

from backends.remote_backend import RemoteBackend
from core.catalog import ModelSpec
from core.errors import BackendError, ModelLoadError, ModelNotFound
from core.request import LoadOptions
from core.settings import GenerationSettings
from openai_loopback import LoopbackServer, free_port

pytestmark = pytest.mark.timeout(60)

SECRET = "sk-host-secret-123"
MODEL = "echo-qwen3"


class _EchoingHandler(http.server.BaseHTTPRequestHandler):
    """Lists one model; answers every chat request 500 with a body that echoes its headers."""

    def log_message(self, *args):  # quiet
        pass

    def _json(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._json(200, {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "test"}]})

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._json(500, {"error": {"message": f"upstream failed; request headers were: {dict(self.headers)}"}})


@pytest.fixture()
def echoing_server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoingHandler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def spec(name: str = MODEL) -> ModelSpec:
    return ModelSpec(name=f"remote:{name}", source=name, backend="remote", format="remote")


def test_an_upstream_body_echoing_the_key_reaches_the_host_only(echoing_server):
    backend = RemoteBackend()
    backend.load(spec(), LoadOptions(base_url=echoing_server, api_key=SECRET))
    try:
        from conftest import ask

        with pytest.raises(BackendError) as caught:
            list(ask(backend, [{"role": "user", "content": "hi"}], GenerationSettings(max_new_tokens=8)))
        assert SECRET in str(caught.value) and "answered 500" in str(caught.value)  # the host's account
        public = caught.value.public
        assert public == "sending the request: the model server answered 500 Internal Server Error"
        assert SECRET not in public and "127.0.0.1" not in public
    finally:
        backend.unload()


def test_refused_connections_wrong_keys_and_unknown_models_name_no_url():
    port = free_port()  # nothing listens here
    with pytest.raises(ModelLoadError) as refused:
        RemoteBackend().load(spec(), LoadOptions(base_url=f"http://127.0.0.1:{port}/v1"))
    assert f"127.0.0.1:{port}" in str(refused.value)
    assert refused.value.public == f"loading {MODEL!r}: the model server cannot be reached"
    with LoopbackServer(api_key="right-key") as server:
        with pytest.raises(ModelLoadError) as wrong_key:
            RemoteBackend().load(spec(server.model), LoadOptions(base_url=server.url, api_key="wrong-key"))
        assert wrong_key.value.public == f"loading {server.model!r}: the model server answered 401 Unauthorized"
        with pytest.raises(ModelNotFound) as unknown:
            RemoteBackend().load(spec("nope"), LoadOptions(base_url=server.url, api_key="right-key"))
        assert server.model in str(unknown.value)  # the host learns what the server serves
        assert unknown.value.public == "the model server does not serve 'nope'"


def test_a_hosted_model_info_names_no_server():
    """The model info visitors get (``/chat_json``'s ``info``, Compare's) hides the host's server
    URL, as its errors do; the host's own info keeps it."""
    from core.config import AppConfig
    from playground import Playground

    with LoopbackServer(reply_seconds=0.1) as server:
        model = f"remote:{server.model}"
        hosted = Playground(AppConfig(hosted=True, remote_base_url=server.url, default_model=model))
        local = Playground(AppConfig(remote_base_url=server.url))
        hosted.start_up()  # the host's model: visitors get it
        try:
            for playground in (hosted, local):
                request = playground.request([{"role": "user", "content": "hi"}], model=model, thinking=True)
                info = json.dumps(playground.reply(request).to_dict()["info"])
                assert (server.url in info) == (playground is local) and ("127.0.0.1" in info) == (playground is local)
            assert "<url>" in json.dumps(hosted.reply(hosted.request(
                [{"role": "user", "content": "hi"}], model=model, thinking=True)).to_dict()["info"])
        finally:
            hosted.close()
            local.close()
