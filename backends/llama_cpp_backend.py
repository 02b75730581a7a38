"""llama.cpp backend (llama-cpp-python): GGUF files, local or from a Hub repo.

- **YaRN** exactly as llama-server's ``--rope-scaling yarn --rope-scale F --yarn-orig-ctx 32768``:
  rope scaling type YaRN, rope frequency scale 1/F and YaRN original context 32768 (always
  passed: Qwen3 GGUFs declare a trained context of 40960, which llama.cpp would otherwise use).
  Factor 1 passes no rope parameters at all, leaving the model's defaults.
- **Context window**: 32768 x F tokens, capped by ``LoadOptions.context_length`` and by memory
  (the f16 KV cache, estimated from the GGUF header, stays under half of the available RAM).
- **Prompt**: rendered with the GGUF's own chat template (``tokenizer.chat_template``, Jinja2,
  with ``enable_thinking``) or the project's Qwen3 template when the file has none, then
  tokenized with control tokens parsed only in the template's own text (what users type stays
  plain text: ``core.prompt``), and generated token by token with our sampling
  (llama-cpp-python's defaults are not Qwen's); Stop is checked at every token and ends
  llama.cpp's loop.
- **KV cache reuse**: the same ``Llama`` object keeps the previous prompt + reply in its KV cache;
  llama-cpp-python re-evaluates only the part of the new prompt after the longest common prefix.
  In a chat that is the whole history up to the last reply; ``cached_prompt_tokens`` reports it.
- Flash attention is on: on CPU it produces the same tokens and cuts llama.cpp's compute buffer
  ~10x at long contexts (1.3 GB -> 130 MB for the tiny model at 131k tokens).
"""
from __future__ import annotations

import atexit
import codecs
import os
import random
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from backends.base import Backend, LoadOptions, ModelInfo, StopSignal, check_prompt_fits, new_token_budget
from backends.gguf_meta import GGUFHeader, read_header
from backends.hub import fetch_model, repo_files
from core.catalog import ModelSpec
from core.chat import Message
from core.drift import TokenLogprobs, Window
from core.errors import ModelLoadError, ModelNotFound, PlaygroundError, PromptError
from core.events import BackendItem, GenerationStats, Perplexity, ProgressFn, RawDelta
from core.prompt import encode_segments, plain_pieces, render_segments
from core.settings import GenerationSettings
from core.speed_bound import WeightProfile
from core.yarn import ORIGINAL_CONTEXT, context_window, validate_factor

MEMORY_FRACTION = 0.5  # the KV cache may take at most this share of the available RAM
MIN_CONTEXT = 512
CONTEXT_STEP = 256  # llama.cpp pads the context to a multiple of 256
PREFERRED_QUANTS = ("Q4_K_M", "Q8_0")  # picked in that order from a GGUF repo given without file

_LIVE: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """Free llama.cpp models before interpreter shutdown (``Llama.__del__`` fails that late)."""
    for backend in list(_LIVE):
        backend.unload()


def file_type_name(file_type: Any) -> str | None:
    """``general.file_type`` (an integer) as llama.cpp names it: 7 -> "Q8_0", 15 -> "Q4_K_M"."""
    if file_type is None:
        return None
    try:
        import gguf

        name = gguf.LlamaFileType(int(file_type)).name
    except (ValueError, TypeError, ImportError):
        return f"file type {file_type}"
    return {"ALL_F32": "F32"}.get(name, name.removeprefix("MOSTLY_"))


def available_memory() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def plan_context(factor: float, cap: int | None, kv_bytes_per_token: int,
                 memory_available: int) -> tuple[int, str | None]:
    """(n_ctx, why it was lowered or None): 32768 x factor, capped by the user and by memory."""
    wanted = context_window(factor)
    n_ctx, reason = wanted, None
    if cap is not None and cap < n_ctx:
        n_ctx, reason = cap, f"context capped at {cap:,} tokens by the context-length setting"
    if kv_bytes_per_token > 0:
        budget = int(memory_available * MEMORY_FRACTION)
        fits = budget // kv_bytes_per_token // CONTEXT_STEP * CONTEXT_STEP
        if fits < n_ctx:
            if fits < MIN_CONTEXT:
                raise ModelLoadError(
                    f"not enough memory for the KV cache: {MIN_CONTEXT} tokens need "
                    f"{MIN_CONTEXT * kv_bytes_per_token / 2**20:,.0f} MiB, but half of the available "
                    f"RAM is {budget / 2**20:,.0f} MiB"
                )
            n_ctx = fits
            reason = (f"context lowered from {wanted:,} to {fits:,} tokens so that the KV cache "
                      f"({fits * kv_bytes_per_token / 2**20:,.0f} MiB) stays under half of the "
                      f"available RAM")
    return max(MIN_CONTEXT, n_ctx), reason


