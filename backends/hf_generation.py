"""Pieces for streaming ``transformers`` ``generate`` (shared by the transformers and GPTQ backends).

- :class:`PresencePenaltyLogitsProcessor`: transformers has no presence penalty.
- :class:`StopOnSignal`: makes ``generate`` stop at the next token when Stop is pressed.
- :class:`CountingStreamer`: a ``TextIteratorStreamer`` that also counts tokens and times the first.
- :func:`stream_generate`: runs ``generate`` in a thread and yields RawDelta + GenerationStats.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import torch
from transformers import (GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteria,
                          StoppingCriteriaList, TextIteratorStreamer)

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


class CountingStreamer(TextIteratorStreamer):
    """Counts generated tokens and records when the first one arrived."""

    def __init__(self, tokenizer: Any, **kwargs: Any) -> None:
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True, **kwargs)
        self.token_count = 0
        self.first_token_at: float | None = None
        self.last_token_at: float | None = None

    def put(self, value: torch.Tensor) -> None:
        if not self.next_tokens_are_prompt:
            now = time.perf_counter()
            self.first_token_at = self.first_token_at or now
            self.last_token_at = now
            self.token_count += value.numel()
        super().put(value)


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
                    max_new_tokens: int, stop: StopSignal) -> Iterator[BackendItem]:
    """Run ``generate`` in a worker thread; yield its text as it streams, then the stats.

    Closing this iterator does not leave ``generate`` running: the caller's stop signal is set
    by ``Backend.stream_chat`` and :class:`StopOnSignal` ends the loop at the next token.
    """
    started = time.perf_counter()
    prompt_tokens = int(input_ids.shape[1])
    streamer = CountingStreamer(tokenizer)
    config = sampling_config(model.generation_config, settings, max_new_tokens,
                             tokenizer.eos_token_id, tokenizer.pad_token_id or tokenizer.eos_token_id)
    processors = LogitsProcessorList()
    if settings.presence_penalty:
        processors.append(PresencePenaltyLogitsProcessor(settings.presence_penalty, prompt_tokens))
    failure: list[BaseException] = []

    def run() -> None:
        try:
            if settings.seed is not None:
                torch.manual_seed(settings.seed)
            with torch.inference_mode():
                model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                               generation_config=config, logits_processor=processors,
                               stopping_criteria=StoppingCriteriaList([StopOnSignal(stop)]),
                               streamer=streamer)
        except BaseException as exc:  # re-raised in the consumer's thread
            failure.append(exc)
            streamer.end()

    worker = threading.Thread(target=run, name="generate", daemon=True)
    worker.start()
    try:
        for text in streamer:
            if text:
                yield RawDelta(text)
    finally:  # on early close, the stop signal is already set: generate ends at the next token
        worker.join()
    if failure:
        raise failure[0]
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
    )
