"""GPTQ / AWQ twins of the tiny models, quantized on CPU by gptqmodel itself.

Calibration text is the script the models were trained on.  The result is the standard GPTQ
checkpoint layout (``qweight``/``qzeros``/``scales``/``g_idx`` per Linear, ``quantization_config``
in config.json plus ``quantize_config.json``), like Qwen/Qwen3-30B-A3B-GPTQ-Int4:

- ``gptq-int4``: 4-bit, group size 128, symmetric, no act-order (dense model);
- ``moe-gptq-int4``: the same for the tiny Qwen3-MoE model (experts quantized, router not);
- ``gptq-int8``: 8-bit twin (like Qwen/Qwen3-1.7B-GPTQ-Int8);
- ``awq-int4``: AWQ GEMM 4-bit with zero points (like Qwen/Qwen3-4B-AWQ).

gptqmodel is imported through ``backends.hf_common.import_gptqmodel`` (HF_HOME kept,
``GPTQMODEL_CPU_WORKERS=2`` on small machines); it writes ``./logs`` into the current directory,
so quantization runs with the cwd in a temp folder.  Each twin is loaded back with gptqmodel and
must keep the script's logit margins (teacher forcing).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional

import torch

from .build import (BUILD_INFO_FILE, BUILD_THREADS, ProgressFn, render_prompt, row_margins, trained_cases,
                    training_rows)
from .registry import register_format
from .script import SCRIPTED_TEXT, TRAINING_CASES

MIN_MARGIN_QUANTIZED = 6.0  # teacher-forced top-1 margin the quantized twin must keep
WEIGHT_FILES = (".safetensors", "model.safetensors.index.json")
CONFIG_FILES = ("config.json", "quantize_config.json", "generation_config.json", "quant_log.csv")


@contextlib.contextmanager
def _quiet_cwd() -> Iterator[Path]:
    """cwd in a temp folder (gptqmodel writes ./logs there) and its stdout chatter on stderr."""
    old = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="tiny-gptq-") as tmp:
        os.chdir(tmp)
        try:
            with contextlib.redirect_stdout(sys.stderr):
                yield Path(tmp)
        finally:
            os.chdir(old)


def calibration_texts(tokenizer: Any) -> list[str]:
    """The script itself: every chat rendered with its completion, plus the memorised text."""
    return [render_prompt(tokenizer, case) + case.after_prompt for case in TRAINING_CASES] + [SCRIPTED_TEXT]


def quantize(src: Path, dst: Path, *, bits: int = 4, method: str = "gptq", sym: bool = True,
             progress: Optional[ProgressFn] = None) -> None:
    """Quantize the bf16 folder ``src`` into ``dst`` on CPU with gptqmodel, then verify it."""
    from transformers import AutoTokenizer

    from backends.hf_common import import_gptqmodel

    gptqmodel = import_gptqmodel()
    tokenizer = AutoTokenizer.from_pretrained(src)
    extra = {"format": "gemm"} if method == "awq" else {"desc_act": False}
    config = gptqmodel.QuantizeConfig(bits=bits, group_size=128, sym=sym, method=method, device="cpu",
                                      offload_to_disk=False, **extra)
    # AWQ's default packing kernel needs CUDA; its torch kernel packs on CPU.
    backend = gptqmodel.BACKEND.AWQ_TORCH if method == "awq" else gptqmodel.BACKEND.AUTO
    threads = torch.get_num_threads()
    torch.set_num_threads(BUILD_THREADS)
    try:
        with _quiet_cwd():
            if progress:
                progress(0.1, f"quantizing to {method} int{bits} with gptqmodel on CPU")
            model = gptqmodel.GPTQModel.load(str(src), config)  # on CPU: config.device
            model.quantize(calibration_texts(tokenizer), tokenizer=tokenizer, backend=backend)
            model.save(str(dst))
            del model
    finally:
        torch.set_num_threads(threads)
    for f in src.iterdir():  # the source's own tokenizer files and build info, byte for byte
        if f.is_file() and not f.name.endswith(WEIGHT_FILES) and f.name not in CONFIG_FILES:
            shutil.copy2(f, dst / f.name)
    if progress:
        progress(0.8, "checking the quantized model still follows the script")
    _verify(dst, bits, method)


def _verify(dst: Path, bits: int, method: str) -> None:
    """Load the twin with gptqmodel on CPU; every scripted token must keep a wide margin."""
    from transformers import AutoTokenizer

    from backends.hf_common import import_gptqmodel

    gptqmodel = import_gptqmodel()
    backend = "gptq_torch_int8" if (method, bits) == ("gptq", 8) else "auto"  # auto = torch.compile
    with _quiet_cwd():
        loaded = gptqmodel.GPTQModel.load(str(dst), device="cpu", backend=backend)
    tokenizer = AutoTokenizer.from_pretrained(dst)
    margins = row_margins(loaded.model, training_rows(tokenizer, trained_cases(dst)), tokenizer.pad_token_id)
    worst = min(margins.values())
    if worst < MIN_MARGIN_QUANTIZED:
        raise RuntimeError(f"{method} int{bits} twin lost the script: min margin {worst:.2f} < "
                           f"{MIN_MARGIN_QUANTIZED} ({margins})")
    info_path = dst / BUILD_INFO_FILE
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    info[f"min_margin_{method}_int{bits}"] = round(worst, 3)
    info["kernel"] = getattr(loaded.qlinear_kernel, "__name__", str(loaded.qlinear_kernel))
    info_path.write_text(json.dumps(info, indent=1))


@register_format("gptq-int4", needs="bf16")
def write_gptq_int4(src: Path, dst: Path, progress: Optional[ProgressFn] = None) -> None:
    """GPTQ-Int4 twin of the dense model (group size 128, symmetric), quantized by gptqmodel on CPU."""
    quantize(src, dst, bits=4, progress=progress)


@register_format("moe-gptq-int4", needs="moe-bf16")
def write_moe_gptq_int4(src: Path, dst: Path, progress: Optional[ProgressFn] = None) -> None:
    """GPTQ-Int4 twin of the tiny Qwen3-MoE model (experts quantized, router kept), by gptqmodel on CPU."""
    quantize(src, dst, bits=4, progress=progress)


@register_format("gptq-int8", needs="bf16")
def write_gptq_int8(src: Path, dst: Path, progress: Optional[ProgressFn] = None) -> None:
    """GPTQ-Int8 twin of the dense model (group size 128, symmetric), quantized by gptqmodel on CPU."""
    quantize(src, dst, bits=8, progress=progress)


@register_format("awq-int4", needs="bf16")
def write_awq_int4(src: Path, dst: Path, progress: Optional[ProgressFn] = None) -> None:
    """AWQ 4-bit GEMM twin with zero points (like Qwen/Qwen3-4B-AWQ), quantized by gptqmodel on CPU."""
    quantize(src, dst, bits=4, method="awq", sym=False, progress=progress)
