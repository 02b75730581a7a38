"""Pieces for streaming ``transformers`` ``generate`` (shared by the transformers and GPTQ backends).

- :class:`PresencePenaltyLogitsProcessor`: transformers has no presence penalty.
- :class:`StopOnSignal`: makes ``generate`` stop at the next token when Stop is pressed.
- :class:`TokenStreamer`: hands each new token id to the consuming thread, counts and times them.
- :class:`IncrementalDecoder`: token ids -> text as soon as it is complete UTF-8 (no word buffering).
- :func:`stream_generate`: runs ``generate`` in a thread and yields RawDelta + GenerationStats.

Streaming costs the generation as little as possible (``python -m bench.speed``): the generate
thread only appends token ids to a C ``SimpleQueue`` (transformers' ``TextIteratorStreamer``
re-decodes every token since the last newline and wakes the consumer through a Python
``Condition`` even for empty text), and the consumer decodes them incrementally with the
tokenizer's Rust ``DecodeStream``, taking whatever tokens are waiting at once when it falls behind.
Text is sent as soon as it is complete, not held back to a word boundary (which delayed the first
token's text until the second was generated).
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from backends.base import StopSignal
from core.events import BackendItem, GenerationStats, RawDelta
from core.settings import GenerationSettings


class PresencePenaltyLogitsProcessor(LogitsProcessor):
    """OpenAI's presence penalty: subtract ``penalty`` once from every token already generated.

    Only tokens generated after the prompt count (not the prompt's own), and a token seen ten
    times is penalised exactly as much as one seen once; unlike ``repetition_penalty`` this is
    additive and independent of the logit's sign.
    """

    def __init__(self, penalty: float, prompt_length: int) -> None:
        self.penalty = float(penalty)
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_length:]
        if self.penalty == 0 or generated.shape[1] == 0:
            return scores
        seen = torch.zeros_like(scores, dtype=torch.bool)
        seen.scatter_(1, generated, True)
        return scores - self.penalty * seen.to(scores.dtype)


class StopOnSignal(StoppingCriteria):
    """Ends ``generate`` at the next token once the stop signal is set."""

    def __init__(self, signal: StopSignal) -> None:
        self.signal = signal

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.signal.is_set(), dtype=torch.bool, device=input_ids.device)


class TokenStreamer(BaseStreamer):
    """Counts generated tokens, times the first and last, and queues their ids for the consumer.

    Runs in the generate thread, so it does the least possible: no decoding, a C queue.
    ``None`` on the queue means the generation is over.
    """

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[list[int] | None] = queue.SimpleQueue()
        self.token_count = 0
        self.first_token_at: float | None = None
        self.last_token_at: float | None = None
        self._prompt = True  # generate's first put is the prompt

    def put(self, value: torch.Tensor) -> None:
        if self._prompt:
            self._prompt = False
            return
        now = time.perf_counter()
        self.first_token_at = self.first_token_at or now
        self.last_token_at = now
        ids = value.reshape(-1).tolist()
        self.token_count += len(ids)
        self.queue.put(ids)

    def end(self) -> None:
        self.queue.put(None)

    def batches(self) -> Iterator[list[int]]:
        """Token ids as they arrive; whatever is already waiting comes as one list."""
        while True:
            ids = self.queue.get()
            if ids is None:
                return
            while True:
                try:
                    more = self.queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    yield ids
                    return
                ids += more
            yield ids


class IncrementalDecoder:
    """Text of a growing token sequence, piece by piece, as ``decode(all ids)`` would give it.

    Uses the tokenizer's Rust ``DecodeStream`` (text as soon as it is complete UTF-8; special
    tokens skipped, added non-special ones such as ``<think>`` kept); a tokenizer without a Rust
    backend falls back to decoding the undelivered ids (fine for byte-level BPE). :meth:`flush`
    returns what an incomplete character at the very end decodes to (as ``decode`` would).
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.pending: list[int] = []  # ids whose text is not out yet
        self._stream: Any = None
        rust = getattr(tokenizer, "_tokenizer", None)
        if rust is not None:
            try:
                from tokenizers.decoders import DecodeStream

                self._stream, self._rust = DecodeStream(skip_special_tokens=True), rust
            except ImportError:
                pass

    def step(self, token: int) -> str:
        self.pending.append(token)
        if self._stream is not None:
            text = self._stream.step(self._rust, token)
        else:
            full = self.tokenizer.decode(self.pending, skip_special_tokens=True)
            text = None if full.endswith("\ufffd") else full
        if not text:
            return ""
        self.pending = []
        return text

    def flush(self) -> str:
        text = self.tokenizer.decode(self.pending, skip_special_tokens=True) if self.pending else ""
        self.pending = []
        return text


