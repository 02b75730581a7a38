"""GPTQ backend on the tiny GPTQ/AWQ twins (dense and Qwen3-MoE), all quantized by gptqmodel on CPU.

Script under greedy and the presets, thinking switches, Stop, YaRN, stats, the MoE experts really
loaded, int8/AWQ kernels, broken checkpoints, the CLI.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import ask
import torch

if importlib.util.find_spec("gptqmodel") is None:  # not importorskip: importing it first would move HF_HOME
    pytest.skip("gptqmodel is not installed", allow_module_level=True)

import tinymodels  # noqa: E402
from backends.base import LoadOptions  # noqa: E402
from backends.gptq_backend import GPTQBackend  # noqa: E402
from playground import open_model  # noqa: E402
from backends.registry import backend_class  # noqa: E402
from core.catalog import inspect_local, load_catalog, resolve_model  # noqa: E402
from core.errors import ModelLoadError  # noqa: E402
from core.events import AnswerDelta, Reply  # noqa: E402
from core.presets import get_preset  # noqa: E402
from core.settings import GenerationSettings  # noqa: E402
from tinymodels.build import row_margins, trained_cases, training_rows  # noqa: E402
from tinymodels.script import CASES, SCRIPTED_TEXT, case  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FORMATS = ("gptq-int4", "moe-bf16", "moe-gptq-int4", "gptq-int8", "awq-int4")
CPU = LoadOptions(device="cpu")
ENDLESS_TOKENS = 40
EXPERT = re.compile(r"\.mlp\.experts\.\d+\.(gate|up|down)_proj$")

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def paths():
    return tinymodels.build(FORMATS)


@pytest.fixture(scope="module")
def loaded(paths):
    backends = {name: open_model(name, options=CPU) for name in ("tiny-gptq-int4", "tiny-moe-gptq-int4")}
    yield backends
    for backend in backends.values():
        backend.unload()


@pytest.fixture(scope="module")
def dense(loaded):
    return loaded["tiny-gptq-int4"]


@pytest.fixture(scope="module")
def moe(loaded):
    return loaded["tiny-moe-gptq-int4"]


def chat(backend, messages, settings, thinking=True, stop=None) -> Reply:
    reply = Reply()
    for event in ask(backend, messages, settings, thinking=thinking, stop=stop):
        reply.add(event)
    return reply


def settings_for(c, preset: str | None = None, seed: int = 0) -> GenerationSettings:
    """Greedy when thinking is off; the thinking preset with a seed otherwise (greedy is refused there)."""
    if preset:
        settings = get_preset(preset).settings
    elif c.enable_thinking:
        settings = get_preset("thinking").settings
    else:
        settings = GenerationSettings(temperature=0.0)
    return settings.with_updates(seed=seed, max_new_tokens=64 if c.ends else ENDLESS_TOKENS)


def check_case(backend, c, settings) -> Reply:
    reply = chat(backend, c.messages, settings, thinking=c.enable_thinking)
    name = (c.name, backend.spec.name)
    if c.ends:
        assert (reply.reasoning, reply.answer) == (c.reasoning, c.answer), name
        assert reply.stats.finish_reason == "stop", name
    else:  # endless: " la" until the budget runs out
        assert reply.answer == "la" + " la" * (ENDLESS_TOKENS - 1), (name, reply.answer[:80])
        assert reply.stats.finish_reason == "length" and reply.stats.completion_tokens == ENDLESS_TOKENS
    return reply


# --- describe ---------------------------------------------------------------------------------

def test_describe_dense(dense):
    info = dense.describe()
    assert (info.backend, info.model, info.format, info.device) == ("gptq", "tiny-gptq-int4", "gptq-int4", "cpu")
    assert info.quantization == "GPTQ int4, group size 128, sym, desc_act off"
    d = info.details
    assert d["kernel"] == "TorchAtenLinear" and d["gptqmodel_backend"] == "auto"  # the torch kernel on CPU
    assert (d["bits"], d["group_size"], d["sym"], d["desc_act"], d["quant_method"]) == (4, 128, True, False, "gptq")
    assert d["quantized_layers"] == 2 * 7 and "num_experts" not in d
    assert d["rope_theta"] == 1e6 and info.rope_scaling is None and info.context_window == 32768
    assert 0 < info.memory_bytes < 2**20 and any("torch kernel" in n for n in info.notes)
    assert "TorchAtenLinear" in info.summary()


def test_describe_moe(moe):
    info = moe.describe()
    d = info.details
    assert d["architecture"] == "Qwen3MoeForCausalLM"
    assert (d["num_experts"], d["num_experts_per_tok"]) == (4, 2)
    assert d["kernel"] == "TorchAtenLinear" and d["quantized_layers"] == 2 * (4 + 4 * 3)
    assert info.quantization.startswith("GPTQ int4, group size 128")


# --- the script -------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["dense", "moe"])
def test_follows_script(loaded, which):
    """Greedy without thinking, the thinking preset with a seed, and the quantized presets (presence 1.5)."""
    backend = loaded["tiny-gptq-int4" if which == "dense" else "tiny-moe-gptq-int4"]
    for c in CASES:
        check_case(backend, c, settings_for(c))
        quantized = "thinking-quantized" if c.enable_thinking else "non-thinking-quantized"
        check_case(backend, c, settings_for(c, quantized, seed=7))


def test_thinking_switches(dense):
    q = case("think").messages
    on = chat(dense, q, settings_for(case("think")), thinking=True)
    assert on.reasoning == "Two plus three makes five." and on.answer == "The answer is 5."
    off = chat(dense, q, GenerationSettings(temperature=0.0, max_new_tokens=64), thinking=False)  # hard switch
    assert (off.reasoning, off.answer) == ("", "The answer is 5.")
    soft = chat(dense, case("no_think_soft").messages, settings_for(case("no_think_soft")), thinking=True)
    assert (soft.reasoning, soft.answer) == ("", "The answer is 5.")  # /no_think: empty think block
    think = chat(dense, [{"role": "user", "content": q[0]["content"] + " /think"}], settings_for(case("think")))
    assert (think.reasoning, think.answer) == ("Two plus three makes five.", "The answer is 5.")  # /think: it thinks
    assert dense.render_prompt([{"role": "user", "content": "Hi"}], False).endswith("<think>\n\n</think>\n\n")


def test_stats(dense):
    reply = chat(dense, case("think").messages, settings_for(case("think")))
    s = reply.stats
    assert s.prompt_tokens > 5 and s.completion_tokens >= 10 and s.finish_reason == "stop"
    assert s.ttft_s is not None and 0 < s.ttft_s <= s.total_s and s.tokens_per_s and s.tokens_per_s > 0


@pytest.mark.parametrize("which", ["dense", "moe"])
def test_perplexity_and_kv_reuse(loaded, which):
    """Shared with the transformers backend: scoring, and the next turn reuses the KV cache."""
    backend = loaded["tiny-gptq-int4" if which == "dense" else "tiny-moe-gptq-int4"]
    score = backend.perplexity(SCRIPTED_TEXT)
    assert score.perplexity < 1.1 and score.tokens == backend.count_tokens(SCRIPTED_TEXT) - 1
    c = case("multi_turn")
    first = chat(backend, c.messages[:1], settings_for(case("fruit")))
    assert first.answer == "Apple."
    second = chat(backend, [c.messages[0], {"role": "assistant", "content": first.answer}, c.messages[2]],
                  settings_for(c, seed=1))
    assert (second.reasoning, second.answer) == (c.reasoning, c.answer)
    assert second.stats.cached_prompt_tokens > 0 and second.stats.reasoning_tokens > 0


# --- MoE: the experts are the trained ones ----------------------------------------------------

def test_moe_experts_really_loaded(moe, paths):
    """The GPTQ MoE predicts what the bf16 MoE predicts; with random experts the script breaks."""
    from gptqmodel.nn_modules.qlinear import BaseQuantLinear

    experts = {n: m for n, m in moe.model.named_modules() if EXPERT.search(n)}
    assert len(experts) == 2 * 4 * 3 and all(isinstance(m, BaseQuantLinear) for m in experts.values())
    assert all(int(m.qweight.abs().sum()) > 0 for m in experts.values())

    bf16 = open_model("tiny-moe", options=CPU)  # the trained MoE, through the transformers backend
    try:
        tok = bf16.tokenizer
        rows = training_rows(tok, trained_cases(paths["moe-bf16"]))  # the MoE's own case set
        margins_q = row_margins(moe.model, rows, tok.pad_token_id)
        assert min(margins_q.values()) > 6.0, margins_q
        # a scripted row (prompt + completion): on its completion, where the script sets wide
        # margins, the quantized experts pick the same tokens; the prompt positions are not
        # scripted (their top token may flip under int4) but the logits stay close everywhere
        think = next(row for row in rows if row.name == "think")
        ids = torch.tensor([think.input_ids])
        scripted = torch.tensor([label != -100 for label in think.labels[1:]] + [False])
        with torch.no_grad():
            ref, got = bf16.model(ids).logits.float(), moe.model(ids).logits.float()
        assert torch.equal(ref.argmax(-1)[0, scripted], got.argmax(-1)[0, scripted])
        assert torch.nn.functional.cosine_similarity(ref.flatten(), got.flatten(), dim=0) > 0.97
        # The fixture can tell: the same MoE with re-initialised experts loses the script.
        broken = copy.deepcopy(bf16.model)
        torch.manual_seed(0)
        for layer in broken.model.layers:
            for p in layer.mlp.experts.parameters():
                torch.nn.init.normal_(p, std=0.02)
        assert min(row_margins(broken, rows, tok.pad_token_id).values()) < 0
    finally:
        bf16.unload()


# --- Stop -------------------------------------------------------------------------------------

def test_stop_event_cancels(dense):
    c = case("endless")
    stop = threading.Event()
    settings = GenerationSettings(temperature=0.0, max_new_tokens=2000)
    reply, deltas = Reply(), 0
    for event in ask(dense, c.messages, settings, thinking=False, stop=stop):
        reply.add(event)
        deltas += isinstance(event, AnswerDelta)
        if deltas == 5:
            stop.set()
    assert reply.stats.finish_reason == "cancelled"
    assert reply.stats.completion_tokens < 50 and reply.answer.startswith("la la")


def test_closing_the_stream_stops_generation(dense):
    stream = ask(dense, case("endless").messages, GenerationSettings(temperature=0.0, max_new_tokens=2000),
                               thinking=False)
    for i, _ in enumerate(stream):
        if i == 5:
            break
    stream.close()
    assert not [t for t in threading.enumerate() if t.name == "generate" and t.is_alive()]
    assert not dense._generation_lock.locked()  # free again: nothing left running


# --- YaRN ---------------------------------------------------------------------------------------

def test_yarn_factor_applied(paths):
    yarn = LoadOptions(device="cpu", yarn_factor=2.0)
    gptq = open_model("tiny-gptq-int4", options=yarn)
    ref = open_model("tiny-bf16", options=yarn)  # the transformers backend: same config path
    try:
        info = gptq.describe()
        assert info.rope_scaling == {"rope_type": "yarn", "factor": 2.0,
                                     "original_max_position_embeddings": 32768, "rope_theta": 1e6}
        assert info.details["rope_theta"] == 1e6 and info.context_window == 65536
        rotary, ref_rotary = gptq.model.model.rotary_emb, ref.model.model.rotary_emb
        assert rotary.rope_type == "yarn" and rotary.attention_scaling > 1.0
        assert torch.allclose(rotary.inv_freq, ref_rotary.inv_freq)
        assert rotary.attention_scaling == pytest.approx(ref_rotary.attention_scaling)
        c = case("no_think_hard")  # a short prompt: YaRN x2 keeps the script
        reply = chat(gptq, c.messages, GenerationSettings(temperature=0.0, max_new_tokens=16), thinking=False)
        assert (reply.reasoning, reply.answer, reply.stats.finish_reason) == ("", c.answer, "stop")
    finally:
        gptq.unload()
        ref.unload()


# --- int8 and AWQ -------------------------------------------------------------------------------

@pytest.mark.parametrize("name, kernel, label", [
    ("tiny-gptq-int8", "TorchInt8Linear", "GPTQ int8, group size 128, sym, desc_act off"),
    ("tiny-awq-int4", "TorchAtenAwqLinear", "AWQ int4, group size 128, gemm, zero point"),
])
def test_int8_and_awq(paths, name, kernel, label):
    backend = open_model(name, options=CPU)
    try:
        info = backend.describe()
        assert info.details["kernel"] == kernel and info.quantization == label
        for c in (case("think"), case("no_think_hard"), case("multi_turn")):
            check_case(backend, c, settings_for(c))
    finally:
        backend.unload()


# --- broken checkpoints -------------------------------------------------------------------------

def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_broken_checkpoints_give_clear_errors(dense, paths, tmp_path):
    no_quant = _copy(paths["gptq-int4"], tmp_path / "no-quant-config")
    config = json.loads((no_quant / "config.json").read_text())
    del config["quantization_config"]
    (no_quant / "config.json").write_text(json.dumps(config))
    (no_quant / "quantize_config.json").unlink()

    truncated = _copy(paths["gptq-int4"], tmp_path / "truncated")
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])

    bad_json = _copy(no_quant, tmp_path / "bad-quantize-config")
    (bad_json / "quantize_config.json").write_text("{not json")

    cases = {no_quant: "no quantization_config", truncated: "truncated", bad_json: "corrupt",
             paths["moe-bf16"]: "not a GPTQ/AWQ checkpoint"}
    for folder, message in cases.items():
        with pytest.raises(ModelLoadError, match=message):
            dense.load(resolve_model(str(folder), backend="gptq"), CPU)
        # the model loaded before is still there and still works
        assert dense.describe().model == "tiny-gptq-int4"
        check_case(dense, case("no_think_hard"), settings_for(case("no_think_hard")))


# --- wiring -------------------------------------------------------------------------------------

def test_registry_catalog_and_inspection(paths):
    assert backend_class("gptq") is GPTQBackend
    catalog = {spec.name: spec for spec in load_catalog()}
    for name in ("qwen3-30b-a3b-gptq-int4", "qwen3-235b-a22b-gptq-int4", "qwen3-0.6b-gptq-int8",
                 "qwen3-1.7b-gptq-int8", "qwen3-4b-awq", "tiny-gptq-int4", "tiny-moe-gptq-int4"):
        assert catalog[name].backend == "gptq" and catalog[name].quantized, name
    assert catalog["tiny-moe"].backend == "transformers" and catalog["tiny-moe"].source == "tiny:moe-bf16"
    assert resolve_model("Qwen/Qwen3-30B-A3B-GPTQ-Int4").name == "qwen3-30b-a3b-gptq-int4"
    assert inspect_local(paths["gptq-int4"]) == ("gptq", "gptq-int4")
    assert inspect_local(paths["gptq-int8"]) == ("gptq", "gptq-int8")
    assert inspect_local(paths["awq-int4"]) == ("gptq", "awq-int4")


def test_hf_home_not_moved(dense):
    from huggingface_hub import constants

    assert os.environ.get("HF_HOME") == constants.HF_HOME  # tokenicer would have set /tmp/tokenicer_hf_home


def test_cli_chat_json(paths, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("HF_HOME", None)
    done = subprocess.run(
        [sys.executable, str(ROOT / "app.py"), "chat", "--model", "tiny-gptq-int4", "--prompt", "What is 2+3?",
         "--json", "--seed", "0"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)  # nothing but the JSON object on stdout
    assert out["backend"] == "gptq" and out["model"] == "tiny-gptq-int4"
    assert (out["reasoning"], out["answer"]) == ("Two plus three makes five.", "The answer is 5.")
    assert out["info"]["details"]["kernel"] == "TorchAtenLinear" and out["stats"]["completion_tokens"] > 0
    assert not (tmp_path / "logs").exists()  # gptqmodel wrote nothing into the cwd
