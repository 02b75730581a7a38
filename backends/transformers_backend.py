"""transformers backend: bf16/fp16 checkpoints and fine-grained FP8 ones.

FP8 (``quant_method: fp8``, e4m3, 128x128 blocks) runs natively on GPUs with compute capability
>= 8.9; elsewhere transformers dequantizes it to bf16 at load, which roughly doubles the memory:
``describe`` says so. YaRN is applied to the config at load, so a new factor means a reload.
Loading, ``describe`` and generation are shared with the GPTQ backend (``backends.hf_common``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from backends.base import LoadOptions
from backends.hf_common import DTYPES, HFBackend, apply_yarn


class TransformersBackend(HFBackend):
    name = "transformers"

    def _load_model(self, path: Path, raw_config: dict[str, Any], options: LoadOptions,
                    device: str) -> tuple[Any, dict[str, Any]]:
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(path)
        apply_yarn(config, options.yarn_factor)  # into the config: from_pretrained(rope_...=) drops rope_theta
        dtype = DTYPES.get(options.dtype, "auto")
        return AutoModelForCausalLM.from_pretrained(path, config=config, dtype=dtype, device_map=device), {}

    def _quantization(self) -> tuple[str | None, list[str]]:
        import torch

        quant = self._raw_config.get("quantization_config") or {}
        if str(quant.get("quant_method")).lower() != "fp8":
            return None, []
        # On CPU transformers dequantizes FP8 and drops model.config.quantization_config: the
        # checkpoint's own config.json says what it was.
        block = "x".join(str(b) for b in quant.get("weight_block_size") or [])
        label = f"fp8 {quant.get('fmt', 'e4m3')} {block} blocks"
        if any(p.dtype == torch.float8_e4m3fn for p in self.model.parameters()):
            return label, []
        dtype = str(next(self.model.parameters()).dtype).removeprefix("torch.")
        return f"{label} (dequantized to {dtype})", [
            "FP8 checkpoint dequantized: no FP8 hardware here (needs a GPU with compute capability "
            ">= 8.9), so it takes about twice the memory of FP8"]
