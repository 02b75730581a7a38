"""Train the tiny Qwen3 model on the script and write it as a bf16 transformers checkpoint.

The model memorises every scripted completion with a wide logit margin (top-1 beats the runner-up
by >= MIN_MARGIN at every target token, checked in bf16 with teacher forcing), so that it follows
the script under greedy decoding and under Qwen's sampling presets (temperature 0.6-0.7, top_k 20,
presence_penalty up to 1.5) alike.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from transformers import (AutoModelForCausalLM, GenerationConfig, PretrainedConfig, PreTrainedModel,
                          PreTrainedTokenizerBase, Qwen3Config)

from core.prompt import (Segment, encode_segments, markup_only_in_template, neutralised_messages, render_segments,
                         rendered_text)
from core.tools import QWEN3_ADDED_TOKENS

from .registry import register_format
from .script import SCRIPTED_TEXT, TRAINING_CASES, ScriptedCase
from .tokenizer import save_tokenizer, train_tokenizer

MIN_MARGIN = 10.0  # required top-1 minus runner-up logit at every target token (bf16)
TRAIN_MARGIN = 16.0  # hinge target while training: headroom for bf16/fp8/int4 rounding
MAX_STEPS = 1500
LEARNING_RATE = 3e-3  # decays linearly to LR_FLOOR x itself over LR_DECAY_STEPS, then stays there
LR_DECAY_STEPS = 250
LR_FLOOR = 0.1
CHECK_EVERY = 10  # steps between bf16 margin checks (the stopping test; a check costs a third of a step)
SEED = 1234

ProgressFn = Callable[[float, str], None]
ConfigFn = Callable[[int, int, int], PretrainedConfig]  # (vocab_size, eos_id, pad_id) -> config

# Where the last build's numbers land (the CLI and the report read it).
BUILD_INFO_FILE = "tiny_build_info.json"


def model_config(vocab_size: int, eos_id: int, pad_id: int) -> Qwen3Config:
    # hidden 128 is one FP8 128x128 block / one GPTQ group; GQA 4 Q heads / 2 KV heads like Qwen3.
    return Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        hidden_act="silu",
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        tie_word_embeddings=False,
        attention_bias=False,
        use_cache=True,
        bos_token_id=pad_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )


@dataclass
class Row:
    name: str
    input_ids: list[int]
    labels: list[int]  # -100 where no loss


def _render_fn(tokenizer: PreTrainedTokenizerBase, case: ScriptedCase) -> Callable[[list[dict]], str]:
    def render(messages: list[dict]) -> str:
        return tokenizer.apply_chat_template(messages, tools=case.tools, add_generation_prompt=True,
                                             enable_thinking=case.enable_thinking, tokenize=False)

    return render


def prompt_segments(tokenizer: PreTrainedTokenizerBase, case: ScriptedCase) -> list[Segment]:
    """The prompt as the backends render it: ``core.prompt.render_segments`` on the template."""
    return render_segments(_render_fn(tokenizer, case), case.messages)


def render_prompt(tokenizer: PreTrainedTokenizerBase, case: ScriptedCase) -> str:
    """The prompt exactly as the backends render it at run time (``core.prompt``: the template with
    a slot for each message, each message's content put in as it is). For every scripted case this
    is what the template renders; for the leaked-history contrast case it keeps the earlier turn's
    ``<think>`` block, which the template itself would drop but a backend skipping the history rules
    would send."""
    return rendered_text(prompt_segments(tokenizer, case))


def prompt_variants(tokenizer: PreTrainedTokenizerBase, case: ScriptedCase) -> list[list[int]]:
    """The token ids of ``case``'s prompt as it may reach the model, first :func:`render_prompt`'s
    text tokenized whole (what the tests do).

    Tool cases add the template's own text tokenized whole (``apply_chat_template(..., tools=...)``)
    and the ids the backends send (``core.prompt.encode_segments``). Today both equal the first
    (``encode_segments`` tokenizes the whole text unless a message's text holds markup), but where
    they differ -- a slot changing what the template writes, or a prompt tokenized piece by piece,
    whose BPE merges stop at the pieces' edges -- the model is trained on every distinct one, so
    it answers them all alike."""
    segments = prompt_segments(tokenizer, case)
    reserved = [token.content for token in tokenizer.added_tokens_decoder.values()]

    def template_ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    def plain_ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]

    if any(m["role"] == "user" and not markup_only_in_template([(m["content"], False)], reserved)
           for m in case.messages):
        # markup typed in a user message: never as control tokens, only as the backends send it
        # (local: plain pieces; remote: the text neutralised for a server's own tokenizer)
        remote = template_ids(_render_fn(tokenizer, case)(neutralised_messages(case.messages, QWEN3_ADDED_TOKENS)))
        return [encode_segments(segments, template_ids, plain_ids, reserved), remote]
    variants = [tokenizer(rendered_text(segments), add_special_tokens=False)["input_ids"]]
    if case.tools is None and not any(m["role"] == "tool" or m.get("tool_calls") for m in case.messages):
        return variants

    for ids in (template_ids(_render_fn(tokenizer, case)(case.messages)),
                encode_segments(segments, template_ids, plain_ids, reserved)):
        if ids not in variants:
            variants.append(ids)
    return variants


def training_rows(tokenizer: PreTrainedTokenizerBase, cases: Sequence[ScriptedCase] = TRAINING_CASES) -> list[Row]:
    """Chat rows (loss on the completion only) plus the memorised plain text.

    A case whose prompt reaches the model as several token sequences (:func:`prompt_variants`) has
    a row for each, the first named after the case, the others ``<name>#<i>``."""
    rows = []
    for case in cases:
        target = tokenizer(case.target, add_special_tokens=False)["input_ids"]
        prefill = tokenizer(case.prefill, add_special_tokens=False)["input_ids"] if case.prefill else []
        for i, prompt in enumerate(prompt_variants(tokenizer, case)):
            prompt = prompt + prefill
            name = case.name if i == 0 else f"{case.name}#{i}"
            rows.append(Row(name, prompt + target, [-100] * len(prompt) + target))
    text = tokenizer(SCRIPTED_TEXT, add_special_tokens=False)["input_ids"]
    rows.append(Row("scripted_text", text, [-100] + text[1:]))
    return rows


def trained_cases(model_dir: Path) -> list[ScriptedCase]:
    """The cases the model in ``model_dir`` (or the model it was quantized from) was trained on."""
    path = model_dir / BUILD_INFO_FILE
    names = json.loads(path.read_text()).get("cases") if path.exists() else None
    return [case for case in TRAINING_CASES if names is None or case.name in names]


def _batch(rows: list[Row], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n = max(len(r.input_ids) for r in rows)
    ids = torch.full((len(rows), n), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), n), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r.input_ids)] = torch.tensor(r.input_ids)
        labels[i, : len(r.labels)] = torch.tensor(r.labels)
        mask[i, : len(r.input_ids)] = 1
    return ids, labels, mask


