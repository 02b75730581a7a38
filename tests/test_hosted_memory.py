"""Hosted mode's memory, played as a hostile visitor: the model budget is a hard cap on every path,
visitors cannot switch the shared model unless the host lets them, and the picker offers only
models the machine can hold.

The apps run in this process on 127.0.0.1 with real tiny models. Every backend the pools create is
counted by a :class:`Census` (loads started, unloads finished): the most models in memory at once
is read from it, not guessed from timings. Private UI events are sent the way a browser sends them
(``/gradio_api/queue/join``), which ``gradio_client`` refuses to do.
"""
from __future__ import annotations

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from backends.base import LoadOptions
from core.config import AppConfig
from core.errors import InvalidSettings, ModelNotServed, ModelSlotsBusy
from tinymodels.script import ADD_ANSWER, ADD_Q

pytestmark = pytest.mark.timeout(300)

SWITCH_REFUSED = "only the host of this playground can switch its model: it serves tiny-bf16 with YaRN off (factor 1)"
FACTORS = (1.0, 2.0, 3.0, 4.0)


class Census:
    """Wraps the pool's backend factory: how many models are in memory (a load counts from its
    start until its unload has finished, or its failure), the most at once, and what loaded."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.live = self.peak = self.unloads = 0
        self.loaded: list[tuple[str, float]] = []

    def _count(self, delta: int) -> None:
        with self._lock:
            self.live += delta
            self.peak = max(self.peak, self.live)

    def factory(self, name: str):
        from backends.pool import _default_factory

        backend = _default_factory(name)
        load, unload = backend.load, backend.unload
        state = {"loading": False, "held": False}  # a backend's load may call its own unload first

        def counted_load(spec, options=LoadOptions(), progress=None):
            self._count(+1)
            state["loading"] = True
            try:
                load(spec, options, progress)
            except BaseException:
                self._count(-1)
                raise
            finally:
                state["loading"] = False
            state["held"] = True
            with self._lock:
                self.loaded.append((spec.name, options.yarn_factor))

        def counted_unload():
            try:
                unload()
            finally:
                if state["held"] and not state["loading"]:
                    state["held"] = False
                    with self._lock:
                        self.unloads += 1
                    self._count(-1)

        backend.load, backend.unload = counted_load, counted_unload
        return backend


class App:
    def __init__(self, config: AppConfig, wait_s: float | None = None) -> None:
        from backends.pool import ModelPool
        from conftest import build_test_app, launch_in_process

        self.census = Census()
        kwargs = {"wait_s": wait_s} if wait_s is not None else {}
        self.pool = ModelPool(max_models=config.max_models, factory=self.census.factory, **kwargs)
        self.demo = build_test_app(self.pool, "tiny-bf16", config)
        self.playground = self.demo.playground
        self.url = launch_in_process(self.demo)

    def client(self):
        from gradio_client import Client

        return Client(self.url, verbose=False, download_files=False)

    def close(self) -> None:
        self.demo.close()
        self.pool.unload_all()

    def private_fn(self, name: str):
        """A private event's BlockFunction (the first one running the handler ``name``)."""
        return next(fn for fn in self.demo.fns.values() if fn.name == name and fn.api_visibility == "private")

    def send_private(self, name: str, data: list) -> list:
        """Send a private event as a browser does and return its final outputs."""
        import httpx

        session = uuid.uuid4().hex
        with httpx.Client(timeout=120) as http:
            joined = http.post(f"{self.url}/gradio_api/queue/join",
                               json={"data": data, "fn_index": self.private_fn(name)._id, "session_hash": session,
                                     "event_data": None, "trigger_id": None})
            assert joined.status_code == 200, joined.text
            with http.stream("GET", f"{self.url}/gradio_api/queue/data", params={"session_hash": session}) as events:
                for line in events.iter_lines():
                    if line.startswith("data:"):
                        message = json.loads(line[len("data:"):])
                        if message.get("msg") == "process_completed":
                            assert message["success"], message
                            return message["output"]["data"]
        raise AssertionError("the event never completed")


@pytest.fixture(scope="module")
def pinned(tiny_bf16):
    """A hosted playground as a Space gets it by default: one model slot, visitors cannot switch."""
    app = App(AppConfig(hosted=True, max_models=1))
    app.playground.load("tiny-bf16")
    yield app
    app.close()


