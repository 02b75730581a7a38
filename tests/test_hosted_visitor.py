"""Hosted mode played by a hostile visitor, through the real API.

The app runs as a user starts it (``python app.py --hosted``, ``tests/openai_loopback.start_app``)
with a 1,000-character message limit (so a conversation holds 10,000 characters and a file
160,000 bytes), serving a loopback OpenAI-compatible server's model: that server counts every
chat request, so "nothing was computed" is a counter that did not move. Each class of attack:
sizes on every endpoint (metadata-carrying histories included), uploads, nesting and "false"
strings, what errors tell (server paths, the host's server URL), export folders on disk, and
``--share``. Handler-level tests run in this process where that is faster.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from openai_loopback import DEFAULT_MODEL, LoopbackServer, start_app

pytestmark = pytest.mark.timeout(300)

LIMIT = 1000  # QWEN3_PLAYGROUND_MAX_MESSAGE_CHARS of the app under test
CONVERSATION = 10 * LIMIT
UPLOAD_BYTES = 16 * CONVERSATION
REMOTE = f"remote:{DEFAULT_MODEL}"
NESTED_LEVELS = 900


def nested(levels: int = NESTED_LEVELS) -> list:
    value: object = "x"
    for _ in range(levels):
        value = [value]
    return value  # type: ignore[return-value]


def text(message: dict) -> str:
    content = message["content"]
    return content if isinstance(content, str) else "".join(part.get("text", "") for part in content)


def title(message: dict) -> str:
    return (message.get("metadata") or {}).get("title") or ""


# -- the app ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def remote():
    with LoopbackServer(chunks=2, reply_seconds=0.05) as server:
        yield server


@pytest.fixture(scope="module")
def app(remote):
    env = {"QWEN3_PLAYGROUND_MAX_MESSAGE_CHARS": str(LIMIT), "QWEN3_PLAYGROUND_VISITORS_SWITCH_MODELS": "1"}
    with start_app("--hosted", "--model", REMOTE, remote_url=remote.url, env=env) as process:
        yield process


@pytest.fixture()
def client(app):
    from gradio_client import Client

    return Client(app.url, verbose=False)


def chat(client, message: str, history=(), *, system_prompt: str = "", thinking=False, model: str = REMOTE,
         loop_guard=True, api_name: str = "/chat", tools=None):
    return client.submit(message=message, history=list(history), system_prompt=system_prompt, thinking=thinking,
                         max_new_tokens=50, seed=0, model=model, tools=tools, loop_guard=loop_guard,
                         api_name=api_name)


def compare(client, *models: str, prompt: str = "hi", system_prompt: str = "", thinking=False, concurrent=False,
            loop_guard=True, tools=None):
    padded = [*models, *[""] * (4 - len(models))]
    entries = [value for model in padded for value in (model, 1.0)]
    return client.submit(*entries, prompt, system_prompt, thinking, "auto", 0, 50, concurrent, tools, 0, loop_guard,
                         api_name="/compare")


def follow_up(client, prompt: str, *, thinking=False):
    return client.submit(prompt, "", thinking, "auto", 0, 50, False, None, 0, True, api_name="/compare_follow_up")


def comparison_file(tmp_path: Path, histories: list[list[dict]], *, model: str = REMOTE, backend: str = "",
                    name: str = "comparison.json") -> str:
    """A comparison export with one entry per history (what /compare_export writes, pared down)."""
    entries = [{"label": f"{i + 1}. {model}", "model": model, "backend": backend, "yarn_factor": 1.0,
                "reasoning": "", "answer": "", "history": history} for i, history in enumerate(histories)]
    data = {"prompt": "q", "settings": {}, "thinking": False, "system_prompt": "", "created": "2026-01-01T00:00:00",
            "entries": entries}
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


def refused(job) -> str:
    """The AppError message a job ended with."""
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as caught:
        job.result(timeout=120)
    return str(caught.value)


# -- sizes: every endpoint, before anything is computed -------------------------------------------
def test_compare_refuses_an_oversize_prompt_or_system_prompt(client, remote):
    before = remote.total
    message = refused(compare(client, REMOTE, REMOTE, prompt="x" * (LIMIT + 1)))
    assert f"the prompt is {LIMIT + 1:,} characters long; this playground accepts at most {LIMIT:,}" in message
    message = refused(compare(client, REMOTE, REMOTE, system_prompt="y" * (LIMIT + 1)))
    assert f"the system prompt is {LIMIT + 1:,} characters long; this playground accepts at most {LIMIT:,}" in message
    assert remote.total == before, "a refused comparison reached the model server"


def test_follow_ups_are_limited_per_message_and_per_conversation(client, remote, tmp_path):
    from gradio_client import handle_file

    final = compare(client, REMOTE, REMOTE, prompt="hello").result(timeout=120)
    assert "Loopback answer to: hello" in json.dumps(final[0])
    before = remote.total
    message = refused(follow_up(client, "z" * (LIMIT + 1)))
    assert f"the prompt is {LIMIT + 1:,} characters long; this playground accepts at most {LIMIT:,}" in message
    # a conversation just under the limit, imported: one more message puts it over
    near = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a" * (CONVERSATION - 500)}]
    client.predict(handle_file(comparison_file(tmp_path, [near, near])), api_name="/compare_import")
    message = refused(follow_up(client, "w" * 600))
    assert "the conversation is 10,101 characters long; this playground accepts at most 10,000" in message
    assert remote.total == before, "a refused follow-up reached the model server"


def test_perplexity_refuses_an_oversize_pasted_text(client, remote):
    entries = [REMOTE, 1.0, REMOTE, 1.0, "", 1.0, "", 1.0]
    before = remote.total
    message = refused(client.submit(*entries, "tiny-script", "p" * (LIMIT + 1), api_name="/compare_perplexity"))
    assert f"the pasted text is {LIMIT + 1:,} characters long; this playground accepts at most {LIMIT:,}" in message
    # the same text sent as the "name" of a shipped text: not one of the dropdown's choices
    message = refused(client.submit(*entries, "p" * (LIMIT + 1), "", api_name="/compare_perplexity"))
    assert "is not in the list of choices: ['tiny-script'" in message
    assert remote.total == before


def test_drift_refuses_an_oversize_pasted_text(client, remote):
    """``/compare_drift`` takes its text under the same rules as ``/compare_perplexity``."""
    entries = [REMOTE, 1.0, REMOTE, 1.0, "", 1.0, "", 1.0]
    before = remote.total
    message = refused(client.submit(*entries, "tiny-script", "p" * (LIMIT + 1), api_name="/compare_drift"))
    assert f"the pasted text is {LIMIT + 1:,} characters long; this playground accepts at most {LIMIT:,}" in message
    message = refused(client.submit(*entries, "p" * (LIMIT + 1), "", api_name="/compare_drift"))
    assert "is not in the list of choices: ['tiny-script'" in message
    assert remote.total == before


def test_a_history_whose_metadata_is_oversize_is_refused_at_once(client, remote):
    """Display metadata (a reasoning panel's title here) counts like any text: 200 KB of it is
    refused in the first and only update, not echoed back in every streamed one."""
    history = [{"role": "user", "content": "hi"},
               {"role": "assistant", "content": "thought", "metadata": {"id": "reasoning:ab12", "title": "T" * 200_000}},
               {"role": "assistant", "content": "ok", "metadata": {"id": "answer:ab12"}}]
    before = remote.total
    job = chat(client, "and now?", history)
    final = job.result(timeout=120)
    assert len(job.outputs()) == 1, "the refused history was streamed back more than once"
    assert title(final[-1]) == "Error"
    assert "the conversation is 200," in text(final[-1]) and f"at most {CONVERSATION:,}" in text(final[-1])
    # the same through /chat_json and /regenerate, and in a tool result's record
    assert "the conversation is 200," in refused(chat(client, "and now?", history, api_name="/chat_json"))
    again = client.predict(history=[*history, {"role": "user", "content": "again"}], system_prompt="", thinking=False,
                           model=REMOTE, api_name="/regenerate")
    assert title(again[-1]) == "Error" and "the conversation is 200," in text(again[-1])
    record = json.dumps({"id": "c1", "name": "t", "arguments": {}, "result": "r" * 50_000, "round": 1})
    tool = [{"role": "user", "content": "hi"},
            {"role": "assistant", "content": "called", "metadata": {"id": "tool_call:ab12:c1", "title": "Tool call: t"}},
            {"role": "assistant", "content": "r", "metadata": {"id": f"tool_result:ab12:{record}",
                                                               "parent_id": "tool_call:ab12:c1"}}]
    final = chat(client, "and now?", tool).result(timeout=120)
    assert title(final[-1]) == "Error" and "the conversation is 50," in text(final[-1])
    assert remote.total == before, "a refused history reached the model server"


def test_a_system_prompt_over_the_limit_is_refused(client, remote):
    before = remote.total
    final = chat(client, "hi", system_prompt="s" * (LIMIT + 1)).result(timeout=120)
    assert title(final[-1]) == "Error" and "the system prompt is 1,001 characters long" in text(final[-1])
    assert remote.total == before


def test_imports_are_limited_in_bytes_and_in_text(client, tmp_path):
    from gradio_client import handle_file

    big_user = [{"role": "user", "content": "u" * (LIMIT + 1)}]
    message = refused(client.submit(json.dumps({"messages": big_user}), api_name="/chat_import"))
    assert "Could not import the chat: the message is 1,001 characters long" in message
    long_chat = [{"role": "user" if i % 2 == 0 else "assistant", "content": "c" * 999} for i in range(12)]
    message = refused(client.submit(json.dumps({"messages": long_chat}), api_name="/chat_import"))
    assert f"the conversation is 11,988 characters long; this playground accepts at most {CONVERSATION:,}" in message
    padded = json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + " " * UPLOAD_BYTES
    message = refused(client.submit(padded, api_name="/chat_import"))
    assert f"accepts files of at most {UPLOAD_BYTES:,} bytes" in message
    # a comparison whose column holds more than a conversation, or a user message over the limit
    over = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a" * (CONVERSATION + 1)}]
    message = refused(client.submit(handle_file(comparison_file(tmp_path, [over, over])), api_name="/compare_import"))
    assert "Could not import the comparison: the conversation is 10,002 characters long" in message
    message = refused(client.submit(handle_file(comparison_file(tmp_path, [big_user, big_user])),
                                    api_name="/compare_import"))
    assert "Could not import the comparison: the message is 1,001 characters long" in message


def test_uploads_over_the_byte_cap_are_refused_by_gradio(app, client, tmp_path):
    """Gradio's own upload route refuses a file over the cap (``max_file_size``), before any handler."""
    import httpx

    config = httpx.get(f"{app.url}/config", timeout=30).json()
    assert config["max_file_size"] == UPLOAD_BYTES
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (UPLOAD_BYTES + 1))
    with big.open("rb") as handle:
        response = httpx.post(f"{app.url}/gradio_api/upload", files={"files": ("big.json", handle)}, timeout=60)
    assert response.status_code == 413, response.text


