"""Hugging Face Spaces: the README's front matter, ZeroGPU's ``spaces.GPU`` (sized from max new
tokens, a no-op elsewhere, never a hard dependency), and a fast start-up (the UI is served before
any model library is imported; the start model loads in the background with its progress shown).
"""
from __future__ import annotations

import argparse
import math
import pickle
import re
import subprocess
import sys
import time
import types
import urllib.request
from pathlib import Path

import pytest

from backends.base import Backend, LoadOptions, ModelInfo
from core.errors import ModelLoadError
from core.events import GenerationStats, RawDelta
from playground import zerogpu

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "llama_cpp", "gptqmodel", "spaces")


# -- README front matter ----------------------------------------------------------------------
def front_matter() -> dict[str, str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n"), "the Spaces front matter must open the README"
    block = text[4:text.index("\n---\n", 4)]
    return dict(line.split(": ", 1) for line in block.splitlines() if line.strip())


def test_readme_front_matter_is_a_valid_spaces_config():
    meta = front_matter()
    requirements = (ROOT / "requirements.txt").read_text()
    gradio_pin = re.search(r"^gradio==([\d.]+)", requirements, re.M).group(1)
    assert meta["sdk"] == "gradio" and meta["sdk_version"] == gradio_pin
    assert meta["app_file"] == "app.py" and (ROOT / meta["app_file"]).is_file()
    assert meta["license"] == "apache-2.0"
    assert meta["title"] and meta["emoji"] and meta["colorFrom"] and meta["colorTo"]
    colors = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}
    assert meta["colorFrom"] in colors and meta["colorTo"] in colors
    assert 0 < len(meta["short_description"]) <= 60


# -- ZeroGPU ----------------------------------------------------------------------------------
def reply(max_new_tokens: int = 100):
    yield max_new_tokens


def test_gpu_is_the_function_itself_outside_zerogpu(monkeypatch):
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    monkeypatch.setitem(sys.modules, "spaces", None)  # importing it would fail: it is never tried
    assert zerogpu.gpu(reply) is reply
    assert not zerogpu.on_zerogpu()


@pytest.fixture()
def real_spaces(monkeypatch):
    """The real ``spaces`` package (requirements-test.txt), as imported anywhere but on ZeroGPU
    hardware: its own check (``SPACES_ZERO_GPU`` at import) says "not ZeroGPU", so its
    ``spaces.GPU`` hands the function back and it runs directly."""
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    import spaces
    from spaces.config import Config

    assert not Config.zero_gpu
    return spaces


def test_the_spaces_package_is_a_no_op_outside_zerogpu(real_spaces):
    assert real_spaces.GPU(reply, duration=lambda *a, **k: 60) is reply
    assert real_spaces.GPU(duration=60)(reply) is reply
    assert list(real_spaces.GPU(reply, duration=lambda *a, **k: 60)(max_new_tokens=7)) == [7]


def test_duration_is_sized_from_max_new_tokens(monkeypatch):
    monkeypatch.delenv(zerogpu.ENV_MAX_S, raising=False)
    monkeypatch.delenv(zerogpu.ENV_TOKENS_PER_S, raising=False)
    assert zerogpu.gpu_duration(10) == zerogpu.MIN_S
    assert zerogpu.gpu_duration(2000) == math.ceil(zerogpu.OVERHEAD_S + 2000 / zerogpu.DEFAULT_TOKENS_PER_S)
    assert zerogpu.gpu_duration(32768) == zerogpu.DEFAULT_MAX_S  # capped
    assert zerogpu.gpu_duration(2000) < zerogpu.gpu_duration(3000)
    env = {zerogpu.ENV_MAX_S: "600", zerogpu.ENV_TOKENS_PER_S: "100"}
    assert zerogpu.gpu_duration(32768, env) == math.ceil(10 + 327.68)
    assert zerogpu.gpu_duration("junk", {zerogpu.ENV_MAX_S: "x"}) == zerogpu.DEFAULT_MAX_S


def answers(history) -> list[str]:
    return [m["content"] for m in history if (m.get("metadata") or {}).get("id", "").startswith("answer:")]


SETTINGS = dict(temperature=0.7, top_p=0.8, top_k=20, min_p=0.0, presence_penalty=0.0, max_new_tokens=3000, seed=0)