@pytest.fixture(scope="module")
def switching(tiny_bf16):
    """A host that lets visitors switch models (and YaRN factors), with one model slot."""
    app = App(AppConfig(hosted=True, max_models=1, visitors_switch_models=True, memory_gb=1000.0))
    yield app
    app.close()


def text(message: dict) -> str:
    content = message["content"]
    return content if isinstance(content, str) else "".join(part.get("text", "") for part in content)


def title(message: dict) -> str:
    return (message.get("metadata") or {}).get("title") or ""


def answers(messages: list[dict]) -> list[str]:
    return [text(m) for m in messages if m["role"] == "assistant" and not title(m)]


def compare_job(client, models_and_factors, *, concurrent=True):
    fields = {}
    for i, (model, factor) in enumerate(models_and_factors, start=1):
        fields[f"model_{i}"], fields[f"yarn_{i}"] = model, factor
    for i in range(len(models_and_factors) + 1, 5):
        fields[f"model_{i}"], fields[f"yarn_{i}"] = "", 1.0
    return client.submit(**fields, prompt=ADD_Q, system_prompt="", thinking=False, preset="auto", seed=0,
                         max_new_tokens=60, concurrent=concurrent, tools=None, thinking_budget=0, loop_guard=True,
                         api_name="/compare")


def chat_job(client, model="tiny-bf16", yarn_factor=1.0):
    return client.submit(message=ADD_Q, history=[], system_prompt="", thinking=False, seed=0, max_new_tokens=60,
                         model=model, yarn_factor=yarn_factor, api_name="/chat")


# -- the budget is a hard cap ---------------------------------------------------------------------
def test_four_concurrent_compares_with_four_yarn_factors_hold_one_model_at_a_time(switching):
    """The issue's attack: four sessions, each comparing four YaRN factors "at the same time", with a
    budget of one model. Each comparison runs one after another (and says why), the sessions queue
    for the slot, every column answers, and memory never holds two models."""
    clients = [switching.client() for _ in range(4)]
    jobs = [compare_job(client, [("tiny-bf16", factor) for factor in FACTORS]) for client in clients]
    finals = [job.result(timeout=240) for job in jobs]
    for job, final in zip(jobs, finals):
        columns, status = final[:4], final[7]
        assert [answers(column["value"]) for column in columns] == [[ADD_ANSWER]] * 4
        assert status.startswith("Done in") and "failed" not in status
        streamed = [output[7] for output in job.outputs()]
        assert any("one after another: at the same time they would hold 4 models in memory and this playground "
                   "keeps at most 1" in s for s in streamed), streamed[:2]
    assert {factor for _, factor in switching.census.loaded} == set(FACTORS)
    assert switching.census.peak == 1 and switching.pool.peak == 1
    assert switching.pool.in_use <= 1


def test_chats_on_four_factors_at_once_queue_for_the_one_slot(switching):
    """Eight chats on four YaRN factors at once: each waits for the slot (no reply is cut, no load
    is refused), and at most one model is ever in memory."""
    clients = [switching.client() for _ in range(8)]
    jobs = [chat_job(client, yarn_factor=FACTORS[i % 4]) for i, client in enumerate(clients)]
    finals = [job.result(timeout=240) for job in jobs]
    for final in finals:
        assert answers(final) == [ADD_ANSWER] and not any(title(m) == "Error" for m in final)
    assert switching.census.peak == 1 and switching.pool.peak == 1


def test_a_load_past_a_busy_budget_waits_for_the_lease_then_takes_the_slot(tiny_bf16):
    """With every slot leased (a reply streaming), a load waits, saying so, instead of loading beside
    it; once the lease ends, the idle model is unloaded first, then the new one loads."""
    from backends.pool import ModelPool
    from playground import Playground

    census = Census()
    playground = Playground(AppConfig(max_models=1), ModelPool(max_models=1, factory=census.factory))
    one = playground.resolve("tiny-bf16")
    waiting = threading.Event()
    messages: list[str] = []

    def progress(fraction: float, message: str) -> None:
        messages.append(message)
        if message.startswith("Waiting for a free model slot"):
            waiting.set()

    executor = ThreadPoolExecutor(1)
    try:
        with playground.lease(one, playground.load_options(one, 1.0)) as busy:
            later = executor.submit(playground.load, "tiny-fp8", 1.0, progress)
            assert waiting.wait(60), messages
            assert census.live == 1 and busy.loaded and not later.done()  # nothing loads beside it
        fp8 = later.result(timeout=120)
    finally:
        executor.shutdown(wait=True)
    assert "Waiting for a free model slot (all 1 busy with replies)" in messages
    assert fp8.loaded and not busy.loaded and census.unloads == 1
    assert census.loaded == [("tiny-bf16", 1.0), ("tiny-fp8", 1.0)] and census.peak == 1
    playground.pool.unload_all()


