"""Train the tiny Qwen3 model on the script and write it as a bf16 transformers checkpoint.

The model memorises every scripted completion with a wide logit margin (top-1 beats the runner-up
by >= MIN_MARGIN at every target token, checked in bf16 with teacher forcing), so that it follows
the script under greedy decoding and under Qwen's sampling presets (temperature 0.6-0.7, top_k 20,
presence_penalty up to 1.5) alike.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from transformers import (AutoModelForCausalLM, GenerationConfig, PretrainedConfig, PreTrainedModel,
                          PreTrainedTokenizerBase, Qwen3Config)

from core.prompt import render_segments, rendered_text

from .registry import register_format
from .script import SCRIPTED_TEXT, TRAINING_CASES, ScriptedCase
from .tokenizer import save_tokenizer, train_tokenizer

MIN_MARGIN = 10.0  # required top-1 minus runner-up logit at every target token (bf16)
TRAIN_MARGIN = 16.0  # hinge target while training: headroom for bf16/fp8/int4 rounding
MAX_STEPS = 1500
SEED = 1234

ProgressFn = Callable[[float, str], None]
ConfigFn = Callable[[int, int, int], PretrainedConfig]  # (vocab_size, eos_id, pad_id) -> config

# Where the last build's numbers land (the CLI and the report read it).
BUILD_INFO_FILE = "tiny_build_info.json"


def model_config(vocab_size: int, eos_id: int, pad_id: int) -> Qwen3Config:
    # hidden 128 is one FP8 128x128 block / one GPTQ group; GQA 4 Q heads / 2 KV heads like Qwen3.
    return Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        hidden_act="silu",
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        tie_word_embeddings=False,
        attention_bias=False,
        use_cache=True,
        bos_token_id=pad_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )


@dataclass
class Row:
    name: str
    input_ids: list[int]
    labels: list[int]  # -100 where no loss


def render_prompt(tokenizer: PreTrainedTokenizerBase, case: ScriptedCase) -> str:
    """The prompt exactly as the backends render it at run time (``core.prompt``: the template with
    a slot for each message, each message's content put in as it is). For every scripted case this
    is what the template renders; for the leaked-history contrast case it keeps the earlier turn's
    ``<think>`` block, which the template itself would drop but a backend skipping the history rules
    would send."""

    def render(messages: list[dict]) -> str:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                             enable_thinking=case.enable_thinking, tokenize=False)

    return rendered_text(render_segments(render, case.messages))


def training_rows(tokenizer: PreTrainedTokenizerBase) -> list[Row]:
    """Chat rows (loss on the completion only) plus the memorised plain text."""
    rows = []
    for case in TRAINING_CASES:
        prompt = tokenizer(render_prompt(tokenizer, case), add_special_tokens=False)["input_ids"]
        target = tokenizer(case.target, add_special_tokens=False)["input_ids"]
        rows.append(Row(case.name, prompt + target, [-100] * len(prompt) + target))
    text = tokenizer(SCRIPTED_TEXT, add_special_tokens=False)["input_ids"]
    rows.append(Row("scripted_text", text, [-100] + text[1:]))
    return rows


def _batch(rows: list[Row], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n = max(len(r.input_ids) for r in rows)
    ids = torch.full((len(rows), n), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), n), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r.input_ids)] = torch.tensor(r.input_ids)
        labels[i, : len(r.labels)] = torch.tensor(r.labels)
        mask[i, : len(r.input_ids)] = 1
    return ids, labels, mask


def _margins(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Target logit minus best other logit, at every position that has a label (next-token)."""
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    keep = labels != -100
    lg, tg = logits[keep], labels[keep]
    target = lg.gather(1, tg[:, None]).squeeze(1)
    others = lg.scatter(1, tg[:, None], float("-inf"))
    return target - others.max(dim=1).values


@torch.no_grad()
def row_margins(model: torch.nn.Module, rows: list[Row], pad_id: int) -> dict[str, float]:
    """Minimum teacher-forced margin per row, in the model's current dtype."""
    ids, labels, mask = _batch(rows, pad_id)
    logits = model(input_ids=ids, attention_mask=mask).logits
    out = {}
    for i, r in enumerate(rows):
        out[r.name] = float(_margins(logits[i : i + 1], labels[i : i + 1]).min())
    return out


def train(
    tokenizer: PreTrainedTokenizerBase, progress: Optional[ProgressFn] = None, make_config: ConfigFn = model_config
) -> tuple[PreTrainedModel, dict]:
    """Train in float32 until every target token has margin >= MIN_MARGIN in bf16.

    ``make_config`` picks the architecture (dense Qwen3 by default; ``tinymodels.moe`` passes a
    Qwen3-MoE config): the model class comes from the config.
    """
    torch.manual_seed(SEED)
    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = make_config(len(tokenizer), eos_id, pad_id)
    model = AutoModelForCausalLM.from_config(config).float()
    rows = training_rows(tokenizer)
    ids, labels, mask = _batch(rows, pad_id)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0, betas=(0.9, 0.98))
    t0 = time.monotonic()
    step = 0
    min_bf16 = float("-inf")
    model.train()
    while step < MAX_STEPS:
        step += 1
        logits = model(input_ids=ids, attention_mask=mask).logits
        ce = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
        )
        hinge = torch.relu(TRAIN_MARGIN - _margins(logits, labels)).mean()
        loss = ce + hinge
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 25 == 0:
            model.eval()
            with torch.no_grad():
                bf16 = type(model)(config)
                bf16.load_state_dict(model.state_dict())
                bf16 = bf16.to(torch.bfloat16)
                per_row = row_margins(bf16, rows, pad_id)
            model.train()
            min_bf16 = min(per_row.values())
            if progress:
                progress(min(0.95, max(0.0, min_bf16) / TRAIN_MARGIN), f"step {step}: loss {loss.item():.4f}, "
                         f"min bf16 margin {min_bf16:.2f}")
            if min_bf16 >= TRAIN_MARGIN * 0.8:
                break
    model.eval()
    if min_bf16 < MIN_MARGIN:
        raise RuntimeError(f"tiny model did not reach margin {MIN_MARGIN} in {step} steps ({min_bf16:.2f})")
    info = {"steps": step, "train_seconds": round(time.monotonic() - t0, 2), "min_margin_bf16": round(min_bf16, 3),
            "margins_bf16": {k: round(v, 3) for k, v in per_row.items()}}
    return model, info