def test_with_the_real_spaces_gpu_the_generation_is_decorated_and_streams(monkeypatch, real_spaces, tiny_bf16):
    """``SPACES_ZERO_GPU`` set (as on a ZeroGPU Space): the playground decorates its generation with
    the real ``spaces.GPU`` and a duration that ZeroGPU computes from each call's arguments; outside
    ZeroGPU hardware the decorator runs the generator directly, and the reply streams."""
    import torch

    torch.set_num_threads(1)
    from backends.pool import ModelPool
    from playground import Playground
    from tinymodels.script import ADD_ANSWER, ADD_Q
    from ui.chat_tab import stream_reply
    from ui.formatting import user_message

    decorated, calls = [], []
    real_gpu, generate = real_spaces.GPU, Playground._generate

    def recording_gpu(task=None, **kwargs):
        decorated.append((task, kwargs))
        return real_gpu(task, **kwargs)

    def recording_generate(self, *args, **kwargs):  # the arguments ZeroGPU would hand the duration
        calls.append((args, kwargs))
        yield from generate(self, *args, **kwargs)

    monkeypatch.setattr(real_spaces, "GPU", recording_gpu)
    monkeypatch.setattr(Playground, "_generate", recording_generate)
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    monkeypatch.delenv(zerogpu.ENV_MAX_S, raising=False)
    monkeypatch.delenv(zerogpu.ENV_TOKENS_PER_S, raising=False)
    playground = Playground(pool=ModelPool())
    try:
        [(task, options)] = decorated
        assert task == playground._generate and set(options) == {"duration"}
        assert playground._generate_on_gpu == task  # handed back by the real decorator: runs here, directly
        *_, final = stream_reply(playground, [user_message(ADD_Q)], "", False, SETTINGS, "tiny-bf16", 1.0)
        assert answers(final) == [ADD_ANSWER]
        [(args, kwargs)] = calls
        assert kwargs == {"max_new_tokens": 3000}
        assert options["duration"](*args, **kwargs) == zerogpu.gpu_duration(3000) == 110  # 10 s + 3000 / 30 tokens/s
    finally:
        playground.pool.unload_all()


class FakeSpaces(types.ModuleType):
    """Stands in for the `spaces` package on ZeroGPU hardware, for what needs a GPU slot: the call's
    arguments sent to the GPU worker (pickled: plain data only), one slot per call, and a slot lost
    after ``lose_after`` streamed items (ZeroGPU's own error, from the real package)."""

    def __init__(self, lose_after: int | None = None):
        super().__init__("spaces")
        self.decorated = []
        self.calls = []
        self.lose_after = lose_after

    def GPU(self, task=None, *, duration=None):  # noqa: N802 (the package's name)
        from spaces.zero.gradio import error  # what ZeroGPU raises when a slot ends mid-task

        self.decorated.append((task, duration))

        def wrapper(*args, **kwargs):
            pickle.dumps((args, kwargs))  # ZeroGPU sends them to its GPU worker: plain data only
            self.calls.append(duration(*args, **kwargs))
            for count, item in enumerate(task(*args, **kwargs)):
                if count == self.lose_after:
                    raise error("ZeroGPU worker error", "GPU task aborted")
                yield item

        return wrapper


def on_zerogpu_hardware(monkeypatch, fake: FakeSpaces) -> None:
    import spaces.zero.gradio  # noqa: F401 (the real package's error, imported before the stand-in)

    monkeypatch.setitem(sys.modules, "spaces", fake)
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")


def test_on_zerogpu_a_lost_gpu_slot_keeps_what_streamed_and_says_so(monkeypatch, real_spaces, tiny_bf16):
    import torch

    torch.set_num_threads(1)
    from backends.pool import ModelPool
    from playground import Playground
    from tinymodels.script import ADD_ANSWER, ADD_Q
    from ui.chat_tab import stream_reply
    from ui.formatting import CUT_SHORT, user_message

    fake = FakeSpaces(lose_after=4)  # a few tokens of the answer, then the slot is gone
    on_zerogpu_hardware(monkeypatch, fake)
    playground = Playground(pool=ModelPool())
    try:
        *_, final = stream_reply(playground, [user_message(ADD_Q)], "", False, SETTINGS, "tiny-bf16", 1.0)
        assert fake.calls == [zerogpu.gpu_duration(3000)]
        [partial] = answers(final)
        assert partial and partial != ADD_ANSWER and ADD_ANSWER.startswith(partial)  # what streamed is kept
        error = final[-1]
        assert error["metadata"]["id"].startswith("error:") and "GPU task aborted" in error["content"]
        assert "the GPU slot ended before the reply did" in error["content"] and "lower max_new_tokens" in error["content"]
        assert error["content"].endswith(CUT_SHORT)
    finally:
        playground.pool.unload_all()
    # a hosted Space shows ZeroGPU's own words (a visitor's quota, a lost slot), not an error's type
    from core.config import AppConfig

    hosted = Playground(AppConfig(hosted=True), pool=ModelPool())
    try:
        *_, final = stream_reply(hosted, [user_message(ADD_Q)], "", False, SETTINGS, "tiny-bf16", 1.0)
        assert "ZeroGPU: GPU task aborted (the GPU slot ended before the reply did" in final[-1]["content"]
    finally:
        hosted.pool.unload_all()