def test_a_load_that_waits_too_long_is_refused_clearly(tiny_bf16):
    from backends.pool import ModelPool
    from playground import Playground

    census = Census()
    playground = Playground(AppConfig(max_models=1), ModelPool(max_models=1, factory=census.factory, wait_s=0.5))
    one = playground.resolve("tiny-bf16")
    with playground.lease(one, playground.load_options(one, 1.0)) as busy:
        with pytest.raises(ModelSlotsBusy) as refused:
            playground.load("tiny-bf16", 2.0)
        assert str(refused.value) == ("every model slot of this playground (1) is busy with replies still running; "
                                      "waited 0.5 s: try again when they end")
        assert busy.loaded and census.live == 1
    assert census.loaded == [("tiny-bf16", 1.0)] and census.peak == 1
    assert playground.load("tiny-bf16", 2.0).loaded  # the slot is free again: the idle model makes room
    assert census.peak == 1
    playground.pool.unload_all()


def test_stop_ends_a_wait_for_a_model_slot_and_nothing_loads(tiny_bf16):
    """Stop while every slot is busy: the reply waiting for one ends at once instead of waiting
    out the 300 s and then loading a model for a reply nobody waits for."""
    import threading

    from backends.pool import ModelPool
    from playground import Playground

    census = Census()
    playground = Playground(AppConfig(max_models=1), ModelPool(max_models=1, factory=census.factory))
    one = playground.resolve("tiny-bf16")
    request = playground.request([{"role": "user", "content": "hi"}], model="tiny-bf16", yarn_factor=2.0)
    stop, waiting, outcome = threading.Event(), threading.Event(), {}

    def progress(fraction, text):
        if text.startswith("Waiting for a free model slot"):
            waiting.set()

    def reply():
        try:
            list(playground.chat(request, progress, stop))
        except ModelSlotsBusy as exc:
            outcome["error"] = str(exc)

    with playground.lease(one, playground.load_options(one, 1.0)):
        worker = threading.Thread(target=reply)
        worker.start()
        assert waiting.wait(30), "the reply never waited for a slot"
        stop.set()
        worker.join(10)
        assert not worker.is_alive(), "Stop did not end the wait"
    assert outcome == {"error": "stopped while waiting for a free model slot"}
    assert census.loaded == [("tiny-bf16", 1.0)]  # the YaRN x2 model never loaded
    playground.pool.unload_all()


# -- the shared model is the host's --------------------------------------------------------------
def test_visitors_cannot_switch_the_shared_model_on_the_named_api(pinned):
    """The default hosted playground serves its host's model: another model or YaRN factor is
    refused with one message on every endpoint, nothing else loads, the shared model stays."""
    from gradio_client.exceptions import AppError

    client = pinned.client()
    for model, factor in (("tiny-fp8", 1.0), ("tiny-bf16", 2.0), ("tiny-gguf-q4_k_m", 1.0)):
        kept_model, kept_factor, status, _ = client.predict(model, factor, api_name="/load_model")
        assert (kept_model, kept_factor) == ("tiny-bf16", 1.0)
        assert f"**Could not load** `{model}`: {SWITCH_REFUSED}" in status and "Still using `tiny-bf16` (it stays loaded)" in status
    final = chat_job(client, model="tiny-fp8").result(timeout=120)
    assert title(final[-1]) == "Error" and SWITCH_REFUSED in text(final[-1])
    final = chat_job(client, yarn_factor=4.0).result(timeout=120)
    assert title(final[-1]) == "Error" and SWITCH_REFUSED in text(final[-1])
    with pytest.raises(AppError, match="only the host of this playground can switch its model"):
        client.predict(message=ADD_Q, history=[], system_prompt="", thinking=False, seed=0, max_new_tokens=60,
                       model="tiny-fp8", yarn_factor=1.0, api_name="/chat_json")
    final = compare_job(client, [("tiny-bf16", 1.0), ("tiny-fp8", 1.0), ("tiny-bf16", 2.0)]).result(timeout=120)
    columns = [column["value"] for column in final[:3]]
    assert answers(columns[0]) == [ADD_ANSWER]
    for column in columns[1:]:
        assert title(column[-1]) == "Error" and SWITCH_REFUSED in text(column[-1])
    scored = client.predict("tiny-bf16", 1.0, "tiny-fp8", 1.0, "", 1.0, "", 1.0, "tiny-script", "",
                            api_name="/compare_perplexity")
    table = dict(zip(scored[4]["headers"], scored[4]["data"][1]))
    assert SWITCH_REFUSED in json.dumps(table)
    drifted = client.predict("tiny-bf16", 1.0, "tiny-fp8", 1.0, "", 1.0, "", 1.0, "tiny-script", "",
                             api_name="/compare_drift")  # the same rules for the drift score
    rows = [dict(zip(drifted[4]["headers"], row)) for row in drifted[4]["data"]]
    assert rows[0]["KLD mean"] == "0.0" and SWITCH_REFUSED in json.dumps(rows[1])
    # the host's model answers as before, and it was never unloaded
    assert answers(chat_job(client).result(timeout=120)) == [ADD_ANSWER]
    assert pinned.census.loaded == [("tiny-bf16", 1.0)] and pinned.census.unloads == 0