def test_every_route_refuses_a_request_body_over_the_cap_before_reading_it(app):
    """A body over ``max_request_bytes`` (a conversation and its alternatives) gets a 413 on every
    route, Gradio's events and API, uploads and the OpenAI-compatible API alike, declared or
    chunked; under the cap the route itself answers."""
    import httpx

    from core.config import AppConfig

    cap = AppConfig(max_message_chars=LIMIT).max_request_bytes
    assert cap > UPLOAD_BYTES  # an upload at the cap still reaches Gradio's own check (above)
    routes = ("/gradio_api/queue/join", "/gradio_api/call/chat", "/gradio_api/upload", "/v1/chat/completions")
    for route in routes:
        response = httpx.post(f"{app.url}{route}", content=b" " * (cap + 1), timeout=60,
                              headers={"content-type": "application/json"})
        assert response.status_code == 413, (route, response.status_code)
        assert response.json() == {"error": f"the request is larger than this playground accepts ({cap:,} bytes at most)"}

    def chunked():  # no Content-Length: counted as it arrives
        for _ in range(3):
            yield b" " * (cap // 2)

    response = httpx.post(f"{app.url}/gradio_api/queue/join", content=chunked(), timeout=60,
                          headers={"content-type": "application/json"})
    assert response.status_code == 413
    under = httpx.post(f"{app.url}/gradio_api/queue/join", content=b"{}", timeout=60,
                       headers={"content-type": "application/json"})
    assert under.status_code not in (413, 500)  # Gradio's own answer to a bad event


# -- parsing: nesting and "false" ------------------------------------------------------------------
def test_deeply_nested_content_is_refused_with_its_field(client, tmp_path):
    from gradio_client import handle_file

    deep = [{"role": "user", "content": nested()}]
    assert "history is nested too deeply" in refused(chat(client, "hi", deep))
    assert "tools is nested too deeply" in refused(chat(client, "hi", tools={"enabled": nested()}))
    message = refused(client.submit(json.dumps({"messages": deep}), api_name="/chat_import"))
    assert "Could not import the chat: the chat is nested too deeply" in message
    path = tmp_path / "deep.json"
    path.write_text(json.dumps({"prompt": "q", "entries": nested()}), encoding="utf-8")
    assert "Not a comparison export: the file is nested too deeply" in refused(
        client.submit(handle_file(str(path)), api_name="/compare_import"))
    # nested one level too many inside a message: a clear refusal too
    shallow = [{"role": "user", "content": [["a"]]}]
    assert "history: message 1: content must be text" in refused(chat(client, "hi", shallow))


def test_false_as_a_string_is_refused_not_taken_as_true(client, remote):
    before = remote.total
    assert "thinking must be true or false (a JSON boolean), got 'false'" in refused(chat(client, "hi", thinking="false"))
    assert "loop_guard must be true or false" in refused(chat(client, "hi", loop_guard="false", api_name="/chat_json"))
    assert "concurrent must be true or false (a JSON boolean), got 'false'" in refused(
        compare(client, REMOTE, REMOTE, concurrent="false"))
    assert "thinking must be true or false" in refused(compare(client, REMOTE, REMOTE, thinking="false"))
    assert "loop_guard must be true or false" in refused(compare(client, REMOTE, REMOTE, loop_guard=0))
    assert remote.total == before


# -- what errors tell a visitor -------------------------------------------------------------------
def _column_error(final) -> str:
    return text(final[0]["value"][-1])


def test_compare_says_the_same_for_an_existing_server_path_and_an_unknown_name(client, remote, tmp_path):
    existing_file, existing_folder = str(Path(__file__).resolve()), str(Path(__file__).resolve().parent)
    messages = {ref: _column_error(compare(client, ref, REMOTE).result(timeout=120))
                for ref in (existing_file, existing_folder, "/no/such/model.gguf", "no-such-model")}
    assert messages[existing_file] == messages[existing_folder] == messages["/no/such/model.gguf"]
    assert messages["no-such-model"].replace("no-such-model", "<path>") == messages[existing_file]
    assert "only serves the models in its catalog" in messages[existing_file]
    for message in messages.values():
        assert "GGUF" not in message and "config.json" not in message and "tests" not in message


def test_an_imported_comparison_cannot_choose_a_backend(client, remote, tmp_path):
    """The file says "remote" for a name outside the catalog and "transformers" for the host's
    served model: in hosted mode the catalog's rules decide, as for a typed name."""
    from gradio_client import handle_file

    history = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    client.predict(handle_file(comparison_file(tmp_path, [history, history], model="someone/evil", backend="remote")),
                   api_name="/compare_import")
    before = remote.total
    final = follow_up(client, "next").result(timeout=120)
    assert "'someone/evil' is not available here" in _column_error(final)
    assert remote.total == before, "the file's backend choice sent a request to the host's server"
    client.predict(handle_file(comparison_file(tmp_path, [history, history], backend="transformers", name="b.json")),
                   api_name="/compare_import")
    final = follow_up(client, "next").result(timeout=120)
    assert "Loopback answer to: next" in json.dumps(final[0]) and remote.total == before + 2


def test_no_error_shows_the_hosts_server_url_or_paths(client, remote):
    secrets = (remote.url, remote.base, f"127.0.0.1:{remote.port}", str(Path.home()), "/tmp/")
    seen = []
    final = chat(client, "hi", model="remote:ghost").result(timeout=120)
    seen.append(text(final[-1]))
    seen.append(refused(chat(client, "hi", model="remote:ghost", api_name="/chat_json")))
    seen.append(_column_error(compare(client, "remote:ghost", REMOTE).result(timeout=120)))
    seen.append(client.predict("remote:ghost", 1.0, api_name="/load_model")[2])
    seen.append(text(chat(client, "hi", model=str(Path(__file__).resolve())).result(timeout=120)[-1]))
    assert all("ghost" in message or "<path>" in message for message in seen), seen
    for message in seen:
        for secret in secrets:
            assert secret not in message, (secret, message)


# -- disk: exports are bounded ----------------------------------------------------------------------
def test_the_export_folder_is_one_per_app_and_bounded():
    from playground.exports import ExportFolder

    now = [0.0]
    folder = ExportFolder(max_age_s=60, max_exports=5, clock=lambda: now[0])
    try:
        paths = [folder.write({"chat.json": f"{i}", "chat.md": f"{i}"}) for i in range(12)]
        assert folder.count() == 5 and len(list(folder.root.iterdir())) == 5
        assert all(p.parent.parent == folder.root for pair in paths for p in pair)
        assert [p.name for p in paths[-1]] == ["chat.json", "chat.md"] and paths[-1][0].read_text() == "11"
        assert not paths[0][0].exists() and paths[-5][0].exists()  # the oldest went first
        now[0] = 61.0  # a minute later, the next export removes every older one
        folder.write({"../../escape.json": "x"})
        assert folder.count() == 1 and len(list(folder.root.iterdir())) == 1
        assert not (folder.root.parent / "escape.json").exists()
        root = folder.root
    finally:
        folder.close()
    assert not root.exists()


def test_exports_through_the_api_stay_in_one_bounded_folder(tmp_path):
    from gradio_client import Client, handle_file

    from backends.pool import ModelPool
    from conftest import build_test_app, launch_in_process
    from core.config import AppConfig
    from playground.exports import DEFAULT_MAX_EXPORTS
    from ui.chat_files import export_chat

    demo = build_test_app(ModelPool(max_models=1), "tiny-bf16", AppConfig(hosted=True, max_message_chars=LIMIT))
    playground = demo.playground
    try:
        client = Client(launch_in_process(demo), verbose=False)
        history = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
        client.predict(handle_file(comparison_file(tmp_path, [history, history], model="tiny-bf16")),
                       api_name="/compare_import")
        for _ in range(DEFAULT_MAX_EXPORTS + 8):
            json_path, _ = client.predict(api_name="/compare_export")
        assert json.loads(Path(json_path).read_text(encoding="utf-8"))["entries"][0]["model"] == "tiny-bf16"
        for _ in range(8):
            export_chat(history, "tiny-bf16", playground.exports)
        folders = list(playground.exports.root.iterdir())
        assert len(folders) == playground.exports.count() == DEFAULT_MAX_EXPORTS
        assert {p.parent for p in playground.exports.root.rglob("*.json")} == set(folders)
        root = playground.exports.root
    finally:
        demo.close()
        playground.close()
    assert not root.exists()


# -- --share -------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, share, hosted", [
    (["ui", "--share"], True, True),
    (["ui", "--share-with-local-access"], True, False),
    (["ui", "--share", "--share-with-local-access"], True, False),
    (["ui", "--hosted", "--share-with-local-access"], True, True),
    (["ui"], False, False),
])
def test_share_implies_hosted_mode_unless_local_access_is_asked_for(monkeypatch, argv, share, hosted):
    import app
    from ui.launch import app_config, sharing

    for name in ("SPACE_ID", "QWEN3_PLAYGROUND_HOSTED"):
        monkeypatch.delenv(name, raising=False)
    args = app.build_parser().parse_args(argv)
    assert sharing(args)[0] is share
    assert app_config(args).hosted is hosted
    monkeypatch.setenv("QWEN3_PLAYGROUND_HOSTED", "0")  # the environment cannot undo --share's hosted mode
    assert app_config(args).hosted is hosted