def rope_kwargs(factor: float) -> dict[str, Any]:
    """llama-cpp-python's ``Llama(...)`` arguments for YaRN; empty for factor 1."""
    import llama_cpp

    factor = validate_factor(factor)
    if factor == 1.0:
        return {}
    return {"rope_scaling_type": llama_cpp.LLAMA_ROPE_SCALING_TYPE_YARN,
            "rope_freq_scale": 1.0 / factor, "yarn_orig_ctx": ORIGINAL_CONTEXT}


def _pick_repo_file(spec: ModelSpec) -> ModelSpec:
    """A GGUF repo given without a file: choose one quantization (Q4_K_M, else Q8_0, else first)."""
    ggufs = sorted(f for f in repo_files(spec.source) if f.lower().endswith(".gguf"))
    if not ggufs:
        raise ModelNotFound(f"cannot list the GGUF files of {spec.source} (offline?): name one, e.g. "
                            f"--model {spec.source}/<file>.gguf, or use a catalog entry")
    for quant in PREFERRED_QUANTS:
        for f in ggufs:
            if f.upper().endswith(f"{quant}.GGUF") and "-of-" not in f:
                return ModelSpec(**{**spec.to_dict(), "filename": f})
    return ModelSpec(**{**spec.to_dict(), "filename": ggufs[0]})


def _gguf_path(spec: ModelSpec, progress: ProgressFn | None) -> Path:
    if not spec.is_tiny and not spec.is_local_path and spec.filename is None:
        spec = _pick_repo_file(spec)
    path = fetch_model(spec, progress)
    if path.is_dir():
        files = sorted(path.glob("*.gguf"))
        if len(files) != 1:
            raise ModelLoadError(f"{path} is a folder with {len(files)} .gguf files: name the file to load")
        path = files[0]
    return path


