"""The fine-grained FP8 twin (like Qwen/Qwen3-4B-FP8), written by hand on CPU.

transformers refuses on-the-fly FP8 quantization without a GPU, but loads (and dequantizes) an FP8
checkpoint on CPU, so we write the checkpoint ourselves: every decoder Linear weight as
float8_e4m3fn plus a float32 ``weight_scale_inv`` per 128x128 block; embeddings, norms and lm_head
stay bf16.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .registry import register_format

BLOCK = 128
FP8_MAX = 448.0  # largest finite float8_e4m3fn
QUANTIZATION_CONFIG = {
    "quant_method": "fp8",
    "fmt": "e4m3",
    "weight_block_size": [BLOCK, BLOCK],
    "activation_scheme": "dynamic",
}
# Decoder Linear weights (dense MLP and attention); MoE experts would be added here.
QUANTIZED_WEIGHT = re.compile(
    r"^model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)\.weight$"
)
MIN_MARGIN_FP8 = 6.0  # checked after loading the FP8 folder with transformers (teacher forcing)


def quantize_block_fp8(w: torch.Tensor, block: int = BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (float8_e4m3fn weight, float32 scale_inv[ceil(out/b), ceil(in/b)]); w ~= q * scale_inv."""
    out_f, in_f = w.shape
    rb, cb = math.ceil(out_f / block), math.ceil(in_f / block)
    w = w.float()
    padded = torch.zeros(rb * block, cb * block, dtype=torch.float32)
    padded[:out_f, :in_f] = w
    blocks = padded.view(rb, block, cb, block)
    amax = blocks.abs().amax(dim=(1, 3))
    scale_inv = (amax / FP8_MAX).clamp(min=1e-12)
    q = (blocks / scale_inv[:, None, :, None]).clamp(-FP8_MAX, FP8_MAX)
    q = q.view(rb * block, cb * block)[:out_f, :in_f].contiguous().to(torch.float8_e4m3fn)
    return q, scale_inv.contiguous()


def dequantize_block_fp8(q: torch.Tensor, scale_inv: torch.Tensor, block: int = BLOCK) -> torch.Tensor:
    out_f, in_f = q.shape
    s = scale_inv.repeat_interleave(block, 0)[:out_f].repeat_interleave(block, 1)[:, :in_f]
    return q.float() * s


@register_format("fp8", needs="bf16")
def write_fp8(src: Path, dst: Path) -> None:
    """Fine-grained FP8 (e4m3, 128x128 blocks, weight_scale_inv) twin of the bf16 model."""
    write_fp8_checkpoint(src, dst)
    _verify(dst)


def write_fp8_checkpoint(src: Path, dst: Path) -> None:
    """The FP8 twin of any bf16 Qwen3 checkpoint folder ``src`` in ``dst`` (no script check)."""
    for f in src.iterdir():
        if f.is_file() and not f.name.endswith(".safetensors") and f.name not in (
            "config.json", "model.safetensors.index.json"
        ):
            shutil.copy2(f, dst / f.name)
    config = json.loads((src / "config.json").read_text())
    config["quantization_config"] = dict(QUANTIZATION_CONFIG)
    (dst / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(src.glob("*.safetensors")):
        tensors.update(load_file(shard))
    out: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        if QUANTIZED_WEIGHT.match(name):
            q, s = quantize_block_fp8(t)
            out[name] = q
            out[name + "_scale_inv"] = s  # "...weight_scale_inv"
        else:
            out[name] = t
    save_file(out, str(dst / "model.safetensors"), metadata={"format": "pt"})


def _verify(dst: Path) -> None:
    """Load with transformers (dequantizes on CPU) and check the script still has a wide margin."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .build import row_margins, training_rows

    tok = AutoTokenizer.from_pretrained(dst)
    model = AutoModelForCausalLM.from_pretrained(dst)
    margins = row_margins(model, training_rows(tok), tok.pad_token_id)
    worst = min(margins.values())
    if worst < MIN_MARGIN_FP8:
        raise RuntimeError(f"FP8 twin lost the script: min margin {worst:.2f} < {MIN_MARGIN_FP8}")
    info_path = dst / "tiny_build_info.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    info["min_margin_fp8"] = round(worst, 3)
    info["fp8_loaded_dtype"] = str(next(model.model.layers[0].parameters()).dtype)
    info_path.write_text(json.dumps(info, indent=1))
