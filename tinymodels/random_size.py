"""Random-weight Qwen3 models of a real size (Qwen3-0.6B's shape), for speed measurements.

Built by the same cached builder, **on request only**: ``build-tiny`` without ``--formats`` and
the tests never build them (``on_request=True``).  About 1.2 GB (bf16), 0.9 GB (FP8 folder)
and 0.65 GB (Q8_0) on disk; a few minutes on 2 cores::

    python app.py build-tiny --formats random-0.6b-bf16 random-0.6b-fp8 random-0.6b-gguf-q8_0
    python -m bench.speed --size 0.6b          # builds what it needs on first use

The shape is Qwen3-0.6B's ``config.json``: hidden 1024, 28 layers, 16 query heads and 8 KV heads
of 128, intermediate 3072, tied embeddings, rope theta 1e6, 40,960 positions, and **Qwen3's
vocabulary size of 151,936 rows**, so that the embedding/lm_head (a quarter of the model's
weights and of its decode FLOPs) and the per-token work on the logits cost what they cost in
the real model.  The tokenizer is the tiny one (a few hundred tokens, ``tinymodels.tokenizer``):
the rows it has no token for are zero, and so are the rows of its special and added tokens and
of byte tokens that are not whole UTF-8 characters.  A zero row scores 0 while the max over the
other few hundred random logits is always positive, so greedy decoding only ever emits whole,
printable tokens and never ends the turn: every run generates exactly ``max_new_tokens`` tokens,
like the tiny models' endless case.  The weights' values do not matter for speed.

The FP8 and GGUF twins come from the tiny models' own writers (``tinymodels.fp8``,
``tinymodels.gguf``) with this folder as their source, without the tiny script's output checks
(random weights follow no script); the GGUF gets ``[PAD<id>]`` UNUSED tokens for the rows past
the tokenizer, as ``convert_hf_to_gguf.py`` does for Qwen3.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from .build import BUILD_INFO_FILE, BUILD_THREADS, ProgressFn, generation_config
from .registry import register_format

PREFIX = "random-0.6b-"
SEED = 0

QWEN3_0_6B = dict(  # Qwen/Qwen3-0.6B config.json
    hidden_size=1024,
    intermediate_size=3072,
    num_hidden_layers=28,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    hidden_act="silu",
    max_position_embeddings=40960,
    rms_norm_eps=1e-6,
    rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
    tie_word_embeddings=True,
    attention_bias=False,
    vocab_size=151936,
)


def format_name(fmt: str) -> str:
    """``"bf16"`` -> ``"random-0.6b-bf16"``."""
    return PREFIX + fmt


def emittable_ids(tokenizer) -> list[int]:
    """Token ids a random model may emit: whole printable text, no special or added tokens."""
    added = set(tokenizer.added_tokens_decoder)
    out = []
    for i in range(len(tokenizer)):
        if i in added:
            continue
        text = tokenizer.decode([i])
        if text and "\ufffd" not in text:
            out.append(i)
    return out


@register_format(format_name("bf16"), on_request=True)
def write_random_bf16(src: Path | None, dst: Path, progress: Optional[ProgressFn] = None) -> None:
    """Random-weight Qwen3-0.6B-shaped model (vocab 151,936, tiny tokenizer) in bf16, on request."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen3Config

    from .tokenizer import save_tokenizer, train_tokenizer

    threads = torch.get_num_threads()
    torch.set_num_threads(BUILD_THREADS)
    try:
        tokenizer = train_tokenizer()
        eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
        pad_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
        config = Qwen3Config(**QWEN3_0_6B, bos_token_id=pad_id, eos_token_id=eos_id, pad_token_id=pad_id,
                             use_cache=True)
        if progress:
            progress(0.1, "initialising 0.6B random weights")
        torch.manual_seed(SEED)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        keep = torch.tensor(emittable_ids(tokenizer))
        with torch.no_grad():
            embed = model.get_input_embeddings().weight  # tied: also the lm_head
            mask = torch.zeros(embed.shape[0], dtype=torch.bool)
            mask[keep] = True
            embed[~mask] = 0
        model.config.dtype = torch.bfloat16
        model.generation_config = generation_config(eos_id, pad_id)
        if progress:
            progress(0.6, "saving")
        model.save_pretrained(dst, safe_serialization=True)
        save_tokenizer(tokenizer, dst)
        params = sum(p.numel() for p in model.parameters())
        (dst / BUILD_INFO_FILE).write_text(json.dumps({
            "random_weights": True, "seed": SEED, "parameters": params,
            "tokenizer_tokens": len(tokenizer), "emittable_tokens": len(keep)}, indent=1))
    finally:
        torch.set_num_threads(threads)


