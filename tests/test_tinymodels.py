"""The tiny models follow the script in every format, under greedy decoding and Qwen's presets."""

from __future__ import annotations

import json
import time

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor, LogitsProcessorList

import tinymodels
from tinymodels.build import render_prompt
from tinymodels.fp8 import QUANTIZATION_CONFIG, QUANTIZED_WEIGHT, dequantize_block_fp8
from tinymodels.registry import FORMATS, resolve
from tinymodels.script import CASES, LEAKED_HISTORY_CASE, SCRIPTED_TEXT, ScriptedCase

torch.set_num_threads(1)  # steadier than 2 threads on a busy 2-core machine

FORMATS_UNDER_TEST = ("bf16", "fp8")
PRESETS = {
    "greedy": dict(do_sample=False),
    "thinking": dict(do_sample=True, temperature=0.6, top_p=0.95, top_k=20),
    "non_thinking": dict(do_sample=True, temperature=0.7, top_p=0.8, top_k=20),
}
ENDLESS_NEW_TOKENS = 200  # beyond the 160 trained repeats: it must keep going


class PresencePenalty(LogitsProcessor):
    """OpenAI-style presence penalty on the generated tokens (transformers has none)."""

    def __init__(self, penalty: float, prompt_len: int):
        self.penalty, self.prompt_len = penalty, prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for i in range(input_ids.shape[0]):
            scores[i, torch.unique(input_ids[i, self.prompt_len:])] -= self.penalty
        return scores


@pytest.fixture(scope="module")
def paths():
    return tinymodels.build(FORMATS_UNDER_TEST)


@pytest.fixture(scope="module")
def loaded(paths):
    out = {}
    for fmt in FORMATS_UNDER_TEST:
        tok = AutoTokenizer.from_pretrained(paths[fmt])
        model = AutoModelForCausalLM.from_pretrained(paths[fmt]).eval()
        out[fmt] = (tok, model)
    return out


def generate(tok, model, case: ScriptedCase, preset: str, presence: float = 0.0, seed: int = 0):
    prompt = render_prompt(tok, case)  # as the builder trained it (and the backends render it)
    enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
    n = enc["input_ids"].shape[1]
    torch.manual_seed(seed)
    processors = LogitsProcessorList([PresencePenalty(presence, n)]) if presence else None
    max_new = ENDLESS_NEW_TOKENS if not case.ends else 64
    out = model.generate(**enc, max_new_tokens=max_new, logits_processor=processors, **PRESETS[preset])
    new = out[0, n:]
    return tok.decode(new, skip_special_tokens=True), new[-1].item() == tok.eos_token_id


def expected_text(case: ScriptedCase) -> str:
    if case.think_block == "full":
        return f"<think>\n{case.reasoning}\n</think>\n\n{case.answer}"
    if case.think_block == "empty_think":
        return f"<think>\n\n</think>\n\n{case.answer}"
    return case.answer


def check_case(tok, model, case: ScriptedCase, preset: str, presence: float = 0.0, seed: int = 0) -> None:
    text, stopped = generate(tok, model, case, preset, presence, seed)
    if case.ends:
        assert text == expected_text(case), (case.name, preset, presence)
        assert stopped, f"{case.name}: no <|im_end|>"
    else:
        assert text == "la" + " la" * (ENDLESS_NEW_TOKENS - 1), (case.name, preset, text[:80])
        assert not stopped


# --- script -------------------------------------------------------------------------------

def test_script_cases():
    names = {c.name for c in CASES}
    assert {"think", "no_think_hard", "no_think_soft", "multi_turn", "another", "endless"} <= names
    assert LEAKED_HISTORY_CASE.name not in names
    by = {c.name: c for c in CASES}
    assert by["think"].completion == "<think>\nTwo plus three makes five.\n</think>\n\nThe answer is 5."
    assert by["no_think_hard"].completion == "The answer is 5." and not by["no_think_hard"].enable_thinking
    assert by["no_think_soft"].completion == "<think>\n\n</think>\n\nThe answer is 5."
    assert by["no_think_soft"].messages[-1]["content"].endswith("/no_think")
    assert "<think>" not in by["multi_turn"].messages[1]["content"]
    assert "<think>" in LEAKED_HISTORY_CASE.messages[1]["content"]
    assert by["multi_turn"].answer != LEAKED_HISTORY_CASE.answer
    assert by["another"].answer != by["think"].answer
    assert not by["endless"].ends and not by["endless"].enable_thinking
    assert SCRIPTED_TEXT


# --- tokenizer ----------------------------------------------------------------------------

def test_tokenizer(paths):
    tok = AutoTokenizer.from_pretrained(paths["bf16"])
    assert 400 <= len(tok) <= 600
    for text in ["Hello, world! 2+3=5", "héllo 世界 🙂\n\n  tabs\tand  spaces", SCRIPTED_TEXT]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    think, end_think = tok.convert_tokens_to_ids(["<think>", "</think>"])
    ids = tok("<think>\nhi\n</think>\n\nok<|im_end|>", add_special_tokens=False)["input_ids"]
    assert think in ids and end_think in ids
    assert tok.decode(ids, skip_special_tokens=True) == "<think>\nhi\n</think>\n\nok"
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    for special in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1
    msgs = [{"role": "user", "content": "Hi"}]
    off = tok.apply_chat_template(msgs, add_generation_prompt=True, enable_thinking=False, tokenize=False)
    on = tok.apply_chat_template(msgs, add_generation_prompt=True, enable_thinking=True, tokenize=False)
    assert on == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert off == on + "<think>\n\n</think>\n\n"
    tok_json = json.loads((paths["bf16"] / "tokenizer.json").read_text())
    assert tok_json["model"]["type"] == "BPE" and tok_json["model"]["merges"]


