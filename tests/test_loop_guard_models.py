"""The loop guard on real tiny models: the endless song ("Sing la la la forever.") is stopped
within a bounded number of tokens and keeps what it wrote; scripted questions are not stopped;
with the guard off the song runs to max_new_tokens. Through the playground, the compare runner,
the CLI and the /chat and /chat_json endpoints."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import AppConfig
from core.messages import kind_of
from core.settings import SCHEMA, GenerationSettings
from playground import Playground
from tinymodels.script import ADD_ANSWER, ADD_Q, ENDLESS_Q, WEATHER_Q

pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parent.parent
MAX_NEW_TOKENS = 600  # the guard must stop the song long before this
LOOP_TOKEN_BOUND = 200  # 240 repeated characters are 80 " la" tokens; the rest is the check's lag
SONG = {"presence_penalty": 0.0, "max_new_tokens": MAX_NEW_TOKENS, "seed": 0}


@pytest.fixture(scope="module")
def playground():
    playground = Playground()
    try:
        yield playground
    finally:
        playground.pool.unload_all()
        playground.close()


def song(playground: Playground, model: str, **kwargs):
    request = playground.request([{"role": "user", "content": ENDLESS_Q}], model=model, thinking=False,
                                 settings={**SONG, **kwargs.pop("settings", {})}, **kwargs)
    return playground.reply(request)


@pytest.mark.parametrize("model", ["tiny-bf16", "tiny-gguf-q4_k_m", "tiny-gptq-int4"])
def test_the_endless_song_is_stopped_by_the_guard(playground, model):
    result = song(playground, model)
    data = result.to_dict()
    assert data["stop_reason"] == "repeating" and data["error"] is None
    assert data["stats"]["stopped_by"] == "loop_guard" and data["stats"]["loop_period_chars"] == 3
    assert data["stats"]["loop_repeats"] >= 8
    assert data["stats"]["completion_tokens"] < LOOP_TOKEN_BOUND < MAX_NEW_TOKENS
    assert data["stats"]["finish_reason"] == "cancelled"
    assert data["answer"].startswith("la la la") and len(data["answer"]) >= 240  # the text is kept
    # the retry: the card's advice against endless repetition
    retry, changed = playground.loop_retry_settings(result.request.settings)
    assert retry.presence_penalty == 1.5 and changed == {"presence_penalty": [0.0, 1.5]}
    assert retry.with_updates(presence_penalty=0.0) == result.request.settings


def test_with_the_guard_off_the_song_runs_to_max_new_tokens(playground):
    data = song(playground, "tiny-bf16", settings={"max_new_tokens": 120}, loop_guard=False).to_dict()
    assert "stop_reason" not in data and "stopped_by" not in data["stats"]
    assert data["stats"]["completion_tokens"] == 120 and data["stats"]["finish_reason"] == "length"


def test_loop_retry_settings_when_the_penalty_already_is_the_cards():
    settings = GenerationSettings(presence_penalty=1.5)
    assert Playground.loop_retry_settings(settings) == (settings, {})


@pytest.mark.parametrize("model", ["tiny-bf16", "tiny-gguf-q4_k_m"])
def test_scripted_questions_are_not_stopped(playground, model):
    request = playground.request([{"role": "user", "content": ADD_Q}], model=model, settings={"seed": 0})
    assert request.loop_guard
    data = playground.reply(request).to_dict()
    assert data["answer"] == ADD_ANSWER and "stop_reason" not in data and "stopped_by" not in data["stats"]


def test_a_tool_loop_is_not_stopped(playground):
    from core.mcp_config import parse_mcp_config

    server = str(Path(__file__).with_name("mcp_weather_server.py"))
    config = json.dumps({"mcpServers": {"weather": {"command": sys.executable, "args": [server]}}})
    toolbox = playground.toolbox(mcp=parse_mcp_config(config))
    request = playground.request([{"role": "user", "content": WEATHER_Q}], model="tiny-bf16",
                                 settings={"seed": 0}, toolbox=toolbox)
    data = playground.reply(request).to_dict()
    assert data["answer"] == "It is sunny and 21 degrees in Paris." and data["rounds"] == 2
    assert "stop_reason" not in data


def test_each_compare_column_stops_on_its_own(playground):
    from playground import load_fresh
    from playground.compare import EntrySpec, collect, new_comparison, run_comparison

    settings = playground.default_settings(playground.resolve("tiny-bf16"), False).with_values(**SONG)
    entries = [EntrySpec("tiny-bf16"), EntrySpec("tiny-gguf-q4_k_m")]
    comparison = new_comparison(entries, ENDLESS_Q, settings, False)
    histories = comparison.start_turn(ENDLESS_Q)
    collect(comparison, run_comparison(playground, entries, histories, settings, False, acquire=load_fresh,
                                       concurrent=True))
    for entry, row in zip(comparison.entries, comparison.rows()):
        assert entry.stop_reason == "repeating" and entry.error is None and row["error"] == "repeating"
        assert entry.stats["completion_tokens"] < LOOP_TOKEN_BOUND and entry.answer.startswith("la la la")
    assert "Stopped: repeating" in comparison.to_markdown()


# -- the CLI ---------------------------------------------------------------------------------
def app(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "app.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def test_cli_retry_on_loop_and_no_loop_guard():
    song_flags = ["chat", "--prompt", ENDLESS_Q, "--no-thinking", "--seed", "0", "--presence-penalty", "0"]
    done = app(*song_flags, "--max-new-tokens", str(MAX_NEW_TOKENS), "--retry-on-loop", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert "presence_penalty 0.0 -> 1.5" in done.stderr
    assert data["retried"]["changed"] == {"presence_penalty": [0.0, 1.5]}
    assert data["retried"]["first"]["stop_reason"] == "repeating"
    assert data["retried"]["first"]["stats"]["stopped_by"] == "loop_guard"
    # the tiny model is trained to sing whatever the penalty: the retry is stopped too
    assert data["stop_reason"] == "repeating" and data["stats"]["completion_tokens"] < LOOP_TOKEN_BOUND

    done = app(*song_flags, "--max-new-tokens", "60", "--no-loop-guard", "--json")
    data = json.loads(done.stdout)
    assert done.returncode == 0 and "stop_reason" not in data and data["stats"]["completion_tokens"] == 60

    done = app(*song_flags, "--max-new-tokens", str(MAX_NEW_TOKENS))  # streaming text
    assert done.returncode == 0 and "--- stopped: repeating (the same 3 characters" in done.stdout


# -- the API ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client():
    from gradio_client import Client

    from conftest import build_test_app, launch_in_process

    demo = build_test_app(None, "tiny-bf16")
    url = launch_in_process(demo)
    try:
        yield Client(url, verbose=False, download_files=False)
    finally:
        demo.close()
        demo.playground.pool.unload_all()


def settings_values(**values) -> list:
    return [values.get(spec.name) for spec in SCHEMA]


def test_the_api_says_a_reply_was_stopped_repeating(client):
    values = settings_values(**SONG)
    data = client.predict(ENDLESS_Q, [], "", False, *values, "tiny-bf16", 1.0, None, True, api_name="/chat_json")
    assert data["stop_reason"] == "repeating" and data["stats"]["stopped_by"] == "loop_guard"
    assert data["stats"]["completion_tokens"] < LOOP_TOKEN_BOUND

    off = client.predict(ENDLESS_Q, [], "", False, *settings_values(**{**SONG, "max_new_tokens": 60}), "tiny-bf16",
                         1.0, None, False, api_name="/chat_json")
    assert "stop_reason" not in off and off["stats"]["completion_tokens"] == 60

    # the default (no loop_guard given) is on
    default = client.predict(ENDLESS_Q, [], "", False, *values, "tiny-bf16", 1.0, api_name="/chat_json")
    assert default["stop_reason"] == "repeating"

    history = client.predict(ENDLESS_Q, [], "", False, *values, "tiny-bf16", 1.0, None, True, api_name="/chat")
    note = history[-1]
    assert kind_of(note) == "repeating" and note["metadata"]["title"] == "Stopped: repeating"
    assert "presence_penalty 0 → 1.5" in note["content"] and "3 characters" in note["content"]
    assert kind_of(history[-2]) == "answer" and history[-2]["content"].startswith("la la la")


def test_a_real_llama_cpp_server_is_stopped_by_the_guard_too(tmp_path):
    """The guard watches the stream whatever serves it: a real llama_cpp.server's endless song is
    stopped (the request is closed, so the server stops generating), the text kept."""
    from test_remote_backend import MODEL, start_server

    server = start_server(tmp_path)
    remote = Playground(AppConfig(remote_base_url=server.url))
    try:
        request = remote.request([{"role": "user", "content": ENDLESS_Q}], model=f"remote:{MODEL}", thinking=False,
                                 settings=SONG)
        data = remote.reply(request).to_dict()
        assert data["stop_reason"] == "repeating" and data["stats"]["stopped_by"] == "loop_guard"
        assert data["answer"].startswith("la la la") and data["stats"]["completion_tokens"] < LOOP_TOKEN_BOUND
    finally:
        remote.close()
        server.stop()
