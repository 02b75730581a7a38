"""Pieces behind ``python -m bench.speed`` and its fixes (nothing here measures time).

- the transformers streaming path: token ids handed over raw, decoded incrementally exactly as
  ``decode(all ids)`` would, no word buffering;
- the per-token checks of the llama.cpp path (StopSignal);
- on-request tiny-model formats (the random-weight 0.6B-shaped ones) stay out of default builds;
- the GGUF writer pads a vocabulary larger than the tokenizer;
- the benchmark's report renders.
"""
from __future__ import annotations

import argparse
import threading

import pytest
import torch

from backends.base import StopSignal
from backends.hf_generation import IncrementalDecoder, TokenStreamer
from tinymodels.script import CASES
from tinymodels.tokenizer import train_tokenizer

MIXED_TEXT = "héllo wörld 日本語 🎉 <think>x</think> la la\nnext line"


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer()


def _stream(decoder: IncrementalDecoder, ids: list[int]) -> list[str]:
    pieces = [decoder.step(i) for i in ids]
    return pieces + [decoder.flush()]


@pytest.mark.parametrize("rust", [True, False], ids=["DecodeStream", "fallback"])
def test_incremental_decoding_matches_decode(tokenizer, rust):
    texts = [c.target for c in CASES] + [MIXED_TEXT]
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        decoder = IncrementalDecoder(tokenizer)
        if not rust:
            decoder._stream = None
        pieces = _stream(decoder, ids)
        assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=True), text
        assert not any("\ufffd" in p for p in pieces)  # partial characters are held back, not mangled


def test_first_token_text_is_not_held_back_to_a_word_boundary(tokenizer):
    ids = tokenizer("la la la", add_special_tokens=False)["input_ids"]
    decoder = IncrementalDecoder(tokenizer)
    assert decoder.step(ids[0]) == tokenizer.decode(ids[:1])  # TextIteratorStreamer waited for a space


def test_an_incomplete_character_at_the_end_is_flushed_as_decode_does(tokenizer):
    ids = tokenizer("🎉", add_special_tokens=False)["input_ids"]
    assert len(ids) > 1
    decoder = IncrementalDecoder(tokenizer)
    assert [decoder.step(i) for i in ids[:-1]] == [""] * (len(ids) - 1)
    assert decoder.flush() == tokenizer.decode(ids[:-1], skip_special_tokens=True)


def test_token_streamer_skips_the_prompt_counts_and_drains(tokenizer):
    streamer = TokenStreamer()
    streamer.put(torch.tensor([[1, 2, 3]]))  # generate's first put: the prompt
    assert streamer.token_count == 0 and streamer.queue.empty()
    for token in (5, 6, 7):
        streamer.put(torch.tensor([token]))
    streamer.end()
    assert streamer.token_count == 3 and streamer.first_token_at <= streamer.last_token_at
    assert list(streamer.batches()) == [[5, 6, 7]]  # what waits is taken at once


def test_token_streamer_hands_over_across_threads():
    streamer = TokenStreamer()
    streamer.put(torch.tensor([[0]]))

    def produce() -> None:
        for token in range(50):
            streamer.put(torch.tensor([token]))
        streamer.end()

    worker = threading.Thread(target=produce)
    worker.start()
    got = [token for batch in streamer.batches() for token in batch]
    worker.join()
    assert got == list(range(50))


def test_stop_signal():
    a, b = threading.Event(), threading.Event()
    signal = StopSignal(a, None, b)
    assert not signal.is_set()
    b.set()
    assert signal.is_set()
    assert not StopSignal().is_set()


def test_on_request_formats_stay_out_of_default_builds(monkeypatch):
    import cli
    import tinymodels
    from tinymodels.random_size import format_name
    from tinymodels.registry import FORMATS, default_formats

    on_request = {name for name, spec in FORMATS.items() if spec.on_request}
    assert {format_name("bf16"), format_name("fp8"), format_name("gguf-q8_0")} <= on_request
    assert {"bf16", "fp8", "gguf-q8_0"} <= set(default_formats())
    assert not on_request & set(default_formats())

    built: list[list[str]] = []
    monkeypatch.setattr(tinymodels, "build", lambda formats, **kw: built.append(list(formats)) or {})
    cli.cmd_build_tiny(argparse.Namespace(formats=None, force=False))
    cli.cmd_build_tiny(argparse.Namespace(formats=[format_name("gguf-q8_0")], force=False))
    assert built == [default_formats(), [format_name("gguf-q8_0")]]


def test_random_models_can_only_emit_whole_ordinary_tokens(tokenizer):
    from tinymodels.random_size import emittable_ids

    ids = emittable_ids(tokenizer)
    assert 100 < len(ids) < len(tokenizer)
    assert not set(ids) & set(tokenizer.added_tokens_decoder)  # no <|im_end|>, no <think>
    assert all("\ufffd" not in tokenizer.decode([i]) for i in ids)


def test_gguf_vocabulary_is_padded_only_when_asked(tokenizer, tmp_path):
    import json

    import gguf

    from tinymodels.gguf import _vocab

    tokenizer.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "tokenizer.json").read_text())
    size = len(tokenizer) + 3
    with pytest.raises(ValueError):
        _vocab(data, size)
    tokens, types, _, special = _vocab(data, size, pad=True)
    assert len(tokens) == size and tokens[-1] == f"[PAD{size - 1}]"
    assert types[-3:] == [int(gguf.TokenType.UNUSED)] * 3
    assert special["<|im_end|>"] == tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_benchmark_report_renders():
    from bench.speed import markdown

    result = {
        "model": "tiny-bf16", "backend": "transformers", "bare_path": "model.generate", "max_new_tokens": 8,
        "playground_tokens_per_s": 99.0, "bare_tokens_per_s": 100.0, "ratio": 0.99, "playground_ttft_ms": 3.0,
        "bare_ttft_ms": 2.0, "ttft_delta_ms": 1.0, "meets_targets": True, "same_output": True,
        "multi_turn": {"turns": 8, "words_per_turn": 10, "reuse": [
            {"turn": 1, "prompt_tokens": 10, "cached_prompt_tokens": 0, "first_text_s": 0.01},
            {"turn": 8, "prompt_tokens": 80, "cached_prompt_tokens": 70, "first_text_s": 0.012}],
            "no_reuse": [{"first_text_s": 0.01}, {"first_text_s": 0.05}]},
    }
    report = {
        "command": "python -m bench.speed", "settings": {"repeats": 3, "turn_tokens": 8},
        "machine": {"cpu": "CPU", "logical_cores": 2, "memory_gb": 1, "gpu": None, "date": "today",
                    "load_average": [1.0], "versions": {k: "1" for k in (
                        "torch", "transformers", "tokenizers", "llama_cpp_python", "gptqmodel")}},
        "results": [result, {"model": "0.6b-gptq-int4", "error": "RuntimeError: boom"}],
    }
    text = markdown(report)
    row = "| tiny-bf16 | transformers | `model.generate` | 8 | 99.0 | 100.0 | 0.990 | – | 3.0 | 2.0 | 1.0 | ✓ |"
    assert row in text
    assert "80 (70)" in text and "error: RuntimeError: boom" in text
