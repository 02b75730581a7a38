"""Time to first token at turn 1 and turn 8 of a chat whose history grows long (llama.cpp KV reuse).

    python bench/kv_reuse.py                         # tiny GGUF twin (offline)
    python bench/kv_reuse.py --model qwen3-0.6b-gguf-q8_0 --threads 4 --words 400
    python bench/kv_reuse.py --synthetic 1024:8 --words 200   # random weights, Qwen3-0.6B's width
    python bench/kv_reuse.py --first-words 3000 --words 40    # a long document, then short questions

Every user turn pastes a long text (``--words`` words), so the prompt grows by several hundred
tokens per turn. With the KV cache reused, each turn only evaluates its new message and TTFT stays
about flat; the baseline run clears llama.cpp's cache before every turn (what a backend that
re-reads the whole history would do), so TTFT grows with the history.

Even with reuse, the new tokens attend to the whole cached history: attention costs about
``4 x hidden x context`` FLOPs per token and layer against ``~12 x hidden^2`` for the weights, so
TTFT still grows where the context is long compared with the hidden size.  The tiny model (hidden
128) is all attention; ``--synthetic HIDDEN:LAYERS`` writes a random-weight Qwen3-shaped GGUF
(tiny vocabulary) to show a realistic width.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TEXT = ("The tiny model lives in a small house by the sea. Every morning it counts the waves and writes "
        "the number in a blue notebook. When the tide is low, it walks to the lighthouse and says hello "
        "to the keeper. ")


def long_message(turn: int, words: int) -> str:
    body = (TEXT * (words // len(TEXT.split()) + 1)).split()[:words]
    return f"Turn {turn}. Please read this note: " + " ".join(body) + f" What did note {turn} say? /no_think"


def synthetic_gguf(shape: str) -> Path:
    """A random-weight Qwen3-shaped Q8_0 GGUF (head_dim 128, GQA 2:1, ffn 3x), cached in /tmp."""
    import shutil

    import torch
    from safetensors.torch import save_file

    import tinymodels
    from tinymodels.gguf import write_gguf

    hidden, layers = (int(x) for x in shape.split(":"))
    heads, head_dim = max(1, hidden // 64), 128
    kv_heads, ffn = max(1, heads // 2), 3 * hidden
    out = Path("/tmp/qwen3-playground-bench") / f"synthetic-{hidden}x{layers}.gguf"
    if out.exists():
        return out
    src = out.parent / f"synthetic-{hidden}x{layers}"
    src.mkdir(parents=True, exist_ok=True)
    tiny = tinymodels.model_path("bf16")
    shutil.copy(tiny / "tokenizer.json", src / "tokenizer.json")
    config = json.loads((tiny / "config.json").read_text())
    config.update(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                  num_key_value_heads=kv_heads, head_dim=head_dim, intermediate_size=ffn)
    (src / "config.json").write_text(json.dumps(config))
    g = torch.Generator().manual_seed(0)
    vocab = config["vocab_size"]

    def w(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.02

    tensors = {"model.embed_tokens.weight": w(vocab, hidden), "lm_head.weight": w(vocab, hidden),
               "model.norm.weight": torch.ones(hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        tensors.update({
            p + "input_layernorm.weight": torch.ones(hidden), p + "post_attention_layernorm.weight": torch.ones(hidden),
            p + "self_attn.q_proj.weight": w(heads * head_dim, hidden),
            p + "self_attn.k_proj.weight": w(kv_heads * head_dim, hidden),
            p + "self_attn.v_proj.weight": w(kv_heads * head_dim, hidden),
            p + "self_attn.o_proj.weight": w(hidden, heads * head_dim),
            p + "self_attn.q_norm.weight": torch.ones(head_dim), p + "self_attn.k_norm.weight": torch.ones(head_dim),
            p + "mlp.gate_proj.weight": w(ffn, hidden), p + "mlp.up_proj.weight": w(ffn, hidden),
            p + "mlp.down_proj.weight": w(hidden, ffn),
        })
    save_file(tensors, str(src / "model.safetensors"))
    write_gguf(src, out, "Q8_0")
    shutil.rmtree(src)
    return out


def run_chat(playground, backend, turns: int, words: int, max_new_tokens: int, reuse: bool,
             first_words: int | None = None, *, settings=None, thinking: bool = True,
             forget=None) -> list[dict]:
    """One chat of ``turns`` long user turns through ``playground`` (a request and a reply
    per turn, as the UI sends them) on its loaded ``backend``; a row per turn.

    ``settings`` defaults to the thinking preset (seed 1); ``forget`` (default: llama.cpp's
    ``llm.reset``) drops the backend's KV cache before every turn when ``reuse`` is off.
    ``first_text_s`` is the wall-clock time from the call to the first streamed text.
    """
    from core.events import GenerationStats, Reply
    from core.presets import get_preset
    from playground import ModelReady

    if settings is None:
        settings = get_preset("thinking").settings.with_updates(seed=1, max_new_tokens=max_new_tokens)
    forget = forget or (lambda: backend.llm.reset())
    history: list[dict] = []
    rows = []
    for turn in range(1, turns + 1):
        n_words = first_words if turn == 1 and first_words else words
        history.append({"role": "user", "content": long_message(turn, n_words)})
        if not reuse:
            forget()  # forget the KV cache: the whole history is evaluated again
        reply = Reply()
        first_text = None
        started = time.perf_counter()
        request = playground.request(history, model=backend.spec.source, settings=settings, thinking=thinking,
                                     backend=backend.name, options=backend.options)
        for event in playground.chat(request):
            if isinstance(event, ModelReady):
                continue
            if first_text is None and not isinstance(event, GenerationStats) and event.text:
                first_text = time.perf_counter() - started
            reply.add(event)
        wall = time.perf_counter() - started
        stats = reply.stats
        rows.append({"turn": turn, "prompt_tokens": stats.prompt_tokens,
                     "cached_prompt_tokens": stats.cached_prompt_tokens,
                     "ttft_s": round(stats.ttft_s or wall, 4), "total_s": round(wall, 4),
                     "first_text_s": round(first_text, 4) if first_text is not None else None})
        history.append({"role": "assistant", "content": reply.answer or "ok", "reasoning": reply.reasoning})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny-gguf-q8_0", help="a GGUF catalog name or path [tiny-gguf-q8_0]")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--words", type=int, default=600, help="words pasted in every user turn [600]")
    parser.add_argument("--first-words", type=int, default=None,
                        help="words in the first user turn (a long document up front) [--words]")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--context", type=int, default=None, help="cap the context window (tokens)")
    parser.add_argument("--synthetic", metavar="HIDDEN:LAYERS", default=None,
                        help="bench a random-weight Qwen3-shaped GGUF of this size instead of --model")
    parser.add_argument("--no-baseline", action="store_true", help="skip the run without reuse")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.synthetic:
        args.model = str(synthetic_gguf(args.synthetic))

    from core.request import LoadOptions
    from playground import Playground

    playground = Playground()
    spec = playground.resolve(args.model, "llama.cpp")
    options = LoadOptions(threads=args.threads, context_length=args.context)
    try:
        with playground.lease(spec, options) as backend:
            run_chat(playground, backend, 1, 20, 2, reuse=True)  # warm-up (first decode allocates buffers)
            backend.llm.reset()
            reused = run_chat(playground, backend, args.turns, args.words, args.max_new_tokens, True,
                              args.first_words)
            baseline = reused if args.no_baseline else run_chat(playground, backend, args.turns, args.words,
                                                                args.max_new_tokens, False, args.first_words)
    finally:
        playground.pool.unload_all()
    first, last = reused[0], reused[-1]
    result = {
        "model": args.model, "threads": args.threads, "words_per_turn": args.words,
        "first_turn_words": args.first_words or args.words,
        "ttft_turn1_s": first["ttft_s"], "ttft_last_turn_s": last["ttft_s"],
        "ratio_last_to_first": round(last["ttft_s"] / first["ttft_s"], 2),
        "ttft_last_turn_without_reuse_s": baseline[-1]["ttft_s"],
        "ratio_without_reuse": round(baseline[-1]["ttft_s"] / baseline[0]["ttft_s"], 2),
        "turns": reused, "baseline_turns": baseline,
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"{args.model}: {args.first_words or args.words} words in turn 1, {args.words} in each later turn, "
          f"{args.threads} thread(s)"
          + (" (no baseline run)" if args.no_baseline else ""))
    print(f"{'turn':>4} {'prompt':>7} {'cached':>7} {'TTFT reuse':>11} {'TTFT no reuse':>14}")
    for row, base in zip(reused, baseline):
        print(f"{row['turn']:>4} {row['prompt_tokens']:>7} {row['cached_prompt_tokens']:>7} "
              f"{row['ttft_s'] * 1000:>9.1f}ms {base['ttft_s'] * 1000:>12.1f}ms")
    print(f"TTFT turn 1 {first['ttft_s'] * 1000:.1f} ms, turn {last['turn']} {last['ttft_s'] * 1000:.1f} ms "
          f"(x{result['ratio_last_to_first']}); without reuse turn {last['turn']} "
          f"{baseline[-1]['ttft_s'] * 1000:.1f} ms (x{result['ratio_without_reuse']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
