"""A small Qwen2-style byte-level BPE tokenizer trained on the script.

Same pipeline as Qwen2/Qwen3 (minus the NFC normalizer): Split on Qwen2's regex (isolated), then
ByteLevel without prefix space or regex, ByteLevel decoder.  The BPE vocabulary comes first, the
added tokens after it (as in Qwen): ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>`` are special;
``<tool_call>`` / ``</tool_call>``, ``<tool_response>`` / ``</tool_response>`` and ``<think>`` /
``</think>`` (in Qwen3's order) are NOT special, so ``decode(skip_special_tokens=True)`` keeps them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jinja2
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from core.qwen3_template import QWEN3_CHAT_TEMPLATE

from .script import ENDLESS_TRAIN_REPEATS, ENDLESS_UNIT, SCRIPTED_TEXT, TRAINING_CASES

QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
    r"""\s*[\r\n]+|\s+(?!\S)|\s+"""
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
NON_SPECIAL_ADDED_TOKENS = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>",
                            "<think>", "</think>"]
VOCAB_SIZE = 512  # BPE part (256 bytes + merges); the trainer stops earlier if pairs run out

# A little generic text so that ordinary prompts are not all single bytes.
_GENERIC_TEXT = (
    "Hello! How are you today? I am fine, thank you. Please tell me a story about a cat and a dog. "
    "Can you help me with my homework? Write a short poem about the moon and the stars. "
    "Explain why the sky is blue in one sentence. What is the capital of France? Paris. "
    "Let me think about this step by step. First, second, third; one, two, three, four."
)


def _tojson(value: object) -> str:
    """transformers' (and llama-cpp-python's) ``tojson``: keys in order, non-ASCII as is."""
    return json.dumps(value, ensure_ascii=False)


def render_chat(messages: list[dict], enable_thinking: bool, tools: list[dict] | None = None) -> str:
    """The project's chat template rendered with plain Jinja2 (as transformers renders it)."""
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = _tojson
    return env.from_string(QWEN3_CHAT_TEMPLATE).render(
        messages=messages, add_generation_prompt=True, enable_thinking=enable_thinking, tools=tools
    )


def training_corpus() -> list[str]:
    """Texts the BPE is trained on, with the added tokens cut out (they never get merged)."""
    cut = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS + NON_SPECIAL_ADDED_TOKENS))
    texts = [render_chat(c.messages, c.enable_thinking, c.tools) + c.after_prompt for c in TRAINING_CASES]
    texts += [SCRIPTED_TEXT, _GENERIC_TEXT]
    # The endless reply's first unit has no leading space ("la la la ..."): as frequent as the
    # others, so that it is one token too (the Stop tests count one unit per token).
    texts += [ENDLESS_UNIT.strip()] * ENDLESS_TRAIN_REPEATS
    return [piece for text in texts for piece in cut.split(text) if piece]


def train_tokenizer() -> PreTrainedTokenizerFast:
    """Train the BPE and wrap it as a transformers fast tokenizer (deterministic)."""
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(training_corpus(), trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in NON_SPECIAL_ADDED_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=QWEN3_CHAT_TEMPLATE,
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
    )


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, dst: Path) -> None:
    tokenizer.save_pretrained(dst)