def generation_config(eos_id: int, pad_id: int) -> GenerationConfig:
    # Qwen's defaults (thinking preset).
    return GenerationConfig(
        eos_token_id=eos_id, pad_token_id=pad_id, do_sample=True, temperature=0.6, top_p=0.95, top_k=20
    )


# Training and quantizing always use this many threads, whatever the caller's setting (tests run
# with OMP_NUM_THREADS=1): float sums in another order train a different model, and the tests'
# expectations must hold for the same model on every machine.
BUILD_THREADS = 2


def write_trained(dst: Path, make_config: ConfigFn = model_config, progress: Optional[ProgressFn] = None) -> None:
    """Train a tiny model of ``make_config``'s architecture on the script; save it in bf16 with tokenizer."""
    threads = torch.get_num_threads()
    torch.set_num_threads(BUILD_THREADS)
    try:
        tokenizer = train_tokenizer()
        model, info = train(tokenizer, progress, make_config)
    finally:
        torch.set_num_threads(threads)
    model = model.to(torch.bfloat16)
    model.config.dtype = torch.bfloat16
    model.generation_config = generation_config(model.config.eos_token_id, model.config.pad_token_id)
    model.save_pretrained(dst, safe_serialization=True)
    save_tokenizer(tokenizer, dst)
    (dst / BUILD_INFO_FILE).write_text(json.dumps(info, indent=1))


@register_format("bf16")
def write_bf16(src: Path | None, dst: Path, progress: Optional[ProgressFn] = None) -> None:
    """Train the tiny Qwen3 model and save it in bf16 (safetensors) with tokenizer."""
    write_trained(dst, model_config, progress)