@register_format(format_name("fp8"), needs=format_name("bf16"), on_request=True)
def write_random_fp8(src: Path, dst: Path) -> None:
    """FP8 (e4m3, 128x128 blocks) twin of the random 0.6B-shaped model, on request."""
    from .fp8 import write_fp8_checkpoint

    write_fp8_checkpoint(src, dst)


@register_format(format_name("gguf-q8_0"), needs=format_name("bf16"), on_request=True)
def write_random_gguf_q8_0(src: Path, dst: Path) -> None:
    """GGUF Q8_0 twin of the random 0.6B-shaped model (vocab padded to 151,936), on request."""
    from .gguf import write_gguf

    write_gguf(src, dst / "random-qwen3-0.6b-Q8_0.gguf", "Q8_0", pad_vocab=True)


@register_format(format_name("gptq-int4"), needs=format_name("bf16"), on_request=True)
def write_random_gptq_int4(src: Path, dst: Path, progress: Optional[ProgressFn] = None) -> None:
    """GPTQ-Int4 (group size 128, sym) twin of the random 0.6B-shaped model, by gptqmodel on CPU (~5 min).

    Calibrated on the tiny script's texts like the tiny GPTQ twins; nothing is checked afterwards
    (random weights follow no script).  gptqmodel needs ``GPTQMODEL_CPU_WORKERS=2`` on a 2-core
    machine and writes ``./logs``: it runs with the cwd in a temp folder (docs/library-notes.md).
    """
    import contextlib
    import os
    import shutil
    import sys
    import tempfile

    import torch
    from transformers import AutoTokenizer

    from backends.hf_common import import_gptqmodel

    from .build import render_prompt
    from .script import SCRIPTED_TEXT, TRAINING_CASES

    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")
    gptqmodel = import_gptqmodel()
    tokenizer = AutoTokenizer.from_pretrained(src)
    texts = [render_prompt(tokenizer, case) + case.after_prompt for case in TRAINING_CASES] + [SCRIPTED_TEXT]
    config = gptqmodel.QuantizeConfig(bits=4, group_size=128, sym=True, desc_act=False, device="cpu",
                                      offload_to_disk=False)
    threads, cwd = torch.get_num_threads(), Path.cwd()
    torch.set_num_threads(BUILD_THREADS)
    try:
        with tempfile.TemporaryDirectory(prefix="random-gptq-") as tmp, contextlib.redirect_stdout(sys.stderr):
            os.chdir(tmp)
            if progress:
                progress(0.05, "quantizing 28 layers to GPTQ int4 with gptqmodel on CPU (~5 min)")
            model = gptqmodel.GPTQModel.load(str(src), config)
            model.quantize(texts, tokenizer=tokenizer, backend=gptqmodel.BACKEND.AUTO)
            model.save(str(dst))
            del model
    finally:
        os.chdir(cwd)
        torch.set_num_threads(threads)
    for f in src.iterdir():  # tokenizer files and build info as in the source
        if f.is_file() and not (dst / f.name).exists() and not f.name.endswith(".safetensors"):
            shutil.copy2(f, dst / f.name)
