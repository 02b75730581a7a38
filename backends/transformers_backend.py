"""transformers backend: bf16/fp16 checkpoints and fine-grained FP8 ones.

FP8 (``quant_method: fp8``, e4m3, 128x128 blocks) runs natively on GPUs with compute capability
>= 8.9; elsewhere transformers dequantizes it to bf16 at load, which roughly doubles the memory:
``describe`` says so. YaRN is applied to the config at load, so a new factor means a reload.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from backends.base import Backend, LoadOptions, ModelInfo, StopSignal, check_prompt_fits, new_token_budget
from backends.hf_generation import PrefixCache
from core.catalog import ModelSpec
from core.chat import Message
from core.errors import ModelLoadError, PlaygroundError, PromptError
from core.events import BackendItem, Perplexity
from core.hub import ProgressFn, fetch_model
from core.prompt import encode_segments, render_segments
from core.settings import GenerationSettings
from core.yarn import ORIGINAL_CONTEXT, rope_parameters_with_yarn

_DTYPES = {"bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16",
           "float32": "float32", "fp32": "float32"}


def _read_config(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"{path} is not a model folder: it has no config.json") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path / 'config.json'} is corrupt: {exc}") from None


def _fp8_native(device: str) -> bool:
    import torch

    if not device.startswith("cuda") or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability() >= (8, 9)


class TransformersBackend(Backend):
    name = "transformers"

    def __init__(self) -> None:
        super().__init__()
        self.model: Any = None
        self.tokenizer: Any = None
        self._raw_config: dict[str, Any] = {}
        self._device = "cpu"
        self.load_s = 0.0
        self._prefix_cache = PrefixCache()  # the previous turn's KV cache, reused by the next

    # -- loading ---------------------------------------------------------------------------
    def load(self, spec: ModelSpec, options: LoadOptions = LoadOptions(),
             progress: ProgressFn | None = None) -> None:
        options.validate()
        report = progress or (lambda fraction, message: None)
        started = time.perf_counter()
        path = fetch_model(spec, progress)
        if path.is_file():
            raise ModelLoadError(f"{path} is a single file; the transformers backend needs a checkpoint folder")
        raw_config = _read_config(path)
        report(0.6, f"Loading {spec.name} with transformers")
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        device = options.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            config = AutoConfig.from_pretrained(path)
            if options.yarn_factor != 1.0 or (getattr(config, "rope_parameters", None) or {}).get("rope_type") == "yarn":
                config.rope_parameters = rope_parameters_with_yarn(config.rope_parameters, options.yarn_factor)
                if options.yarn_factor != 1.0:
                    config.max_position_embeddings = int(ORIGINAL_CONTEXT * options.yarn_factor)
            tokenizer = AutoTokenizer.from_pretrained(path)
            dtype = _DTYPES.get(options.dtype, "auto")
            model = AutoModelForCausalLM.from_pretrained(path, config=config, dtype=dtype, device_map=device)
        except PlaygroundError:
            raise
        except Exception as exc:  # truncated safetensors, missing files, unsupported arch...
            raise ModelLoadError(f"could not load {spec.name} from {path}: {exc}") from exc
        if tokenizer.chat_template is None:
            from core.qwen3_template import QWEN3_CHAT_TEMPLATE

            tokenizer.chat_template = QWEN3_CHAT_TEMPLATE
        model.eval()
        self.unload()
        self.model, self.tokenizer, self._raw_config = model, tokenizer, raw_config
        self.spec, self.options, self._device = spec, options, device
        self.load_s = time.perf_counter() - started
        report(1.0, f"{spec.name} ready")

    def unload(self) -> None:
        self._prefix_cache.clear()
        self.model = self.tokenizer = None
        self.spec = None
        import gc

        gc.collect()

    # -- describing ------------------------------------------------------------------------
    @property
    def context_window(self) -> int:
        return int(self.model.config.max_position_embeddings)

    def describe(self) -> ModelInfo:
        if not self.loaded:
            raise PlaygroundError("no model is loaded")
        import torch

        config = self.model.config
        param = next(self.model.parameters())
        quant = self._raw_config.get("quantization_config") or {}
        notes: list[str] = []
        quantization = None
        if str(quant.get("quant_method")).lower() == "fp8":
            block = "x".join(str(b) for b in quant.get("weight_block_size") or [])
            native = any(p.dtype == torch.float8_e4m3fn for p in self.model.parameters())
            quantization = f"fp8 {quant.get('fmt', 'e4m3')} {block} blocks"
            if not native:
                quantization += f" (dequantized to {str(param.dtype).removeprefix('torch.')})"
                notes.append("FP8 checkpoint dequantized: no FP8 hardware here (needs a GPU with "
                             "compute capability >= 8.9), so it takes about twice the memory of FP8")
        rope = dict(config.rope_parameters or {})
        return ModelInfo(
            backend=self.name,
            model=self.spec.name,
            source=self.spec.source,
            format=self.spec.format,
            quantization=quantization,
            dtype=str(param.dtype).removeprefix("torch."),
            device=str(param.device),
            memory_bytes=int(self.model.get_memory_footprint()),
            context_window=self.context_window,
            rope_scaling=rope if rope.get("rope_type") == "yarn" else None,
            notes=notes,
            details={"architecture": (config.architectures or [type(self.model).__name__])[0],
                     "rope_theta": rope.get("rope_theta"), "load_s": round(self.load_s, 3)},
        )

    # -- scoring ---------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int | None:
        return len(self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])

    def perplexity(self, text: str) -> Perplexity:
        import math

        import torch

        ids = self.tokenizer(text, return_tensors="pt", add_special_tokens=False,
                             split_special_tokens=True)["input_ids"]
        n = int(ids.shape[1])
        if n < 2:
            raise PromptError("the text to score needs at least two tokens")
        check_prompt_fits(n, self.context_window + 1)
        with self._generation_lock, torch.inference_mode():
            loss = float(self.model(input_ids=ids.to(self.model.device), labels=ids.to(self.model.device)).loss)
        return Perplexity(perplexity=math.exp(loss), tokens=n - 1, mean_nll=loss)

    # -- generating ------------------------------------------------------------------------
    def render_prompt(self, messages: list[Message], thinking: bool) -> str:
        """The chat template's text for ``messages`` with the hard switch applied."""
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                  enable_thinking=thinking)

    def encode_prompt(self, messages: list[Message], thinking: bool) -> list[int]:
        """Prompt token ids; what users typed never becomes control tokens (core.prompt)."""
        tokenizer = self.tokenizer
        reserved = [token.content for token in tokenizer.added_tokens_decoder.values()]
        return encode_segments(
            render_segments(lambda slotted: self.render_prompt(slotted, thinking), messages),
            lambda text: tokenizer(text, add_special_tokens=False)["input_ids"],
            lambda text: tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"],
            reserved)

    def _generate(self, messages: list[Message], settings: GenerationSettings, thinking: bool,
                  stop: StopSignal) -> Iterator[BackendItem]:
        import torch

        from backends.hf_generation import stream_generate

        input_ids = torch.tensor([self.encode_prompt(messages, thinking)], device=self.model.device)
        budget = new_token_budget(int(input_ids.shape[1]), settings, self.context_window)
        yield from stream_generate(self.model, self.tokenizer, input_ids, settings, budget, stop, self._prefix_cache)