class LlamaCppBackend(Backend):
    name = "llama.cpp"
    continues_replies = True

    def __init__(self) -> None:
        super().__init__()
        self.llm: Any = None
        self.path: Path | None = None
        self.header: GGUFHeader | None = None
        self.template: str = ""
        self._template_source = ""
        self._formatter: Any = None
        self._reserved: list[str] = []  # control / user-defined token texts (<|im_end|>, <think>...)
        self._context_note: str | None = None
        self._gpu_layers = 0
        self._pieces: dict[int, bytes | None] = {}  # token -> its bytes, None = end of generation
        self.load_s = 0.0
        _LIVE.add(self)

    # -- loading ---------------------------------------------------------------------------
    def load(self, spec: ModelSpec, options: LoadOptions = LoadOptions(),
             progress: ProgressFn | None = None) -> None:
        options.validate()
        report = progress or (lambda fraction, message: None)
        started = time.perf_counter()
        path = _gguf_path(spec, progress)
        header = read_header(path)  # clear errors for non-GGUF and truncated files
        n_ctx, note = plan_context(options.yarn_factor, options.context_length,
                                   header.kv_bytes_per_token(), available_memory())
        report(0.8, f"Loading {spec.name} with llama.cpp (context {n_ctx:,} tokens)")
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        gpu_layers = 0
        if options.device != "cpu" and llama_cpp.llama_supports_gpu_offload():
            gpu_layers = -1  # a CUDA/Metal build: offload every layer
        threads = options.threads
        try:
            llm = llama_cpp.Llama(
                str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                n_gpu_layers=gpu_layers, flash_attn=True, verbose=bool(os.environ.get("QWEN3_PLAYGROUND_VERBOSE")),
                **rope_kwargs(options.yarn_factor),
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadError(f"llama.cpp could not load {path.name}: {exc} (architecture "
                                 f"{header.architecture or 'unknown'}; an older llama-cpp-python may "
                                 "not know it)") from exc
        template = llm.metadata.get("tokenizer.chat_template")
        source = "gguf"
        if not template:
            from core.qwen3_template import QWEN3_CHAT_TEMPLATE

            template, source = QWEN3_CHAT_TEMPLATE, "qwen3 (project)"
        model = llm._model
        bos = model.token_bos()
        eos = model.token_eos()
        try:
            formatter = Jinja2ChatFormatter(
                template, eos_token=model.token_get_text(eos) if eos >= 0 else "",
                bos_token=model.token_get_text(bos) if bos >= 0 else "")
        except Exception as exc:  # a template Jinja2 cannot compile
            llm.close()
            raise ModelLoadError(f"the chat template in {path.name} is not valid Jinja2: {exc}") from exc
        self.unload()
        self.llm, self.path, self.header = llm, path, header
        self.template, self._template_source, self._formatter = template, source, formatter
        markup = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
        self._reserved = [model.token_get_text(t) for t in range(model.n_vocab())
                          if model.token_get_attr(t) & markup and model.token_get_text(t)]
        self._context_note, self._gpu_layers = note, gpu_layers
        self.spec, self.options = spec, options
        self.load_s = time.perf_counter() - started
        report(1.0, f"{spec.name} ready")

    def unload(self) -> None:
        if self.llm is not None:
            self.llm.close()
        self.llm = None
        self.spec = None
        self._formatter = None
        self._pieces = {}

    def _is_eog(self, token: int) -> bool:
        """End of generation: <|im_end|>, <|endoftext|> ... as the GGUF's vocabulary says."""
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_eog(self.llm._model.vocab, token))

    def _piece(self, token: int) -> bytes | None:
        """The bytes ``token`` stands for (special ones as b""), or None if it ends the generation.

        Cached per model: two ctypes round trips per generated token were a measurable share of a
        small model's decode step (``python -m bench.speed``).
        """
        try:
            return self._pieces[token]
        except KeyError:
            piece = None if self._is_eog(token) else self.llm.detokenize([token], special=False)
            self._pieces[token] = piece
            return piece

    # -- describing ------------------------------------------------------------------------
    @property
    def context_window(self) -> int:
        return int(self.llm.n_ctx())

    def rope_settings(self) -> dict[str, Any]:
        """What llama.cpp's context was created with, read back from it."""
        import llama_cpp

        params = self.llm.context_params
        scaling = {llama_cpp.LLAMA_ROPE_SCALING_TYPE_YARN: "yarn",
                   llama_cpp.LLAMA_ROPE_SCALING_TYPE_LINEAR: "linear",
                   llama_cpp.LLAMA_ROPE_SCALING_TYPE_NONE: "none"}.get(params.rope_scaling_type, "model default")
        return {
            "rope_scaling_type": scaling,
            "rope_freq_scale": float(params.rope_freq_scale) or None,  # 0 = the model's own
            "yarn_orig_ctx": int(params.yarn_orig_ctx) or None,  # 0 = the model's trained context
            "n_ctx": int(llama_cpp.llama_n_ctx(self.llm.ctx)),
            "n_ctx_train": int(self.llm._model.n_ctx_train()),
            "rope_freq_base": float(self.header.arch_value("rope.freq_base", 0) or 0) if self.header else None,
        }

    def describe(self) -> ModelInfo:
        if not self.loaded:
            raise PlaygroundError("no model is loaded")
        header = self.header
        quant = file_type_name(header.metadata.get("general.file_type")) if header else None
        rope = self.rope_settings()
        kv_bytes = self.context_window * (header.kv_bytes_per_token() if header else 0)
        model_bytes = int(self.llm._model.size())
        factor = self.options.yarn_factor
        notes = [self._context_note] if self._context_note else []
        return ModelInfo(
            backend=self.name,
            model=self.spec.name,
            source=(self.spec.source if self.spec.is_tiny or self.spec.is_local_path
                    else f"{self.spec.source}/{self.path.name}"),  # the Hub file actually loaded
            format="gguf",
            quantization=quant,
            dtype=quant or "gguf",
            device="gpu" if self._gpu_layers else "cpu",
            memory_bytes=model_bytes + kv_bytes,
            context_window=self.context_window,
            rope_scaling=({"rope_type": "yarn", "factor": factor,
                           "original_max_position_embeddings": rope["yarn_orig_ctx"],
                           "rope_freq_scale": rope["rope_freq_scale"]} if factor != 1.0 else None),
            notes=notes,
            details={
                "file": str(self.path), "file_size": self.path.stat().st_size,
                "architecture": header.architecture if header else None,
                "model_bytes": model_bytes, "kv_cache_bytes": kv_bytes,
                "chat_template": self._template_source, "rope": rope,
                "gpu_layers": self._gpu_layers, "threads": self.options.threads,
                "load_s": round(self.load_s, 3),
            },
        )

    # -- scoring ---------------------------------------------------------------------------
    def _plain_tokens(self, text: str) -> list[int]:
        """Plain text: special-token spellings in it stay ordinary text (split_special_tokens).

        llama.cpp matches user-defined tokens (``<think>``) even without ``special``, so the text
        is first cut inside every reserved spelling (``core.prompt.plain_pieces``).
        """
        ids: list[int] = []
        for piece in plain_pieces(text, self._reserved):
            ids += self.llm.tokenize(piece.encode("utf-8"), add_bos=False, special=False)
        return ids

    def count_tokens(self, text: str) -> int | None:
        return len(self._plain_tokens(text)) if self.llm is not None else None

    def perplexity(self, text: str) -> Perplexity:
        """exp(mean NLL) of ``text`` (plain, no template), first token not predicted.

        Decodes with logits for every position; the chat KV cache is dropped afterwards.
        """
        import math

        import numpy as np

        if not self.loaded:
            raise PlaygroundError("no model is loaded")
        ids = self._plain_tokens(text)
        n = len(ids)
        if n < 2:
            raise PromptError("the text to score needs at least two tokens")
        check_prompt_fits(n, self.context_window + 1)
        with self._generation_lock:
            llm = self.llm
            llm.reset()
            llm._ctx.kv_cache_seq_rm(-1, 0, -1)
            n_vocab = llm.n_vocab()
            total = 0.0
            try:
                for start in range(0, n, llm.n_batch):
                    chunk = ids[start:start + llm.n_batch]
                    llm._batch.set_batch(batch=chunk, n_past=start, logits_all=True)
                    llm._ctx.decode(llm._batch)
                    logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(len(chunk), n_vocab))
                    for row in range(len(chunk)):
                        target = start + row + 1
                        if target >= n:
                            break
                        x = logits[row].astype(np.float64)
                        peak = x.max()
                        total += float(peak + math.log(np.exp(x - peak).sum()) - x[ids[target]])
            finally:
                llm.reset()  # the KV cache now holds the scored text, not the chat
                llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        mean = total / (n - 1)
        return Perplexity(perplexity=math.exp(mean), tokens=n - 1, mean_nll=mean)

    def weight_profile(self) -> WeightProfile | None:
        """llama.cpp's tensor bytes; the f16 KV cache from the header; MoE experts (``*_exps``
        tensors) from the file's tensor table."""
        if not self.loaded or self.header is None:
            return None
        experts = int(self.header.arch_value("expert_count", 0) or 0)
        expert_bytes = 0
        if experts:
            import gguf

            expert_bytes = sum(int(t.n_bytes) for t in gguf.GGUFReader(str(self.path)).tensors if "_exps" in t.name)
        return WeightProfile(weight_bytes=int(self.llm._model.size()),
                             kv_bytes_per_token=self.header.kv_bytes_per_token(), expert_bytes=expert_bytes,
                             num_experts=experts,
                             experts_per_token=int(self.header.arch_value("expert_used_count", 0) or 0))

    def plain_tokens(self, text: str) -> list[int]:
        return self._plain_tokens(text)

    def vocabulary(self) -> list[str]:
        model = self.llm._model
        return [model.token_get_text(token) for token in range(model.n_vocab())]

    def token_logprobs(self, tokens: list[int], windows: list[Window], top_k: int,
                       picks: list[tuple[int, ...]] | None = None) -> list[TokenLogprobs]:
        """Each window decoded from an empty KV cache with logits for every position (as
        :meth:`perplexity`); rows reduced 64 at a time, so a chunk's float32 logits are the peak."""
        import numpy as np

        if not self.loaded:
            raise PlaygroundError("no model is loaded")
        out: list[TokenLogprobs] = []
        with self._generation_lock:
            llm = self.llm
            n_vocab = llm.n_vocab()
            k = min(top_k, n_vocab)
            try:
                for window in windows:
                    check_prompt_fits(window.end - window.begin, self.context_window + 1)
                    llm.reset()
                    llm._ctx.kv_cache_seq_rm(-1, 0, -1)
                    for start in range(window.begin, window.end, llm.n_batch):
                        chunk = tokens[start:min(start + llm.n_batch, window.end)]
                        llm._batch.set_batch(batch=chunk, n_past=start - window.begin, logits_all=True)
                        llm._ctx.decode(llm._batch)
                        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(len(chunk), n_vocab))
                        # row r predicts token start + r + 1: keep the window's targets only
                        first = max(window.first_target - 1 - start, 0)
                        last = min(window.end - 1 - start, len(chunk))
                        for block in range(first, last, 64):
                            rows = logits[block:min(block + 64, last)].astype(np.float32)
                            logp = rows - rows.max(axis=1, keepdims=True)
                            logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
                            at = np.arange(len(rows))
                            targets = np.asarray(tokens[start + block + 1:start + block + 1 + len(rows)])
                            top = np.argpartition(-logp, k - 1, axis=1)[:, :k] if k < n_vocab else \
                                np.tile(np.arange(n_vocab), (len(rows), 1))
                            top = np.take_along_axis(top, np.argsort(-np.take_along_axis(logp, top, 1), axis=1,
                                                                     kind="stable"), 1)
                            for r in at:
                                picked = ()
                                if picks is not None:
                                    picked = tuple(logp[r, list(picks[len(out)])].tolist())
                                out.append(TokenLogprobs(float(logp[r, targets[r]]), tuple(top[r].tolist()),
                                                         tuple(logp[r, top[r]].tolist()), picked))
            finally:
                llm.reset()  # the KV cache now holds the scored text, not the chat
                llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        return out

    # -- generating ------------------------------------------------------------------------
    def render_prompt(self, messages: list[Message], thinking: bool, tools: list[dict[str, Any]] | None = None) -> str:
        """The chat template's text for ``messages`` (and ``tools``) with the hard switch applied."""
        try:
            return self._formatter(messages=messages, tools=tools, enable_thinking=thinking).prompt
        except Exception as exc:
            raise PromptError(f"the model's chat template failed on this conversation: {exc}") from exc

    def tokenize(self, text: str) -> list[int]:
        """Template text: control tokens parsed. The template already wrote any BOS it wants."""
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def encode_prompt(self, messages: list[Message], thinking: bool, tools: list[dict[str, Any]] | None = None
                      ) -> list[int]:
        """Prompt ids with markup only where the template put it (no role injection)."""
        return encode_segments(
            render_segments(lambda slotted: self.render_prompt(slotted, thinking, tools), messages),
            self.tokenize, self._plain_tokens, self._reserved)

    def reusable_prefix(self, tokens: list[int]) -> int:
        """Prompt tokens llama-cpp-python will take from the KV cache (its own rule in ``generate``)."""
        llm = self.llm
        n = int(llm.n_tokens)
        if n == 0 or not tokens:
            return 0
        cached = llm.input_ids[:n]
        common = 0
        for a, b in zip(cached, tokens):
            if a != b:
                break
            common += 1
        if common == len(tokens):
            if n == len(tokens) and not llm._requires_eval:
                return common  # the exact prompt again: sampled straight away
            return common - 1  # one token is replayed to refresh the logits
        return common

    def _generate(self, messages: list[Message], settings: GenerationSettings, thinking: bool,
                  stop: StopSignal, tools: list[dict[str, Any]] | None = None, prefix: str = ""
                  ) -> Iterator[BackendItem]:
        llm = self.llm
        started = time.perf_counter()
        tokens = self.encode_prompt(messages, thinking, tools)
        if prefix:  # the reply so far, as the model wrote it (its markup is markup)
            tokens += self.tokenize(prefix)
        budget = new_token_budget(len(tokens), settings, self.context_window)
        cached = self.reusable_prefix(tokens)
        llm.set_seed(settings.seed if settings.seed is not None else random.SystemRandom().randrange(2**31))
        # Presence penalty over every generated token (llama.cpp's window is last_n tokens; the
        # prompt never counts, as in the transformers backend).
        llm.last_n_tokens_size = budget
        greedy = settings.greedy
        sampling = dict(
            temp=0.0 if greedy else settings.temperature,
            top_k=settings.top_k,  # 0 = off in llama.cpp too
            top_p=settings.top_p,
            min_p=settings.min_p,
            typical_p=1.0,
            repeat_penalty=1.0,
            frequency_penalty=0.0,
            presence_penalty=settings.presence_penalty,
        )
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        n = 0
        first_at = last_at = None
        finish = "stop"
        stream = llm.generate(tokens, **sampling)
        try:
            for token in stream:
                if stop.is_set():
                    finish = "cancelled"
                    break
                piece = self._piece(token)
                if piece is None:  # end of generation
                    break
                now = time.perf_counter()
                first_at = first_at or now
                last_at = now
                n += 1
                text = decoder.decode(piece)
                if text:
                    yield RawDelta(text)
                if stop.is_set():
                    finish = "cancelled"
                    break
                if n >= budget:
                    finish = "length"
                    break
        finally:
            stream.close()  # ends llama.cpp's loop (no further decode)
        tail = decoder.decode(b"", final=True)
        if tail:
            yield RawDelta(tail)
        ended = time.perf_counter()
        decode_s = (last_at or ended) - (first_at or ended)
        yield GenerationStats(
            prompt_tokens=len(tokens),
            completion_tokens=n,
            ttft_s=(first_at - started) if first_at else None,
            tokens_per_s=(n - 1) / decode_s if n > 1 and decode_s > 0 else None,
            total_s=ended - started,
            finish_reason=finish,  # type: ignore[arg-type]
            cached_prompt_tokens=cached,
        )
