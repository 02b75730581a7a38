"""The playground layer: one typed request checked once, one settings schema everywhere, the
thinking rule in one place, replies as typed results (API / CLI parity), fair turns per model."""
from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from backends.base import Backend, FairLock, ModelInfo
from backends.pool import ModelPool
from core.catalog import ModelSpec
from core.errors import InvalidSettings, PromptError
from core.events import GenerationStats, RawDelta
from core.request import ChatRequest, LoadOptions
from fakes import FakeBackend
from core.settings import SCHEMA, GenerationSettings
from playground import ModelReady, Playground
from tinymodels.script import ADD_ANSWER, ADD_Q, ADD_REASONING, FRUIT_ANSWER, FRUIT_Q, case

ROOT = Path(__file__).resolve().parent.parent
ANOTHER = case("multi_turn")  # "Name a fruit." -> "Apple.", then "Another one?" -> "Banana."


class Recorder(FakeBackend):
    """Counts loads and remembers the request it was asked to answer."""

    name = "recorder"
    loads = 0

    def load(self, spec, options=LoadOptions(), progress=None):
        Recorder.loads += 1
        super().load(spec, options, progress)

    def _generate(self, messages, settings, thinking, stop, tools=None):
        self.seen = (messages, settings, thinking)
        yield RawDelta("<think>\nhm\n</think>\n\nok" if thinking else "ok")
        yield GenerationStats(3, 2, 0.01, None, 0.02, "stop")


SPECS = [ModelSpec("hybrid", "recorder", "x/hybrid"), ModelSpec("always", "recorder", "x/always", thinking="always"),
         ModelSpec("never", "recorder", "x/never", thinking="never"),
         ModelSpec("quant", "recorder", "x/quant", quantized=True)]


@pytest.fixture()
def playground():
    Recorder.loads = 0
    return Playground(pool=ModelPool(factory=lambda name: Recorder()), catalog=SPECS)


# -- the typed request -----------------------------------------------------------------------
@pytest.mark.parametrize("model,asked,effective", [
    ("hybrid", True, True), ("hybrid", False, False),
    ("always", False, True), ("never", True, False),
])
def test_the_thinking_rule_is_decided_once_by_the_model(playground, model, asked, effective):
    request = playground.request([{"role": "user", "content": "hi"}], model=model, thinking=asked)
    assert request.thinking is effective
    # the defaults follow the mode the model will be in
    assert request.settings.temperature == (0.6 if effective else 0.7)
    *_, (messages, settings, thinking) = [*playground.chat(request), playground.pool.peek(request.spec,
                                                                                         request.options).seen]
    assert thinking is effective


def test_a_request_is_checked_before_any_model_loads(playground):
    history = [{"role": "user", "content": "hi"}]
    with pytest.raises(InvalidSettings, match="greedy decoding"):
        playground.request(history, model="hybrid", settings={"temperature": 0})
    with pytest.raises(InvalidSettings, match="top_k must be between 0 and 1000"):
        playground.request(history, model="hybrid", settings={"top_k": 1001})
    with pytest.raises(PromptError, match="end with a user message"):
        playground.request([{"role": "assistant", "content": "hi"}], model="hybrid")
    assert Recorder.loads == 0  # nothing was loaded for any of them
    # greedy is fine when the model never thinks, whatever the switch says
    assert playground.request(history, model="never", settings={"temperature": 0}, thinking=True).settings.greedy


def test_the_request_carries_the_model_messages_after_the_history_rules(playground):
    history = [
        {"role": "user", "content": FRUIT_Q},
        {"role": "assistant", "content": "apples…", "metadata": {"id": "reasoning:r1", "title": "Thought for 1 s"}},
        {"role": "assistant", "content": FRUIT_ANSWER, "metadata": {"id": "answer:r1"}},
        {"role": "assistant", "content": "", "metadata": {"id": "stats:r1", "title": "12 prompt · 3 completion"}},
        {"role": "user", "content": "Another one?"},
    ]
    request = playground.request(history, model="hybrid", system_prompt="Be brief.")
    assert request.messages == ({"role": "system", "content": "Be brief."}, {"role": "user", "content": FRUIT_Q},
                                {"role": "assistant", "content": FRUIT_ANSWER},
                                {"role": "user", "content": "Another one?"})


def test_every_request_gets_its_own_seed_unless_one_is_given(playground):
    history = [{"role": "user", "content": "hi"}]
    seeds = {playground.request(history, model="hybrid").settings.seed for _ in range(5)}
    assert len(seeds) == 5 and all(isinstance(seed, int) for seed in seeds)
    assert playground.request(history, model="hybrid", settings={"seed": 7}).settings.seed == 7
    assert playground.request(history, model="hybrid", settings={"seed": -1}).settings.seed not in (None, -1)


def test_missing_settings_are_the_cards_preset_for_the_model(playground):
    request = playground.request([{"role": "user", "content": "hi"}], model="quant", thinking=False,
                                 settings={"top_p": 0.5, "max_new_tokens": None})
    assert request.settings.presence_penalty == 1.5  # the quantized preset
    assert request.settings.top_p == 0.5 and request.settings.max_new_tokens == 32768