def test_visitors_cannot_switch_it_through_private_events_either(pinned):
    """The page-load event and the YaRN slider's reload are private, yet a visitor can send them:
    the same rules, the same message, and the page-load event has a concurrency limit."""
    status, info, model, current = pinned.send_private("on_page_load", ["tiny-fp8", 1.0])
    assert status == f"**Could not load** `tiny-fp8`: {SWITCH_REFUSED}"
    outputs = pinned.send_private("load_model", ["tiny-bf16", 4.0, None])
    assert outputs[:2] == ["tiny-bf16", 1.0] and f"**Could not load** `tiny-bf16`: {SWITCH_REFUSED}" in outputs[3]
    page_load = pinned.private_fn("on_page_load")
    limit = page_load.concurrency_limit
    limit = pinned.demo._queue.default_concurrency_limit if limit == "default" else limit
    assert limit == 4  # conftest.launch_in_process's default: a number, never unlimited
    unlimited = [fn.name for fn in pinned.demo.fns.values() if fn.queue and fn.fn and fn.concurrency_limit is None]
    assert unlimited == []
    assert pinned.census.loaded == [("tiny-bf16", 1.0)] and pinned.census.unloads == 0


def test_the_pinned_picker_offers_the_hosts_model_and_no_yarn_slider(pinned):
    by_id = {getattr(block, "elem_id", None): block for block in pinned.demo.blocks.values()}
    assert by_id["model-choice"].choices == [("tiny-bf16 — bf16, ~1M", "tiny-bf16")]
    assert by_id["model-choice"].label == "Model (chosen by this playground's host)"
    assert by_id["yarn"].interactive is False and by_id["yarn"].info == "Set by this playground's host."
    compare_pickers = [by_id[f"compare-model-{i}"] for i in range(1, 5)]
    assert all(p.choices == [("tiny-bf16 — bf16, ~1M", "tiny-bf16")] for p in compare_pickers)


# -- only models the machine can hold --------------------------------------------------------------
@pytest.fixture()
def cpu_only(monkeypatch):
    """The measured memory as on a CPU machine (no native FP8), whatever this one has."""
    import playground.service
    from core.memory import HostMemory

    monkeypatch.setattr(playground.service, "free_memory", lambda: HostMemory(16 * 10**9, "RAM"))


