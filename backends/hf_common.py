"""What the transformers and GPTQ backends share: a model in transformers' ``generate`` world.

:class:`HFBackend` holds the load skeleton (fetch, sanity checks, tokenizer, clear errors, a
failed load leaves the previous model in place), ``describe``, token counting and perplexity,
prompt encoding without role injection (``core.prompt``) and generation through
:func:`backends.hf_generation.stream_generate`, reusing the previous turn's KV cache.  A subclass
only says how to build the model (:meth:`HFBackend._load_model`) and what its quantization is
(:meth:`HFBackend._quantization`).
"""
from __future__ import annotations

import contextlib
import json
import os
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from backends.base import Backend, LoadOptions, ModelInfo, StopSignal, check_prompt_fits, new_token_budget
from backends.hf_generation import PrefixCache
from backends.hub import fetch_model
from core.catalog import ModelSpec
from core.chat import Message
from core.drift import TokenLogprobs, Window
from core.errors import ModelLoadError, PlaygroundError, PromptError
from core.events import BackendItem, Perplexity, ProgressFn
from core.prompt import encode_segments, render_segments
from core.settings import GenerationSettings
from core.speed_bound import WeightProfile
from core.yarn import ORIGINAL_CONTEXT, rope_parameters_with_yarn

DTYPES = {"bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16",
          "float32": "float32", "fp32": "float32"}


def read_config(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"{path} is not a model folder: it has no config.json") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path / 'config.json'} is corrupt: {exc}") from None


def check_safetensors(path: Path, name: str) -> None:
    """Every ``*.safetensors`` file is as long as its header says (catches truncated downloads)."""
    for file in sorted(path.glob("*.safetensors")):
        try:
            with file.open("rb") as f:
                (header_len,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(header_len))
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
            complete = file.stat().st_size >= 8 + header_len + end
        except (OSError, struct.error, ValueError, KeyError, TypeError, IndexError):
            complete = False
        if not complete:
            raise ModelLoadError(f"could not load {name}: {file} is truncated or corrupt; download it again")


def apply_yarn(config: Any, factor: float) -> bool:
    """Merge YaRN ``factor`` into a transformers config in place (``rope_theta`` kept).

    Factor 1 also removes YaRN a checkpoint may ship with. Returns whether the rope changed.
    """
    current = getattr(config, "rope_parameters", None) or {}
    if factor == 1.0 and current.get("rope_type") != "yarn":
        return False
    config.rope_parameters = rope_parameters_with_yarn(current, factor)
    if factor != 1.0:
        config.max_position_embeddings = int(ORIGINAL_CONTEXT * factor)
    return True


def rebuild_rotary_embeddings(model: Any) -> None:
    """Recompute the rotary embedding modules from ``model.config`` (after :func:`apply_yarn`)."""
    for name, module in list(model.named_modules()):
        if type(module).__name__.endswith("RotaryEmbedding") and hasattr(module, "inv_freq"):
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attr, type(module)(model.config).to(module.inv_freq.device))


def import_gptqmodel() -> Any:
    """Import gptqmodel without side effects on the rest of the app (docs/library-notes.md).

    - its dependency tokenicer sets ``HF_HOME`` to a temp folder when it is unset: pin it to
      huggingface_hub's own default first, so the HF cache does not move;
    - on a machine with fewer than 3 cores its default of 1 CPU worker makes quantization fail
      ("Virtual pool 'model_loader:cpu' requests 2 workers"): ask for 2 unless the user chose;
    - its start-up banner goes to stdout: send it to stderr (``chat --json`` prints JSON only).
    """
    if "HF_HOME" not in os.environ:
        from huggingface_hub import constants

        os.environ["HF_HOME"] = constants.HF_HOME
    if (os.cpu_count() or 1) < 3:
        os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")
    with contextlib.redirect_stdout(sys.stderr):
        import gptqmodel

    return gptqmodel