def test_on_zerogpu_a_tool_loop_with_stop_sends_plain_data_to_the_gpu(monkeypatch, real_spaces, tiny_bf16):
    """The tools and the stop event stay in the main process (the tool loop runs the calls there);
    the GPU worker gets the request with the tools' specs only."""
    import threading

    import torch

    torch.set_num_threads(1)
    from backends.pool import ModelPool
    from playground import Playground
    from playground.tools.toolbox import FunctionTools, Toolbox
    from tinymodels.script import WEATHER_Q, WEATHER_REPORTS, WEATHER_TOOLS

    fake = FakeSpaces()
    on_zerogpu_hardware(monkeypatch, fake)
    playground = Playground(pool=ModelPool())
    weather = FunctionTools("weather", [(WEATHER_TOOLS[0], lambda city: WEATHER_REPORTS[city]),
                                        (WEATHER_TOOLS[1], lambda: "Paris")])
    request = playground.request([{"role": "user", "content": WEATHER_Q}], model="tiny-bf16", toolbox=Toolbox([weather]),
                                 settings={"seed": 7, "max_new_tokens": 300})
    result_events = list(playground.chat(request, stop=threading.Event()))
    answers = "".join(getattr(e, "text", "") for e in result_events if type(e).__name__ == "AnswerDelta")
    assert answers == "It is sunny and 21 degrees in Paris."
    assert fake.calls == [zerogpu.gpu_duration(300)] * 2  # one GPU slot per round
    playground.pool.unload_all()


def test_zerogpu_without_the_package_still_runs(monkeypatch, capsys):
    monkeypatch.setenv("SPACES_ZERO_GPU", "1")
    monkeypatch.setitem(sys.modules, "spaces", None)  # "not installed"
    assert zerogpu.gpu(reply) is reply
    assert "`spaces` package is not installed" in capsys.readouterr().err


# -- start-up ---------------------------------------------------------------------------------
def test_the_ui_is_served_before_any_model_library_is_imported():
    """``python app.py``'s path up to a served page, in a fresh interpreter; the model loads after."""
    code = f"""
import sys, urllib.request
import app
assert not [m for m in {HEAVY!r} if m in sys.modules], "import app"
from playground.startup import Warmup
Warmup.start = lambda self: self  # stop right before the background load
from tests.conftest import free_port
from ui.launch import launch
port = free_port()
demo = launch(app.build_parser().parse_args(["ui", "--host", "127.0.0.1", "--port", str(port),
                                             "--model", "tiny-bf16"]), block=False)
assert urllib.request.urlopen(f"http://127.0.0.1:{{port}}/").status == 200
print("heavy:", [m for m in {HEAVY!r} if m in sys.modules])
demo.close()
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=str(ROOT))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "heavy: []" in done.stdout, done.stdout


class SlowBackend(Backend):
    """Loads slowly (a big model's download); fails for sources containing "fp8"."""

    name = "slow"

    def load(self, spec, options=LoadOptions(), progress=None):
        for step in range(4):
            if progress:
                progress(step / 4, f"downloading {spec.name}: part {step + 1} of 4")
            time.sleep(0.3)
        if "fp8" in spec.source:
            raise ModelLoadError(f"{spec.name} is corrupt")
        self.spec, self.options = spec, options

    def describe(self):
        return ModelInfo("slow", self.spec.name, self.spec.source, "bf16", None, "bf16", "cpu", 0, 32768, None)

    def unload(self):
        self.spec = None

    def _generate(self, messages, settings, thinking, stop, tools=None):
        yield RawDelta("ok")
        yield GenerationStats(1, 1, 0.0, None, 0.0, "stop")


def launch_with_slow_model(model: str):
    from backends.pool import ModelPool
    from conftest import free_port
    from ui.launch import launch

    port = free_port()
    args = argparse.Namespace(host="127.0.0.1", port=port, share=False, model=model, hosted=False, max_models=None,
                              concurrency=2)
    started = time.perf_counter()
    demo = launch(args, block=False, pool=ModelPool(factory=lambda name: SlowBackend()))
    return demo, f"http://127.0.0.1:{port}", time.perf_counter() - started


def page_start_steps(demo, model: str) -> list[tuple]:
    from ui.model_panel import make_page_start

    shown: list[tuple[float, str]] = []
    steps = list(make_page_start(demo.playground)(model, 1.0, progress=lambda f, desc="": shown.append((f, desc))))
    return steps, shown


def test_the_start_model_loads_in_the_background_with_progress():
    demo, url, took = launch_with_slow_model("tiny-bf16")
    try:
        warmup = demo.playground.warmup
        assert warmup.running, "launch waited for the model"
        assert urllib.request.urlopen(url).status == 200  # served while the model loads
        steps, shown = page_start_steps(demo, "tiny-bf16")
        assert not warmup.running and warmup.error is None
        loading = [s for s in steps if str(s[0]).startswith("Loading `tiny-bf16` in the background")]
        assert loading and any("downloading tiny-bf16" in s[0] for s in loading)  # the progress, visibly
        assert any("downloading" in desc for _, desc in shown)
        status, info, model, current = steps[-1]
        assert "tiny-bf16 · slow" in info
        assert demo.playground.pool.loaded()
    finally:
        demo.close()


def test_a_start_model_that_fails_in_the_background_falls_back_to_the_tiny_model():
    demo, url, _ = launch_with_slow_model("tiny-fp8")
    try:
        steps, _ = page_start_steps(demo, "tiny-fp8")
        status, info, model, current = steps[-1]
        assert model == "tiny-bf16" and current == ("tiny-bf16", 1.0)  # the session moves to it
        assert "tiny-fp8" in status and "corrupt" in status and "tiny demo model" in status
        assert demo.playground.start.ref == "tiny-bf16"  # and so do later sessions
    finally:
        demo.close()
