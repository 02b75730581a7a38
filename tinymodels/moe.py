"""A tiny Qwen3-MoE model (``Qwen3MoeForCausalLM``) trained to the same script, same tokenizer.

Like Qwen/Qwen3-30B-A3B in miniature: every layer's MLP is a sparse block of 4 experts with 2
active per token (router left unquantized, as in Qwen's GPTQ checkpoints).  Its GPTQ-Int4 twin is
``moe-gptq-int4`` (``tinymodels.gptq``), so the MoE path of the real checkpoint is exercised.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from transformers import Qwen3MoeConfig

from .build import LR_DECAY_STEPS, ProgressFn, model_config, write_trained
from .registry import register_format
from .script import BUDGET_CASES, INJECTION_CASES, TRAINING_CASES

NUM_EXPERTS = 4
NUM_EXPERTS_PER_TOK = 2
MOE_INTERMEDIATE_SIZE = 128  # one GPTQ group (128) along down_proj's input
# Training goes on until the learning rate has decayed: stopped earlier, at a moment the margins
# happen to pass while the routing still shifts, the int4 twin sends some token to other experts.
MIN_TRAIN_STEPS = LR_DECAY_STEPS
# Not the budget and injection cases: with them the bf16 MoE's routing flips on some row (a
# margin of 0 that float32 training cannot see); the dense models cover both.
MOE_CASES = [case for case in TRAINING_CASES if case not in (*BUDGET_CASES, *INJECTION_CASES)]


def moe_config(vocab_size: int, eos_id: int, pad_id: int) -> Qwen3MoeConfig:
    """The dense tiny model's attention and sizes, with a sparse MoE block in every layer."""
    dense = model_config(vocab_size, eos_id, pad_id).to_dict()
    keep = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "head_dim", "hidden_act", "max_position_embeddings", "rms_norm_eps", "rope_parameters",
            "tie_word_embeddings", "attention_bias", "use_cache", "bos_token_id", "eos_token_id", "pad_token_id")
    return Qwen3MoeConfig(
        **{k: dense[k] for k in keep},
        intermediate_size=256,  # unused: every layer is sparse (decoder_sparse_step 1)
        moe_intermediate_size=MOE_INTERMEDIATE_SIZE,
        num_experts=NUM_EXPERTS,
        num_experts_per_tok=NUM_EXPERTS_PER_TOK,
        norm_topk_prob=True,  # as in Qwen3-30B-A3B
        decoder_sparse_step=1,
        mlp_only_layers=[],
        output_router_logits=False,
    )


@register_format("moe-bf16")
def write_moe_bf16(src: Path | None, dst: Path, progress: Optional[ProgressFn] = None) -> None:
    """Train the tiny Qwen3-MoE model (4 experts, 2 active) and save it in bf16 with tokenizer."""
    write_trained(dst, moe_config, progress, MIN_TRAIN_STEPS, MOE_CASES)
