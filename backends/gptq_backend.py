"""GPTQ backend: GPTQ (Int4/Int8) and AWQ checkpoints through gptqmodel, dense and Qwen3-MoE.

``GPTQModel.load`` reads the checkpoint's ``quantization_config`` (or ``quantize_config.json``),
replaces transformers' fused MoE expert blocks with per-expert Linear modules first (so the
quantized experts of e.g. Qwen3-30B-A3B-GPTQ-Int4 really load; plain transformers can leave them
random), and picks the best kernel for the hardware: Marlin/ExLlama-class kernels on CUDA; on CPU
the ATen int4pack torch kernel for 4-bit GPTQ and AWQ.  8-bit GPTQ on CPU gets gptqmodel's CPU
int8 kernel explicitly (its automatic choice there compiles with torch.compile, which is slow to
start).  The rest (tokenizer, YaRN, describe, scoring, generation with KV reuse) is shared with
the transformers backend (``backends.hf_common``).  The model's generation_config (gptqmodel saves ``do_sample: true``)
never decides sampling: every setting is passed explicitly.
"""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from backends.base import LoadOptions
from backends.hf_common import DTYPES, HFBackend, apply_yarn, import_gptqmodel, rebuild_rotary_embeddings
from core.errors import ModelLoadError

QUANT_CONFIG_FILES = ("quantize_config.json", "quant_config.json")  # gptqmodel / AutoAWQ
SUPPORTED_METHODS = ("gptq", "awq")


def checkpoint_quant_config(path: Path, raw_config: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's quantization settings: config.json's ``quantization_config``, else the file."""
    quant = raw_config.get("quantization_config")
    if isinstance(quant, dict) and quant:
        return quant
    for name in QUANT_CONFIG_FILES:
        file = path / name
        if file.is_file():
            try:
                return json.loads(file.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ModelLoadError(f"{file} is corrupt: {exc}") from None
    raise ModelLoadError(
        f"{path} is not a GPTQ/AWQ checkpoint: config.json has no quantization_config and there is no "
        "quantize_config.json (an incomplete download?). Unquantized models run on the transformers backend."
    )


def quant_method(quant: dict[str, Any]) -> str:
    return str(quant.get("quant_method") or quant.get("method") or "gptq").lower()


def kernel_backend(quant: dict[str, Any], device: str) -> str:
    """The gptqmodel backend to ask for: "auto" (its own best choice) except 8-bit GPTQ on CPU."""
    if (device == "cpu" and quant_method(quant) == "gptq" and int(quant.get("bits", 4)) == 8
            and sys.platform in ("linux", "win32")):
        return "gptq_torch_int8"  # auto would pick TorchLinear, which torch.compiles every layer
    return "auto"


def quant_summary(quant: dict[str, Any]) -> dict[str, Any]:
    """bits, group size, sym, desc_act... of a GPTQ or AWQ config, under one set of names."""
    method = quant_method(quant)
    return {
        "quant_method": method,
        "bits": int(quant.get("bits", 4)),
        "group_size": quant.get("group_size"),
        "sym": bool(quant.get("sym", not quant.get("zero_point", method == "awq"))),
        "desc_act": bool(quant.get("desc_act", False)),
        "checkpoint_format": quant.get("checkpoint_format") or quant.get("format") or quant.get("version") or method,
    }


def quantization_label(summary: dict[str, Any]) -> str:
    """e.g. "GPTQ int4, group size 128, sym, desc_act off" or "AWQ int4, group size 128, gemm, zero point"."""
    group = summary["group_size"]
    parts = [f"{summary['quant_method'].upper()} int{summary['bits']}",
             "per-channel" if group in (-1, None) else f"group size {group}"]
    if summary["quant_method"] == "awq":
        parts += [summary["checkpoint_format"], "symmetric" if summary["sym"] else "zero point"]
    else:
        parts += ["sym" if summary["sym"] else "asym", f"desc_act {'on' if summary['desc_act'] else 'off'}"]
    return ", ".join(parts)


class GPTQBackend(HFBackend):
    name = "gptq"
    library = "gptqmodel"

    def _check_checkpoint(self, path: Path, raw_config: dict[str, Any]) -> None:
        method = quant_method(checkpoint_quant_config(path, raw_config))
        if method not in SUPPORTED_METHODS:
            raise ModelLoadError(f"{path} is a {method} checkpoint; the gptq backend loads GPTQ and AWQ only")

    def _load_model(self, path: Path, raw_config: dict[str, Any], options: LoadOptions,
                    device: str) -> tuple[Any, dict[str, Any]]:
        import torch

        quant = checkpoint_quant_config(path, raw_config)
        backend = kernel_backend(quant, device)
        dtype = getattr(torch, DTYPES[options.dtype]) if options.dtype in DTYPES else "auto"
        with contextlib.redirect_stdout(sys.stderr):  # gptqmodel prints to stdout (`chat --json`)
            try:
                gptqmodel = import_gptqmodel()
            except ImportError as exc:
                raise ModelLoadError(f"the gptq backend needs gptqmodel (pip install gptqmodel==7.6.0): {exc}") from exc
            qmodel = gptqmodel.GPTQModel.load(str(path), device=device, backend=backend, dtype=dtype)
        from gptqmodel.nn_modules.qlinear import BaseQuantLinear

        model = qmodel.model
        if apply_yarn(model.config, options.yarn_factor):  # the config is built inside gptqmodel
            rebuild_rotary_embeddings(model)
        kernels = sorted({type(m).__name__ for m in model.modules() if isinstance(m, BaseQuantLinear)})
        if not kernels:
            raise ModelLoadError(f"{path}: gptqmodel loaded no quantized layers")
        details = {
            "kernel": ", ".join(kernels),
            "gptqmodel_backend": backend,
            "gptqmodel_version": getattr(gptqmodel, "__version__", None),
            **quant_summary(quant),
            "quantized_layers": sum(isinstance(m, BaseQuantLinear) for m in model.modules()),
        }
        return model, details

    def _quantization(self) -> tuple[str | None, list[str]]:
        notes = []
        if self._device == "cpu":
            notes.append(f"CPU: gptqmodel's torch kernel ({self._load_details['kernel']}); "
                         "Marlin/ExLlama-class kernels need a CUDA GPU")
        return quantization_label(self._load_details), notes