def test_the_hosted_picker_offers_only_models_the_machine_can_hold(cpu_only, tiny_bf16):
    """2 GB for models (the host's QWEN3_PLAYGROUND_MEMORY_GB, standing in for the measured free
    memory): the picker drops what does not fit, from the catalog's sizes, before any download; a
    visitor asking for one anyway is refused with the figures, and no backend is even created."""
    config = AppConfig.from_env({"QWEN3_PLAYGROUND_HOSTED": "1", "QWEN3_PLAYGROUND_VISITORS_SWITCH_MODELS": "1",
                                 "QWEN3_PLAYGROUND_MEMORY_GB": "2"})
    app = App(config)
    try:
        offered = [value for _, value in app.playground.catalog_choices()]
        tiny = [spec.name for spec in app.playground.catalog if spec.is_tiny]
        assert offered == [*tiny, "qwen3-0.6b", "qwen3-0.6b-gptq-int8", "qwen3-0.6b-gguf-q8_0"]  # 0.8-1.8 GB
        assert "qwen3-0.6b-fp8" not in offered  # 0.9 GB of FP8 is dequantized to bf16 on a CPU: 2.2 GB
        by_id = {getattr(block, "elem_id", None): block for block in app.demo.blocks.values()}
        assert [value for _, value in by_id["model-choice"].choices] == offered
        client = app.client()
        _, _, status, _ = client.predict("qwen3-235b-a22b-gptq-int4", 1.0, api_name="/load_model")
        assert ("qwen3-235b-a22b-gptq-int4 is too big for this playground: it needs about 150.0 GB of memory and "
                "this playground has 2.0 GB for models") in status
        final = chat_job(client, model="qwen3-4b").result(timeout=120)
        assert title(final[-1]) == "Error" and text(final[-1]).endswith(
            "qwen3-4b is too big for this playground: it needs about 9.7 GB of memory and this playground has 2.0 GB "
            "for models")
        assert app.census.loaded == [] and app.pool.loaded() == []  # no backend made, nothing downloaded
        assert answers(chat_job(client, model="tiny-fp8").result(timeout=120)) == [ADD_ANSWER]  # what fits loads
    finally:
        app.close()


def test_the_share_per_model_follows_the_budget(cpu_only):
    from playground import Playground

    playground = Playground(AppConfig(hosted=True, max_models=2, visitors_switch_models=True, memory_gb=2.0))
    playground.start_up("tiny-bf16")
    assert "qwen3-0.6b" not in [value for _, value in playground.catalog_choices()]  # 1.8 GB > 1 GB per model
    with pytest.raises(ModelNotServed) as refused:
        playground.load("qwen3-0.6b")
    assert str(refused.value) == ("qwen3-0.6b is too big for this playground: it needs about 1.8 GB of memory and "
                                  "this playground has 1.0 GB per model (2.0 GB for 2 models)")


def test_the_hosts_own_model_is_served_whatever_the_estimate(cpu_only, tiny_bf16):
    """The estimate keeps visitors off big models; the model the host pinned is its own call."""
    from backends.pool import ModelPool
    from playground import Playground

    census = Census()
    playground = Playground(AppConfig(hosted=True, visitors_switch_models=True, memory_gb=0.000001),
                            ModelPool(factory=census.factory))
    playground.start_up("tiny-bf16")
    assert [value for _, value in playground.catalog_choices()] == ["tiny-bf16"]
    assert playground.load("tiny-bf16").loaded
    with pytest.raises(ModelNotServed, match="tiny-fp8 is too big for this playground"):
        playground.load("tiny-fp8")
    with pytest.raises(ModelNotServed, match="tiny-bf16 is too big"):  # another factor is another load
        playground.load("tiny-bf16", 2.0)
    assert census.loaded == [("tiny-bf16", 1.0)]
    playground.pool.unload_all()


def test_the_host_settings_from_the_environment():
    space = AppConfig.from_env({"SPACE_ID": "me/space"})
    assert space.hosted and not space.visitors_may_switch and space.memory_gb is None
    assert AppConfig.from_env({}).visitors_may_switch  # on one's own machine, one switches freely
    assert AppConfig.from_env({"SPACE_ID": "me/space", "QWEN3_PLAYGROUND_VISITORS_SWITCH_MODELS": "1"}).visitors_may_switch
    assert not AppConfig.from_env({"QWEN3_PLAYGROUND_VISITORS_SWITCH_MODELS": "0"}).visitors_may_switch
    assert AppConfig.from_env({"QWEN3_PLAYGROUND_MEMORY_GB": "24.5"}).memory_gb == 24.5
    for name, value, words in (("VISITORS_SWITCH_MODELS", "maybe", "must be 1 or 0"),
                               ("MEMORY_GB", "-3", "must be more than 0 GB"),
                               ("MEMORY_GB", "nan", "must be more than 0 GB"),
                               ("MEMORY_GB", "lots", "must be a number of GB")):
        with pytest.raises(InvalidSettings, match=words):
            AppConfig.from_env({f"QWEN3_PLAYGROUND_{name}": value})