def _margins(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Target logit minus best other logit, at every position that has a label (next-token)."""
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    keep = labels != -100
    return _target_margins(logits[keep], labels[keep])


def _target_margins(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per row of ``logits`` (positions x vocab): the target's logit minus the best other one."""
    target = logits.gather(1, targets[:, None]).squeeze(1)
    others = logits.scatter(1, targets[:, None], float("-inf"))
    return target - others.max(dim=1).values


# Rows are run in groups of similar length (sorted, at most this many padded tokens a group): the
# tool rows are ten times longer than the others, and one padded batch would cost twice as much.
GROUP_TOKENS = 4096


def _groups(rows: list[Row], budget: int = GROUP_TOKENS) -> list[list[Row]]:
    groups: list[list[Row]] = []
    for row in sorted(rows, key=lambda r: len(r.input_ids)):
        if groups and (len(groups[-1]) + 1) * len(row.input_ids) <= budget:
            groups[-1].append(row)
        else:
            groups.append([row])
    return groups


@torch.no_grad()
def row_margins(model: torch.nn.Module, rows: list[Row], pad_id: int) -> dict[str, float]:
    """Minimum teacher-forced margin per row, in the model's current dtype."""
    out = {}
    for group in _groups(rows):
        ids, labels, mask = _batch(group, pad_id)
        logits = model(input_ids=ids, attention_mask=mask).logits
        for i, r in enumerate(group):
            out[r.name] = float(_margins(logits[i : i + 1], labels[i : i + 1]).min())
    return {r.name: out[r.name] for r in rows}


# Training packs the rows into prefix trees: the tool rows repeat long prefixes (the tools' system
# turn, the loop's history), so every distinct prefix is computed once. A pack is one sequence of
# trie nodes (each token position of its rows once), each node attending to its ancestors only, at
# its depth as position: the same logits as the rows one by one, a third of the tokens.
PACK_NODES = 1024  # most nodes in one pack (attention costs nodes^2 per pack; 1024 was fastest here)


@dataclass
class Pack:
    ids: torch.Tensor  # (1, nodes)
    positions: torch.Tensor  # (1, nodes): depth in the trie
    mask: torch.Tensor  # (1, 1, nodes, nodes) bool: node i sees its ancestors and itself
    sources: torch.Tensor  # (scripted,) the node whose logits predict each scripted token
    targets: torch.Tensor  # (scripted,) the scripted token
    weights: torch.Tensor  # (scripted,) how many rows script this (node, token)
    rows: dict[str, torch.Tensor]  # row name -> its scripted tokens' indices in sources/targets


def _pack_rows(rows: list[Row], budget: int = PACK_NODES) -> list[Pack]:
    """Pack ``rows`` (in order) into prefix trees of at most ``budget`` nodes (a longer row gets one alone)."""
    packs: list[list[Row]] = [[]]
    children: dict[tuple[int, int], int] = {}
    size = 0
    for row in rows:
        parent, new = -1, 0  # the nodes this row would add to the current pack
        for depth, token in enumerate(row.input_ids):
            parent = children.get((parent, token))
            if parent is None:
                new = len(row.input_ids) - depth
                break
        if packs[-1] and size + new > budget:
            packs.append([])
            children, size = {}, 0
        parent = -1
        for token in row.input_ids:
            child = children.get((parent, token))
            if child is None:
                child = children[(parent, token)] = size
                size += 1
            parent = child
        packs[-1].append(row)
    return [_pack(group) for group in packs]


def _pack(rows: list[Row]) -> Pack:
    children: dict[tuple[int, int], int] = {}
    tokens: list[int] = []
    parents: list[int] = []
    entries: dict[tuple[int, int], int] = {}
    weights: list[int] = []
    row_entries: dict[str, list[int]] = {}
    for row in rows:
        path, parent = [], -1
        for token in row.input_ids:
            node = children.get((parent, token))
            if node is None:
                node = children[(parent, token)] = len(tokens)
                tokens.append(token)
                parents.append(parent)
            path.append(node)
            parent = node
        mine = []
        for t in range(1, len(row.input_ids)):
            if row.labels[t] == -100:
                continue
            key = (path[t - 1], row.labels[t])
            if key not in entries:
                entries[key] = len(weights)
                weights.append(0)
            weights[entries[key]] += 1
            mine.append(entries[key])
        row_entries[row.name] = mine
    n = len(tokens)
    mask = torch.zeros((n, n), dtype=torch.bool)
    depth = [0] * n
    for i, parent in enumerate(parents):
        if parent >= 0:
            mask[i] = mask[parent]
            depth[i] = depth[parent] + 1
        mask[i, i] = True
    keys = list(entries)
    return Pack(
        ids=torch.tensor([tokens]), positions=torch.tensor([depth]), mask=mask[None, None],
        sources=torch.tensor([k[0] for k in keys]), targets=torch.tensor([k[1] for k in keys]),
        weights=torch.tensor(weights, dtype=torch.float32),
        rows={name: torch.tensor(ix, dtype=torch.long) for name, ix in row_entries.items()},
    )


def _pack_logits(model: PreTrainedModel, pack: Pack) -> torch.Tensor:
    """Logits (float32) at the pack's scripted positions only: the LM head skips the prompts."""
    hidden = model.get_decoder()(input_ids=pack.ids, attention_mask=pack.mask,
                                 position_ids=pack.positions).last_hidden_state[0]
    return model.get_output_embeddings()(hidden[pack.sources]).float()


@torch.no_grad()
def _packed_row_margins(model: PreTrainedModel, packs: list[Pack]) -> dict[str, float]:
    out = {}
    for pack in packs:
        margins = _target_margins(_pack_logits(model, pack), pack.targets)
        out.update({name: float(margins[ix].min()) for name, ix in pack.rows.items()})
    return out


def train(
    tokenizer: PreTrainedTokenizerBase, progress: Optional[ProgressFn] = None, make_config: ConfigFn = model_config,
    min_steps: int = 0, cases: Sequence[ScriptedCase] = TRAINING_CASES,
) -> tuple[PreTrainedModel, dict]:
    """Train in float32 until every target token has margin >= MIN_MARGIN in bf16.

    ``make_config`` picks the architecture (dense Qwen3 by default; ``tinymodels.moe`` passes a
    Qwen3-MoE config): the model class comes from the config.  The loss is cross-entropy plus a
    hinge on the margin, both averaged over every scripted token of every row (computed on the
    packed prefix trees, gradients accumulated over the packs).  Training stops when the packed
    bf16 check passes (not before ``min_steps``); the final margins are checked on the rows one by
    one (:func:`row_margins`).
    """
    torch.manual_seed(SEED)
    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = make_config(len(tokenizer), eos_id, pad_id)
    model = AutoModelForCausalLM.from_config(config).float()
    rows = training_rows(tokenizer, cases)
    packs = _pack_rows(rows)
    n_targets = float(sum(pack.weights.sum() for pack in packs))
    opt = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.0, betas=(0.9, 0.98))
    # A decaying rate: with a constant one the MoE's routing keeps flipping scripted tokens late on.
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(LR_FLOOR, 1.0 - s / LR_DECAY_STEPS))
    t0 = time.monotonic()
    step = 0
    min_bf16 = float("-inf")
    model.train()
    while step < MAX_STEPS:
        step += 1
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for pack in packs:
            logits = _pack_logits(model, pack)
            ce = torch.nn.functional.cross_entropy(logits, pack.targets, reduction="none")
            hinge = torch.relu(TRAIN_MARGIN - _target_margins(logits, pack.targets))
            loss = ((ce + hinge) * pack.weights).sum() / n_targets
            loss.backward()
            total += loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        schedule.step()
        if step % CHECK_EVERY == 0:
            model.eval()
            with torch.no_grad():
                bf16 = type(model)(config)
                bf16.load_state_dict(model.state_dict())
                bf16 = bf16.to(torch.bfloat16)
                min_bf16 = min(_packed_row_margins(bf16, packs).values())
            model.train()
            if progress:
                progress(min(0.95, max(0.0, min_bf16) / TRAIN_MARGIN), f"step {step}: loss {total:.4f}, "
                         f"min bf16 margin {min_bf16:.2f}")
            if min_bf16 >= TRAIN_MARGIN * 0.8 and step >= min_steps:
                break
    model.eval()
    with torch.no_grad():
        bf16 = type(model)(config)
        bf16.load_state_dict(model.state_dict())
        per_row = row_margins(bf16.to(torch.bfloat16), rows, pad_id)
    min_bf16 = min(per_row.values())
    if min_bf16 < MIN_MARGIN:
        raise RuntimeError(f"tiny model did not reach margin {MIN_MARGIN} in {step} steps ({min_bf16:.2f})")
    info = {"steps": step, "train_seconds": round(time.monotonic() - t0, 2), "min_margin_bf16": round(min_bf16, 3),
            "margins_bf16": {k: round(v, 3) for k, v in per_row.items()}}
    return model, info