def test_chat_yields_model_ready_then_the_reply(playground):
    request = playground.request([{"role": "user", "content": "hi"}], model="hybrid")
    events = list(playground.chat(request))
    assert isinstance(events[0], ModelReady) and events[0].info.model == "hybrid"
    result = playground.reply(request).to_dict()
    assert result["reasoning"] == "hm" and result["answer"] == "ok" and result["backend"] == "recorder"
    assert result["stats"]["seed"] == request.settings.seed and "load_s" in result["stats"]


# -- one settings schema ---------------------------------------------------------------------
def test_the_settings_class_is_the_schema():
    assert GenerationSettings.field_names() == tuple(spec.name for spec in SCHEMA)
    defaults = GenerationSettings()
    assert all(getattr(defaults, spec.name) == spec.default for spec in SCHEMA)


def test_ui_sliders_cli_flags_and_api_parameters_come_from_the_schema():
    import app
    from ui.api import with_settings
    from ui.settings_panel import setting_widget

    for spec in SCHEMA:
        widget = setting_widget(spec, spec.default)
        assert widget.label == spec.name and widget.maximum == spec.maximum, spec.name
        low = spec.minimum + spec.step if spec.exclusive_minimum else spec.minimum
        assert widget.minimum == (-1 if spec.optional else low), spec.name
    help_text = app.build_parser()._subparsers._group_actions[0].choices["chat"].format_help()
    for spec in SCHEMA:
        assert spec.flag in help_text, spec.flag
    endpoint = with_settings(lambda message, settings: settings, [inspect.Parameter(
        "message", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str)], [], dict, "x", "")
    assert list(inspect.signature(endpoint).parameters) == ["message", *(spec.name for spec in SCHEMA)]
    assert endpoint("hi", 0.5) == {**{spec.name: None for spec in SCHEMA}, "temperature": 0.5}


def test_cli_flags_reach_the_request():
    out = subprocess.run([sys.executable, "app.py", "chat", "--prompt", ADD_Q, "--json", "--top-k", "1",
                          "--min-p", "0.5", "--seed", "11", "--presence-penalty", "0.1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["stats"]["seed"] == 11 and data["answer"] == ADD_ANSWER and data["reasoning"] == ADD_REASONING
    bad = subprocess.run([sys.executable, "app.py", "chat", "--prompt", ADD_Q, "--top-k", "5000"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "top_k must be between 0 and 1000" in bad.stderr


# -- fair turns ------------------------------------------------------------------------------
def test_replies_waiting_for_one_model_are_served_in_arrival_order():
    lock, order, threads = FairLock(), [], []
    lock.__enter__()  # a reply is running

    def reply(n: int) -> None:
        with lock:
            order.append(n)

    for n in range(5):
        thread = threading.Thread(target=reply, args=(n,))
        thread.start()
        threads.append(thread)
        deadline = threading.Event()
        while lock.waiting < n + 2 and not deadline.wait(0.001):  # this one is queued before the next
            pass
    assert not lock.wait_free(timeout=0.01)  # busy: replies are waiting
    lock.__exit__()
    assert lock.wait_free(timeout=10)
    for thread in threads:
        thread.join(timeout=10)
    assert order == [0, 1, 2, 3, 4]


def test_local_models_say_they_reply_one_at_a_time(playground):
    info = playground.load("hybrid").describe()
    assert info.parallel_replies is False and "one reply at a time" in info.summary()
    from backends.remote_backend import RemoteBackend

    assert RemoteBackend.parallel_replies is True


# -- API and CLI parity ----------------------------------------------------------------------
@pytest.fixture()
def client(ui_server):
    from gradio_client import Client

    return Client(ui_server.url, verbose=False, download_files=False)


def test_the_json_endpoint_returns_what_the_cli_prints(client):
    api = client.predict(message=ADD_Q, seed=5, api_name="/chat_json")
    cli = json.loads(subprocess.run([sys.executable, "app.py", "chat", "--prompt", ADD_Q, "--seed", "5", "--json"],
                                    cwd=ROOT, capture_output=True, text=True, timeout=300,
                                    env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout)
    assert set(api) == set(cli) == {"backend", "model", "reasoning", "answer", "stats", "info"}
    assert set(api["stats"]) == set(cli["stats"]) and set(api["info"]) == set(cli["info"])
    for key in ("backend", "model", "reasoning", "answer"):
        assert api[key] == cli[key], key
    assert api["answer"] == ADD_ANSWER and api["stats"]["seed"] == 5 and api["stats"]["completion_tokens"] > 0


def test_a_chat_exported_from_the_ui_continues_on_the_command_line(client, tmp_path):
    first = client.predict(message=FRUIT_Q, max_new_tokens=200, api_name="/chat")
    assert [m["content"] for m in first if (m.get("metadata") or {}).get("id", "").startswith("answer:")] == [
        FRUIT_ANSWER]
    exported = tmp_path / "chat.json"
    exported.write_text(client.predict(first, "tiny-bf16", "json", api_name="/chat_export"))
    out = subprocess.run([sys.executable, "app.py", "chat", "--history", str(exported), "--prompt",
                          ANOTHER.messages[-1]["content"], "--json"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    # the tiny model answers "Reasoning leaked into the history." if the old reasoning is sent back
    assert data["answer"] == ANOTHER.answer and data["reasoning"] == ANOTHER.reasoning
    missing = subprocess.run([sys.executable, "app.py", "chat", "--history", str(tmp_path / "nope.json"),
                              "--prompt", "hi"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "cannot read the history file" in missing.stderr