class PrefixCache:
    """The KV cache of the previous generation and the token ids it holds.

    A chat's next turn starts with the previous turn's prompt, so that prefix need not be read
    again: the cache is cropped to the longest common prefix and ``generate`` only processes the
    rest (like llama.cpp's prompt-prefix reuse). Owned by one backend; used under its lock.
    """

    def __init__(self) -> None:
        self.cache: Any = None
        self.ids: list[int] = []

    def take(self, model: Any, input_ids: list[int]) -> tuple[Any, int]:
        """A cache holding the longest reusable prefix of ``input_ids``, and that prefix's length."""
        from transformers import DynamicCache

        common = 0
        for a, b in zip(self.ids, input_ids):
            if a != b:
                break
            common += 1
        common = min(common, len(input_ids) - 1)  # generate needs at least one new token to read
        if self.cache is None or common == 0:
            self.cache, self.ids = DynamicCache(config=model.config), []
            return self.cache, 0
        held = self.cache.get_seq_length()
        if held > common:
            self.cache.crop(common - held)
        self.ids = self.ids[:common]
        return self.cache, common

    def store(self, sequence: list[int]) -> None:
        self.ids = sequence[: self.cache.get_seq_length()] if self.cache is not None else []

    def clear(self) -> None:
        self.cache, self.ids = None, []


def sampling_config(base: GenerationConfig, settings: GenerationSettings, max_new_tokens: int,
                    eos_token_id: Any, pad_token_id: Any) -> GenerationConfig:
    """A copy of the model's generation config with every sampling value set explicitly.

    The checkpoint's own defaults (e.g. ``do_sample: true`` written by quantizers) never leak in.
    """
    config = GenerationConfig.from_dict(base.to_dict())
    sampled = not settings.greedy
    config.update(
        do_sample=sampled,
        temperature=settings.temperature if sampled else None,
        top_p=settings.top_p if sampled else None,
        top_k=settings.top_k if sampled else None,
        min_p=(settings.min_p or None) if sampled else None,
        max_new_tokens=max_new_tokens,
        repetition_penalty=None,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
    )
    return config


def stream_generate(model: Any, tokenizer: Any, input_ids: torch.Tensor, settings: GenerationSettings,
                    max_new_tokens: int, stop: StopSignal,
                    prefix_cache: PrefixCache | None = None) -> Iterator[BackendItem]:
    """Run ``generate`` in a worker thread; yield its text as it streams, then the stats.

    Closing this iterator does not leave ``generate`` running: the caller's stop signal is set
    by ``Backend.stream_chat`` and :class:`StopOnSignal` ends the loop at the next token.
    """
    started = time.perf_counter()
    prompt_tokens = int(input_ids.shape[1])
    streamer = TokenStreamer()
    decoder = IncrementalDecoder(tokenizer)
    config = sampling_config(model.generation_config, settings, max_new_tokens,
                             tokenizer.eos_token_id, tokenizer.pad_token_id or tokenizer.eos_token_id)
    processors = LogitsProcessorList()
    if settings.presence_penalty:
        processors.append(PresencePenaltyLogitsProcessor(settings.presence_penalty, prompt_tokens))
    failure: list[BaseException] = []
    cache, reused = prefix_cache.take(model, input_ids[0].tolist()) if prefix_cache else (None, 0)

    def run() -> None:
        try:
            if settings.seed is not None:
                torch.manual_seed(settings.seed)
            with torch.inference_mode():
                sequences = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                           generation_config=config, logits_processor=processors,
                                           stopping_criteria=StoppingCriteriaList([StopOnSignal(stop)]),
                                           streamer=streamer, past_key_values=cache)
            if prefix_cache:
                prefix_cache.store(sequences[0].tolist())
        except BaseException as exc:  # re-raised in the consumer's thread
            if prefix_cache:
                prefix_cache.clear()
            failure.append(exc)
            streamer.end()

    worker = threading.Thread(target=run, name="generate", daemon=True)
    worker.start()
    try:
        for ids in streamer.batches():
            text = "".join([decoder.step(token) for token in ids])
            if text:
                yield RawDelta(text)
    finally:  # on early close, the stop signal is already set: generate ends at the next token
        worker.join()
    if failure:
        raise failure[0]
    tail = decoder.flush()
    if tail:
        yield RawDelta(tail)
    ended = time.perf_counter()
    n = streamer.token_count
    decode_s = (streamer.last_token_at or ended) - (streamer.first_token_at or ended)
    yield GenerationStats(
        prompt_tokens=prompt_tokens,
        completion_tokens=n,
        ttft_s=(streamer.first_token_at - started) if streamer.first_token_at else None,
        tokens_per_s=(n - 1) / decode_s if n > 1 and decode_s > 0 else None,
        total_s=ended - started,
        finish_reason="cancelled" if stop.is_set() else ("length" if n >= max_new_tokens else "stop"),
        cached_prompt_tokens=reused,
    )
