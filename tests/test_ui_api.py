"""The web UI driven through its API (gradio_client) on the tiny demo model, plus the ModelPool.

The app runs in this process on 127.0.0.1 (``ui_server`` in conftest.py), so the tests can also
look at the shared pool: the model a YaRN change loaded, the generation lock after Stop.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from backends.base import Backend, LoadOptions, ModelInfo
from backends.pool import ModelPool
from core.catalog import ModelSpec
from core.errors import ModelNotFound
from core.events import GenerationStats, RawDelta
from tinymodels.script import (ADD_ANSWER, ADD_Q, ADD_REASONING, ENDLESS_Q, FRUIT_ANSWER, FRUIT_Q, SKY_ANSWER,
                               SKY_Q, case)

ANOTHER = case("multi_turn")  # "Name a fruit." -> "Apple.", then "Another one?" -> "Banana."
ANOTHER_Q = ANOTHER.messages[-1]["content"]

THINKING = dict(temperature=0.6, top_p=0.95, top_k=20, min_p=0.0, presence_penalty=0.0)
NON_THINKING = dict(temperature=0.7, top_p=0.8, top_k=20, min_p=0.0, presence_penalty=0.0)


def text(message: dict) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content)


def title(message: dict) -> str | None:
    return (message.get("metadata") or {}).get("title")


def answers(history: list[dict]) -> list[str]:
    return [text(m) for m in history if m["role"] == "assistant" and not title(m)]


def chat_job(client, message, history=(), *, thinking=True, model="tiny-bf16", yarn_factor=1.0,
             max_new_tokens=200, seed=0, system_prompt="", loop_guard=True):
    values = THINKING if thinking else NON_THINKING
    return client.submit(message, list(history), system_prompt, thinking, *values.values(), max_new_tokens, seed,
                         0, model, yarn_factor, None, loop_guard, api_name="/chat")


@pytest.fixture()
def client(ui_server):
    from gradio_client import Client

    return Client(ui_server.url, verbose=False, download_files=False)


# -- chat ------------------------------------------------------------------------------------
def test_chat_with_thinking_streams_a_thought_then_the_answer(client):
    job = chat_job(client, ADD_Q, thinking=True)
    steps = list(job)
    final = job.result()
    assert [m["role"] for m in final[:3]] == ["user", "assistant", "assistant"]
    thought, answer, stats = final[1], final[2], final[3]
    assert text(thought) == ADD_REASONING
    assert thought["metadata"]["status"] == "done"
    assert thought["metadata"]["title"].startswith("Thought for")
    assert thought["metadata"]["duration"] >= 0
    assert text(answer) == ADD_ANSWER and title(answer) is None
    # the stats note under the reply: token counts, time to first token, speed
    assert "prompt" in title(stats) and "completion tokens" in title(stats) and "first token" in title(stats)
    assert "tokens/s" in title(stats)
    assert "tiny-bf16" in text(stats)
    # while streaming, the panel was pending ("Thinking…") before the answer started
    pending = [s for s in steps if len(s) >= 2 and (s[1].get("metadata") or {}).get("status") == "pending"]
    assert pending and all(len(s) == 2 for s in pending)


def test_chat_without_thinking_has_no_thought(client):
    final = chat_job(client, ADD_Q, thinking=False).result()
    assert not any((m.get("metadata") or {}).get("title", "").startswith(("Thinking", "Thought")) for m in final)
    assert answers(final) == [ADD_ANSWER]


def test_soft_switch_no_think_in_the_message(client):
    final = chat_job(client, ADD_Q + " /no_think", thinking=True).result()
    assert text(final[0]) == ADD_Q + " /no_think"  # sent as typed
    assert not any((title(m) or "").startswith(("Thinking", "Thought")) for m in final)  # empty block: no panel
    assert answers(final) == [ADD_ANSWER]


def test_soft_switch_think_in_the_message(client):
    """``/think`` ends the message: sent as typed, and the model thinks: the question's own reasoning
    in the panel, then its answer (not an empty think block as with ``/no_think``)."""
    final = chat_job(client, ADD_Q + " /think", thinking=True).result()
    assert text(final[0]) == ADD_Q + " /think"
    thought = final[1]
    assert title(thought).startswith("Thought for") and thought["metadata"]["status"] == "done"
    assert text(thought) == ADD_REASONING
    assert answers(final) == [ADD_ANSWER]


def test_a_reply_cut_off_while_reasoning_keeps_its_reasoning(client):
    final = chat_job(client, ADD_Q, thinking=True, max_new_tokens=4).result()
    thought = final[1]
    assert thought["metadata"]["status"] == "done" and "cut off" in thought["metadata"]["title"]
    assert text(thought) and ADD_REASONING.startswith(text(thought))
    assert answers(final) == [] and "hit max new tokens" in title(final[-1])


def test_second_turn_sends_history_back_without_reasoning(client):
    first = chat_job(client, FRUIT_Q, thinking=True).result()
    second = chat_job(client, ANOTHER_Q, first, thinking=True).result()
    assert second[: len(first)] == first  # the earlier turn (thought and stats included) is kept
    # the tiny model answers "Reasoning leaked into the history." if the old thought is sent back
    assert answers(second) == [FRUIT_ANSWER, ANOTHER.answer]
    assert text(second[len(first) + 1]) == ANOTHER.reasoning


def test_regenerate_replaces_the_last_reply(client):
    first = chat_job(client, ADD_Q, thinking=False).result()
    again = client.predict(first, "", False, *NON_THINKING.values(), 200, 0, 0, "tiny-bf16", 1.0,
                           api_name="/regenerate")
    assert [m["role"] for m in again].count("user") == 1
    assert answers(again) == [ADD_ANSWER]


# -- presets ---------------------------------------------------------------------------------
def test_presets_endpoint_and_preset_change(client):
    presets = client.predict(api_name="/presets")
    assert presets["thinking"]["temperature"] == 0.6 and presets["non-thinking"]["mode"] == "non-thinking"
    *values, note = client.predict("non-thinking", api_name="/apply_preset")
    assert values == [0.7, 0.8, 20, 0.0, 0.0, 32768, -1, {"__type__": "update"}]  # the thinking budget: unchanged
    assert "non-thinking" in note
    *values, note = client.predict("thinking-quantized", api_name="/apply_preset")
    assert values[0] == 0.6 and values[4] == 1.5
    # flipping Thinking switches to the mode's default preset and its values
    dropdown, *values, note = client.predict(False, "tiny-bf16", api_name="/set_thinking")
    assert dropdown["value"] == "non-thinking" and values[:3] == [0.7, 0.8, 20]
    dropdown, *values, note = client.predict(True, "tiny-fp8", api_name="/set_thinking")
    assert dropdown["value"] == "thinking-quantized" and values[4] == 1.5  # quantized model


def test_greedy_in_thinking_mode_is_refused_in_the_chat(client):
    job = client.submit(ADD_Q, [], "", True, 0.0, 0.95, 20, 0.0, 0.0, 50, 0, 0, "tiny-bf16", 1.0,
                        api_name="/chat")
    final = job.result()
    assert final[0]["role"] == "user" and "greedy" in text(final[-1]).lower()
    assert title(final[-1]) == "Error"


# -- YaRN ------------------------------------------------------------------------------------
def test_yarn_change_reloads_the_model_with_rope_scaling(client, ui_server):
    model, factor, status, info = client.predict("tiny-bf16", 2.0, api_name="/load_model")
    assert (model, factor) == ("tiny-bf16", 2.0)
    assert "ready" in status and "context 65,536" in info and "YaRN x2" in info
    backend = ui_server.backend("tiny-bf16", 2.0)
    described = backend.describe()
    assert described.rope_scaling["factor"] == 2.0 and described.rope_scaling["rope_type"] == "yarn"
    assert described.context_window == 65536
    assert ui_server.backend("tiny-bf16", 1.0) is not backend  # the factor-1 model is another entry
    final = chat_job(client, ADD_Q, thinking=False, yarn_factor=2.0).result()
    assert "65,536" in text(final[-1])  # the stats note names the model it ran on


# -- Stop ------------------------------------------------------------------------------------
def _generate_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "generate" and t.is_alive()]


def test_stop_ends_the_server_side_generation(client, ui_server):
    job = chat_job(client, ENDLESS_Q, thinking=False, max_new_tokens=38000, loop_guard=False)  # endless until Stop
    seen = 0
    for step in job:
        seen += 1
        if len(step) >= 2 and len(text(step[-1])) > 30:
            break
    assert _generate_threads(), "the endless generation should be running"
    job.cancel()
    backend = ui_server.backend("tiny-bf16", 1.0)
    # the lock is released only after the generate thread has been joined (Backend.stream_chat)
    assert backend._generation_lock.wait_free(timeout=5), "the model stayed busy after Stop"
    assert not _generate_threads(), "generate kept running after Stop"
    # the model is free for the next request at once
    assert answers(chat_job(client, ADD_Q, thinking=False).result()) == [ADD_ANSWER]


# -- errors ----------------------------------------------------------------------------------
def test_bad_model_path_is_reported_and_history_and_model_survive(client, tmp_path):
    history = chat_job(client, FRUIT_Q, thinking=True).result()
    bad = str(tmp_path / "no-such-model")
    model, factor, status, info = client.predict(bad, 1.0, api_name="/load_model")
    assert (model, factor) == ("tiny-bf16", 1.0)  # the session keeps its model
    assert "Could not load" in status and "no-such-model" in status and "Still using `tiny-bf16`" in status
    # a chat naming the bad model: an error note after the message, earlier turns untouched
    failed = chat_job(client, ANOTHER_Q, history, model=bad).result()
    assert failed[: len(history)] == history and text(failed[len(history)]) == ANOTHER_Q
    assert title(failed[-1]) == "Error" and "no-such-model" in text(failed[-1])
    # ...and the previous model still answers, with that history
    final = chat_job(client, ANOTHER_Q, history, thinking=True).result()
    assert answers(final) == [FRUIT_ANSWER, ANOTHER.answer]


# -- sessions --------------------------------------------------------------------------------
def test_two_clients_have_separate_sessions(ui_server):
    from gradio_client import Client

    a = Client(ui_server.url, verbose=False, download_files=False)
    b = Client(ui_server.url, verbose=False, download_files=False)
    assert a.predict("tiny-bf16", 2.0, api_name="/load_model")[:2] == ("tiny-bf16", 2.0)
    # b's session still has its own model: a failed load falls back to b's, not a's
    assert b.predict("/no/such/model", 1.0, api_name="/load_model")[:2] == ("tiny-bf16", 1.0)
    with ThreadPoolExecutor(2) as executor:
        fa = executor.submit(lambda: chat_job(a, ADD_Q, thinking=False, yarn_factor=2.0).result())
        fb = executor.submit(lambda: chat_job(b, SKY_Q, thinking=False).result())
        history_a, history_b = fa.result(timeout=60), fb.result(timeout=60)
    assert [text(m) for m in history_a if m["role"] == "user"] == [ADD_Q]
    assert [text(m) for m in history_b if m["role"] == "user"] == [SKY_Q]
    assert answers(history_a) == [ADD_ANSWER] and answers(history_b) == [SKY_ANSWER]


# -- start-up and small pieces ---------------------------------------------------------------
def test_nothing_cached_starts_on_the_tiny_model_and_says_so(monkeypatch):
    import playground.startup as startup
    from core.catalog import load_catalog

    monkeypatch.setattr(startup, "available_offline", lambda spec: spec.is_tiny)
    start = startup.choose_start_model(None, load_catalog())
    assert start.ref == "tiny-bf16"
    assert "tiny demo model" in start.note and "cache" in start.note
    assert startup.choose_start_model("qwen3-4b", load_catalog()).ref == "qwen3-4b"


def test_a_bad_start_model_falls_back_to_the_tiny_model():
    from playground import Playground

    playground = Playground(pool=ModelPool(factory=lambda name: FakeBackend()))
    start = playground.start_up("/no/such/model")
    assert start.ref == "tiny-bf16" and "/no/such/model" in start.note and "tiny demo model" in start.note
    assert playground.start == start


def test_yarn_readout_and_recommendation():
    from core.yarn import STATIC_YARN_WARNING
    from ui.settings_panel import recommendation_text, yarn_readout

    assert "32,768" in yarn_readout(1.0) and STATIC_YARN_WARNING not in yarn_readout(1.0)
    assert "65,536" in yarn_readout(2.0) and STATIC_YARN_WARNING in yarn_readout(2.0)
    assert "reloads the model" in yarn_readout(2.0)
    assert "**2**" in recommendation_text(65536) and "**4**" in recommendation_text(131072)
    assert "off" in recommendation_text(1000) and "at most" in recommendation_text(200000)


def test_stop_closes_a_pending_reasoning_panel():
    from ui.chat_tab import stopped
    from ui.formatting import thought_message, user_message

    from ui.formatting import answer_message, stats_message

    history = [user_message("hi"), thought_message("half a thou", "r1")]
    after = stopped(history)
    assert after[1]["metadata"]["status"] == "done" and after[1]["content"] == "half a thou"
    assert after[1]["metadata"]["id"] == "reasoning:r1"
    assert after[-1]["metadata"]["id"] == "stopped:r1" and title(after[-1]) == "Stopped"
    finished = [user_message("hi"), answer_message("done", "r2"), stats_message(None, "", "r2")]
    assert stopped(finished) == finished  # Stop after the reply ended changes nothing


def test_the_ui_imports_no_model_library():
    import subprocess
    import sys

    code = ("import sys; from ui.blocks import build_app; import ui.launch; build_app(); "
            "bad = [m for m in ('torch', 'transformers', 'llama_cpp', 'gptqmodel') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=str(__import__("pathlib").Path(__file__).resolve().parent.parent))
    assert done.returncode == 0, done.stdout + done.stderr


# -- ModelPool (no model library: a scripted fake backend) -----------------------------------
class FakeBackend(Backend):
    name = "fake"
    loads = 0

    def load(self, spec, options=LoadOptions(), progress=None):
        time.sleep(0.05)
        if "bad" in spec.source:
            raise ModelNotFound(f"{spec.source} does not exist")
        type(self).loads += 1
        self.spec, self.options = spec, options

    def describe(self):
        return ModelInfo("fake", self.spec.name, self.spec.source, "bf16", None, "bf16", "cpu", 0,
                         int(32768 * self.options.yarn_factor), None)

    def unload(self):
        self.spec = None

    def _generate(self, messages, settings, thinking, stop, tools=None):
        yield RawDelta("ok")
        yield GenerationStats(1, 1, 0.0, None, 0.0, "stop")


def spec(source: str) -> ModelSpec:
    return ModelSpec(name=source, backend="fake", source=source)


def test_pool_shares_one_load_per_key_across_threads():
    FakeBackend.loads = 0
    pool = ModelPool(factory=lambda name: FakeBackend())
    with ThreadPoolExecutor(4) as executor:
        got = list(executor.map(lambda _: pool.get(spec("a")), range(4)))
    assert FakeBackend.loads == 1 and all(b is got[0] for b in got)
    other = pool.get(spec("a"), LoadOptions(yarn_factor=2.0))
    assert other is not got[0] and other.options.yarn_factor == 2.0


def test_pool_failed_load_keeps_the_previous_model():
    pool = ModelPool(max_models=2, factory=lambda name: FakeBackend())
    good = pool.get(spec("a"))
    with pytest.raises(ModelNotFound):
        pool.get(spec("bad"))
    assert len(pool.loaded()) == 1 and good.loaded and pool.in_use == 1  # the failed load freed its slot
    assert pool.get(spec("a")) is good
    # with one slot, the previous model makes room before the load (a hard cap): it loads again when next used
    single = ModelPool(max_models=1, factory=lambda name: FakeBackend())
    first = single.get(spec("a"))
    with pytest.raises(ModelNotFound):
        single.get(spec("bad"))
    assert not first.loaded and single.loaded() == [] and single.get(spec("a")).loaded


def test_pool_evicts_the_least_recently_used_idle_model():
    pool = ModelPool(max_models=2, factory=lambda name: FakeBackend())
    a = pool.get(spec("a"))
    with pool.lease(spec("b")) as b:
        pool.get(spec("a"))  # a is now more recently used than b, but b is in use
        c = pool.get(spec("c"))
        assert b.loaded and c.loaded and not a.loaded  # a was the idle one
    assert len(pool.loaded()) == 2
