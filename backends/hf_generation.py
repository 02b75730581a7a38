"""Pieces for streaming ``transformers`` ``generate`` (shared by the transformers and GPTQ backends).

- :class:`PresencePenaltyLogitsProcessor`: transformers has no presence penalty.
- :class:`SeededSampler`: sampling with a per-request ``torch.Generator`` (never the global RNG).
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

Sampling never touches torch's process-wide RNG: ``generate`` (which has no ``generator``
argument) runs greedy, and :class:`SeededSampler`, the last logits processor, applies
transformers' own sampling warpers and draws the token with the request's own generator, seeded
from ``settings.seed`` (or a fresh random seed). Two models generating at once (the Compare tab)
therefore cannot reseed each other, and a seed gives the same tokens whatever else runs.
"""
from __future__ import annotations

import inspect
import queue
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
from transformers.generation.logits_process import (MinPLogitsWarper, TemperatureLogitsWarper, TopKLogitsWarper,
                                                    TopPLogitsWarper)
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


class SeededSampler(LogitsProcessor):
    """Multinomial sampling with the request's own ``torch.Generator``; put it last.

    Applies transformers' sampling warpers exactly as ``generate(do_sample=True)`` builds them
    (temperature, top-k, top-p, min-p, in that order, each only when it changes something), then
    draws one token per row with ``torch.multinomial(softmax(scores), 1, generator=...)`` (the
    same draw as transformers' sampling loop, so a seed gives the tokens ``torch.manual_seed``
    used to) and returns scores that are -inf everywhere but the drawn token, which greedy
    decoding then picks. Per token this adds only a fill, a scatter and greedy's argmax over the
    vocabulary to what transformers' own sampling does.
    """

    def __init__(self, settings: GenerationSettings, generator: torch.Generator) -> None:
        if settings.greedy:
            raise ValueError("SeededSampler is for sampled requests (temperature > 0)")
        self.generator = generator
        self.warpers: list[LogitsProcessor] = []
        if settings.temperature != 1.0:
            self.warpers.append(TemperatureLogitsWarper(settings.temperature))
        if settings.top_k:
            self.warpers.append(TopKLogitsWarper(top_k=settings.top_k))
        if settings.top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p=settings.top_p))
        if settings.min_p:
            self.warpers.append(MinPLogitsWarper(min_p=settings.min_p))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for warper in self.warpers:
            scores = warper(input_ids, scores)
        tokens = torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=self.generator)
        return torch.full_like(scores, float("-inf")).scatter_(1, tokens, 0.0)


# ``LogitsProcessorList`` calls ``inspect.signature`` on every processor at every token (~35 us
# here); a ``__signature__`` set once makes that ~10 us.
for _processor in (PresencePenaltyLogitsProcessor, SeededSampler):
    _processor.__call__.__signature__ = inspect.signature(_processor.__call__)


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


_SYSTEM_RANDOM = random.SystemRandom()


def request_seed(settings: GenerationSettings) -> int:
    """``settings.seed``, or a fresh random one (in the seed setting's range, 0 to 2**32 - 1)."""
    return settings.seed if settings.seed is not None else _SYSTEM_RANDOM.getrandbits(32)


def sampling_config(max_new_tokens: int, eos_token_id: Any, pad_token_id: Any) -> GenerationConfig:
    """The generation config of every request: greedy, since :class:`SeededSampler` samples.

    A new small config, not a copy of the model's (``to_dict``/``from_dict`` cost ~0.35 ms, with
    ``from_dict`` logging its whole repr): ``generate`` itself fills what is unset here from
    ``model.generation_config``, and with ``do_sample=False`` none of the checkpoint's sampling
    defaults (``do_sample: true``, temperature, top-k/p written by quantizers) apply.
    ``repetition_penalty`` is set to 1 (off), not left unset, so a checkpoint's never applies; the
    sampling values are set to transformers' neutral defaults so that ``generate`` does not fill
    in the checkpoint's and then warn that greedy decoding ignores them.
    """
    return GenerationConfig(do_sample=False, temperature=1.0, top_p=1.0, top_k=50, repetition_penalty=1.0,
                            max_new_tokens=max_new_tokens, eos_token_id=eos_token_id, pad_token_id=pad_token_id)


def logits_processors(settings: GenerationSettings, prompt_tokens: int, device: Any) -> LogitsProcessorList:
    """Presence penalty (if any), then for a sampled request the :class:`SeededSampler` last."""
    processors = LogitsProcessorList()
    if settings.presence_penalty:
        processors.append(PresencePenaltyLogitsProcessor(settings.presence_penalty, prompt_tokens))
    if not settings.greedy:
        generator = torch.Generator(device=device)
        generator.manual_seed(request_seed(settings))
        processors.append(SeededSampler(settings, generator))
    return processors


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
    config = sampling_config(max_new_tokens, tokenizer.eos_token_id, tokenizer.pad_token_id or tokenizer.eos_token_id)
    processors = logits_processors(settings, prompt_tokens, input_ids.device)
    failure: list[BaseException] = []
    cache, reused = prefix_cache.take(model, input_ids[0].tolist()) if prefix_cache else (None, 0)

    def run() -> None:
        try:
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