def resolve_device(device: str) -> str:
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class HFBackend(Backend):
    """Base of the backends whose model is a transformers ``PreTrainedModel``."""

    library = "transformers"  # shown in progress messages
    continues_replies = True

    def __init__(self) -> None:
        super().__init__()
        self.model: Any = None
        self.tokenizer: Any = None
        self._raw_config: dict[str, Any] = {}
        self._device = "cpu"
        self._load_details: dict[str, Any] = {}
        self.load_s = 0.0
        self._prefix_cache = PrefixCache()  # the previous turn's KV cache, reused by the next

    # -- what a subclass provides ------------------------------------------------------------
    def _check_checkpoint(self, path: Path, raw_config: dict[str, Any]) -> None:
        """Raise ModelLoadError if ``path`` is not a checkpoint this backend can load."""

    def _load_model(self, path: Path, raw_config: dict[str, Any], options: LoadOptions,
                    device: str) -> tuple[Any, dict[str, Any]]:
        """The loaded model (YaRN applied) and backend-specific details for ``describe``."""
        raise NotImplementedError

    def _quantization(self) -> tuple[str | None, list[str]]:
        """(quantization label or None, notes for the user)."""
        return None, []

    # -- loading ---------------------------------------------------------------------------
    def load(self, spec: ModelSpec, options: LoadOptions = LoadOptions(),
             progress: ProgressFn | None = None) -> None:
        options.validate()
        report = progress or (lambda fraction, message: None)
        started = time.perf_counter()
        path = fetch_model(spec, progress)
        if path.is_file():
            raise ModelLoadError(f"{path} is a single file; the {self.name} backend needs a checkpoint folder")
        raw_config = read_config(path)
        self._check_checkpoint(path, raw_config)
        check_safetensors(path, spec.name)
        report(0.6, f"Loading {spec.name} with {self.library}")
        from transformers import AutoTokenizer

        device = resolve_device(options.device)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            model, details = self._load_model(path, raw_config, options, device)
        except PlaygroundError:
            raise
        except Exception as exc:  # truncated safetensors, missing files, unsupported arch...
            raise ModelLoadError(f"could not load {spec.name} from {path}: {exc}") from exc
        if tokenizer.chat_template is None:
            from core.qwen3_template import QWEN3_CHAT_TEMPLATE

            tokenizer.chat_template = QWEN3_CHAT_TEMPLATE
        model.eval()
        self.unload()  # only now: a failed load leaves the previous model usable
        self.model, self.tokenizer, self._raw_config = model, tokenizer, raw_config
        self.spec, self.options, self._device, self._load_details = spec, options, device, details
        self.load_s = time.perf_counter() - started
        report(1.0, f"{spec.name} ready")

    def unload(self) -> None:
        self._prefix_cache.clear()
        self.model = self.tokenizer = None
        self.spec = None
        self._load_details = {}
        import gc

        gc.collect()

    # -- describing ------------------------------------------------------------------------
    @property
    def context_window(self) -> int:
        return int(self.model.config.max_position_embeddings)

    def describe(self) -> ModelInfo:
        if not self.loaded:
            raise PlaygroundError("no model is loaded")
        config = self.model.config
        param = next(self.model.parameters())
        quantization, notes = self._quantization()
        rope = dict(config.rope_parameters or {})
        details = {"architecture": (config.architectures or [type(self.model).__name__])[0],
                   "rope_theta": rope.get("rope_theta"), "load_s": round(self.load_s, 3)}
        if getattr(config, "num_experts", None):  # MoE: e.g. 128 experts, 8 active per token
            details.update(num_experts=config.num_experts, num_experts_per_tok=config.num_experts_per_tok)
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
            details={**details, **self._load_details},
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

    def weight_profile(self) -> WeightProfile | None:
        """Parameters and buffers (GPTQ's packed weights are buffers); the KV cache is kept in the
        model's dtype (DynamicCache)."""
        if not self.loaded:
            return None
        config = self.model.config
        tensors = [*self.model.named_parameters(), *self.model.named_buffers()]
        experts = sum(t.numel() * t.element_size() for name, t in tensors if ".experts." in name)
        layers = int(config.num_hidden_layers)
        kv_heads = int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
        head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)
        element = next(self.model.parameters()).element_size()
        return WeightProfile(weight_bytes=int(self.model.get_memory_footprint()),
                             kv_bytes_per_token=2 * layers * kv_heads * head_dim * element,
                             expert_bytes=int(experts), num_experts=int(getattr(config, "num_experts", 0) or 0),
                             experts_per_token=int(getattr(config, "num_experts_per_tok", 0) or 0))

    def plain_tokens(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])

    def vocabulary(self) -> list[str]:
        return [token or "" for token in self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))]

    def token_logprobs(self, tokens: list[int], windows: list[Window], top_k: int,
                       picks: list[tuple[int, ...]] | None = None) -> list[TokenLogprobs]:
        """One forward pass per window (no KV cache kept); log-softmax in float32."""
        import torch

        if not self.loaded:
            raise PlaygroundError("no model is loaded")
        out: list[TokenLogprobs] = []
        with self._generation_lock, torch.inference_mode():
            for window in windows:
                check_prompt_fits(window.end - window.begin, self.context_window + 1)
                ids = torch.tensor([tokens[window.begin:window.end]], device=self.model.device)
                logits = self.model(input_ids=ids, use_cache=False).logits[0]
                # the row before each target predicts it
                rows = logits[window.first_target - window.begin - 1:window.end - window.begin - 1]
                logp = torch.log_softmax(rows.float(), dim=-1)
                targets = torch.tensor(tokens[window.first_target:window.end], device=logp.device)
                target = logp.gather(1, targets[:, None])[:, 0].tolist()
                top_lp, top_id = logp.topk(min(top_k, logp.shape[-1]), dim=-1)
                picked: list[list[float]] = [[] for _ in target]
                if picks is not None:
                    asked = torch.tensor(picks[len(out):len(out) + len(target)], device=logp.device)
                    picked = logp.gather(1, asked).tolist()
                out += [TokenLogprobs(t, tuple(i), tuple(lp), tuple(p))
                        for t, i, lp, p in zip(target, top_id.tolist(), top_lp.tolist(), picked)]
        return out

    # -- generating ------------------------------------------------------------------------
    def render_prompt(self, messages: list[Message], thinking: bool, tools: list[dict[str, Any]] | None = None) -> str:
        """The chat template's text for ``messages`` (and ``tools``) with the hard switch applied."""
        return self.tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True,
                                                  enable_thinking=thinking)

    def encode_prompt(self, messages: list[Message], thinking: bool, tools: list[dict[str, Any]] | None = None
                      ) -> list[int]:
        """Prompt token ids; what users typed never becomes control tokens (core.prompt): the whole
        text at once, or piece by piece when a message holds a reserved token string."""
        tokenizer = self.tokenizer
        reserved = [token.content for token in tokenizer.added_tokens_decoder.values()]
        segments = render_segments(lambda slotted: self.render_prompt(slotted, thinking, tools), messages)
        return encode_segments(
            segments, lambda text: tokenizer(text, add_special_tokens=False)["input_ids"],
            lambda text: tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"], reserved)

    def _generate(self, messages: list[Message], settings: GenerationSettings, thinking: bool,
                  stop: StopSignal, tools: list[dict[str, Any]] | None = None, prefix: str = ""
                  ) -> Iterator[BackendItem]:
        import torch

        from backends.hf_generation import stream_generate

        ids = self.encode_prompt(messages, thinking, tools)
        if prefix:  # the reply so far, as the model wrote it (its markup is markup)
            ids += self.tokenizer(prefix, add_special_tokens=False)["input_ids"]
        input_ids = torch.tensor([ids], device=self.model.device)
        budget = new_token_budget(int(input_ids.shape[1]), settings, self.context_window)
        yield from stream_generate(self.model, self.tokenizer, input_ids, settings, budget, stop, self._prefix_cache)