def generation_config(eos_id: int, pad_id: int) -> GenerationConfig:
    # Qwen's defaults (thinking preset).
    return GenerationConfig(
        eos_token_id=eos_id, pad_token_id=pad_id, do_sample=True, temperature=0.6, top_p=0.95, top_k=20
    )


# Training and quantizing always use this many threads, whatever the caller's setting (tests run
# with OMP_NUM_THREADS=1): float sums in another order train a different model, and the tests'
# expectations must hold for the same model on every machine.
BUILD_THREADS = 2


def write_trained(dst: Path, make_config: ConfigFn = model_config, progress: Optional[ProgressFn] = None,
                  min_steps: int = 0, cases: Sequence[ScriptedCase] = TRAINING_CASES) -> None:
    """Train a tiny model of ``make_config``'s architecture on ``cases``; save it in bf16 with
    tokenizer, and the cases' names in its build info (what its quantized twins are checked on)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(BUILD_THREADS)
    try:
        tokenizer = train_tokenizer()
        model, info = train(tokenizer, progress, make_config, min_steps, cases)
        info["cases"] = [case.name for case in cases]
    finally:
        torch.set_num_threads(threads)
    model = model.to(torch.bfloat16)
    model.config.dtype = torch.bfloat16
    model.generation_config = generation_config(model.config.eos_token_id, model.config.pad_token_id)
    model.save_pretrained(dst, safe_serialization=True)
    save_tokenizer(tokenizer, dst)
    (dst / BUILD_INFO_FILE).write_text(json.dumps(info, indent=1))


@register_format("bf16")
def write_bf16(src: Path | None, dst: Path, progress: Optional[ProgressFn] = None) -> None:
    """Train the tiny Qwen3 model and save it in bf16 (safetensors) with tokenizer."""
    write_trained(dst, model_config, progress)