# --- checkpoints --------------------------------------------------------------------------

def test_bf16_config(paths):
    cfg = json.loads((paths["bf16"] / "config.json").read_text())
    assert cfg["model_type"] == "qwen3" and cfg["hidden_size"] % 128 == 0
    assert cfg["head_dim"] == 32 and cfg["num_attention_heads"] == 4 and cfg["num_key_value_heads"] == 2
    assert cfg["rope_parameters"]["rope_theta"] == 1e6 and cfg["tie_word_embeddings"] is False
    tok = AutoTokenizer.from_pretrained(paths["bf16"])
    assert cfg["vocab_size"] == len(tok)
    gen = json.loads((paths["bf16"] / "generation_config.json").read_text())
    assert gen["eos_token_id"] == tok.convert_tokens_to_ids("<|im_end|>")
    assert gen["pad_token_id"] == tok.pad_token_id
    assert gen["do_sample"] is True and gen["temperature"] == 0.6 and gen["top_p"] == 0.95 and gen["top_k"] == 20
    with safe_open(str(paths["bf16"] / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}


def test_fp8_checkpoint(paths):
    cfg = json.loads((paths["fp8"] / "config.json").read_text())
    assert cfg["quantization_config"] == QUANTIZATION_CONFIG
    with safe_open(str(paths["bf16"] / "model.safetensors"), "pt") as f:
        ref = {k: f.get_tensor(k) for k in f.keys()}
    with safe_open(str(paths["fp8"] / "model.safetensors"), "pt") as f:
        got = {k: f.get_tensor(k) for k in f.keys()}
    quantized = [k for k in ref if QUANTIZED_WEIGHT.match(k)]
    assert len(quantized) == 7 * cfg["num_hidden_layers"]
    for k in quantized:
        w, s = got[k], got[k + "_scale_inv"]
        assert w.dtype == torch.float8_e4m3fn and s.dtype == torch.float32
        assert k.endswith(".weight") and (k + "_scale_inv").endswith("weight_scale_inv")
        assert s.shape == (-(-w.shape[0] // 128), -(-w.shape[1] // 128))
        deq, orig = dequantize_block_fp8(w, s), ref[k].float()
        assert (deq - orig).abs().max() <= 0.07 * orig.abs().max()
    for k in ref:
        if not QUANTIZED_WEIGHT.match(k):  # embeddings, norms, lm_head
            assert got[k].dtype == torch.bfloat16 and torch.equal(got[k], ref[k]), k
    assert "lm_head.weight" in got and "model.embed_tokens.weight" in got


# --- behaviour ----------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS_UNDER_TEST)
@pytest.mark.parametrize("preset", ["greedy", "thinking"])
def test_follows_script(loaded, fmt, preset):
    tok, model = loaded[fmt]
    for case in CASES:
        check_case(tok, model, case, preset)


@pytest.mark.parametrize("fmt", FORMATS_UNDER_TEST)
def test_follows_script_other_presets(loaded, fmt):
    """Non-thinking preset, and both presets with presence_penalty 1.5 (the GPTQ card's advice)."""
    tok, model = loaded[fmt]
    for case in CASES:
        check_case(tok, model, case, "non_thinking", seed=1)
        check_case(tok, model, case, "thinking", presence=1.5, seed=2)
        check_case(tok, model, case, "non_thinking", presence=1.5, seed=3)


@pytest.mark.parametrize("fmt", FORMATS_UNDER_TEST)
def test_leaked_history_changes_answer(loaded, fmt):
    tok, model = loaded[fmt]
    text, stopped = generate(tok, model, LEAKED_HISTORY_CASE, "thinking")
    assert text.endswith("\n</think>\n\nReasoning leaked into the history.") and stopped
    assert text == expected_text(LEAKED_HISTORY_CASE)


def test_fp8_loads_dequantized_on_cpu(loaded, paths):
    _, model = loaded["fp8"]
    # transformers dequantizes FP8 on CPU: plain bf16 Linear weights, quantization_config dropped.
    w = model.model.layers[0].self_attn.q_proj.weight
    assert w.dtype == torch.bfloat16
    info = json.loads((paths["fp8"] / "tiny_build_info.json").read_text())
    assert info["min_margin_fp8"] >= 6 and info["min_margin_bf16"] >= 10


# --- cache & registry ---------------------------------------------------------------------

def test_cache_hit(paths):
    t0 = time.monotonic()
    again = tinymodels.build(FORMATS_UNDER_TEST)
    assert time.monotonic() - t0 < 2.0
    assert {k: again[k] for k in paths} == paths
    assert tinymodels.model_path("fp8") == paths["fp8"]
    assert paths["bf16"].parent.parent == tinymodels.cache_root()
    assert not list(paths["bf16"].parent.glob(".tmp-*"))


def test_registry():
    assert {"bf16", "fp8"} <= set(FORMATS) and FORMATS["fp8"].needs == "bf16"
    assert resolve(("fp8",)) == ["bf16", "fp8"]
    with pytest.raises(KeyError):
        resolve(("nope",))


def test_cache_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv("QWEN3_PLAYGROUND_CACHE", str(tmp_path))
    assert tinymodels.cache_root() == tmp_path / "tiny"
    assert tinymodels.cache_dir().parent == tmp_path / "tiny"