# -- the rules themselves, in this process ----------------------------------------------------------
def test_byte_caps_and_the_queue_follow_the_message_limit():
    from core.config import AppConfig

    hosted = AppConfig.from_env({"SPACE_ID": "me/space"})  # a Space: hosted, 20,000-character messages
    assert (hosted.hosted, hosted.max_conversation_chars, hosted.max_upload_bytes) == (True, 200_000, 3_200_000)
    assert hosted.queue_size == 64 and AppConfig().queue_size is None
    assert AppConfig.from_env({"QWEN3_PLAYGROUND_MAX_QUEUE": "5"}).queue_size == 5


def test_every_character_a_message_carries_counts():
    from core.config import AppConfig
    from core.errors import PromptError

    config = AppConfig(max_message_chars=100)
    small = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]
    config.check_conversation(small, "be brief")
    for extra in ({"metadata": {"id": "stats:1", "title": "t" * 1000}},
                  {"metadata": {"id": "tool_call:1:c", "log": "l" * 1000}},
                  {"tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "a" * 1000}}]},
                  {"reasoning_content": "r" * 1000}):
        with pytest.raises(PromptError, match="the conversation is 1,0"):
            config.check_conversation([*small, {"role": "assistant", "content": "", **extra}])


def test_hosted_errors_name_no_path_or_url_and_hide_unexpected_ones():
    from core.config import AppConfig
    from core.errors import ModelNotFound
    from playground import Playground

    hosted = Playground(AppConfig(hosted=True, remote_base_url="http://10.1.2.3:8000/v1"))
    local = Playground(AppConfig())
    error = ModelNotFound("/srv/models/x is a file but not a GGUF model; the server at http://10.1.2.3:8000/v1 "
                          "(10.1.2.3:8000) says no, see https://example.com/help; /think stays")
    shown = hosted.error_text(error)
    assert shown == "<path> is a file but not a GGUF model; the server at <url> (<url>) says no, see <url>; /think stays"
    assert local.error_text(error) == str(error)  # the host, on its own machine, gets everything
    assert hosted.error_text(KeyError("/etc/shadow")) == "unexpected error (KeyError); the host's log has the details"
    assert hosted.error_text(ModelNotFound("private", public="the model server does not serve 'x'")) == \
        "the model server does not serve 'x'"


def test_comparison_files_are_parsed_strictly():
    from core.compare_io import ComparisonFileError, parse_comparison

    good = {"prompt": "q", "settings": {}, "thinking": True, "entries": [{"label": "1", "model": "m"}]}
    assert parse_comparison(json.dumps(good), 4).thinking is True
    for change, words in (({"thinking": "false"}, "thinking must be true or false, got str"),
                          ({"entries": [{"label": "1", "model": "m", "yarn_factor": "2"}]}, "yarn_factor must be"),
                          ({"entries": [{"label": "1", "model": "m", "history": [{"role": "robot"}]}]}, "needs a role"),
                          ({"entries": [{"label": "1", "model": "m", "evil": 1}]}, "unknown field 'evil'"),
                          ({"entries": [{"label": "1", "model": "m"}] * 5}, "1 to 4 entries"),
                          ({"tools": [1]}, "tools must be a list of tool names")):
        with pytest.raises(ComparisonFileError, match=words):
            parse_comparison(json.dumps({**good, **change}), 4)
    with pytest.raises(ComparisonFileError, match="not UTF-8"):
        parse_comparison(b"\xff\xfe{", 4)
