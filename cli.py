"""Headless commands of ``app.py``: ``chat``, ``models``, ``build-tiny``."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any

from core.errors import PlaygroundError


def add_model_flags(parser: argparse.ArgumentParser, single_model: bool = True) -> None:
    if single_model:
        parser.add_argument("--model", default="tiny-bf16",
                            help="catalog name, Hub repo id or local path (folder or .gguf) [default: tiny-bf16]")
    parser.add_argument("--backend", default=None,
                        help="force a backend (transformers, ...); default: inferred from the model")
    parser.add_argument("--yarn-factor", type=float, default=1.0,
                        help="YaRN rope scaling factor, 1 (off) to 4; context = 32768 x factor")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N [default: auto]")
    parser.add_argument("--base-url", default=None,
                        help="remote backend: the OpenAI-compatible server, e.g. http://HOST:PORT/v1 "
                             "(implies --backend remote)")
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY", metavar="VAR",
                        help="remote backend: environment variable holding the API key "
                             "[default: OPENAI_API_KEY]; the key itself is never printed")


def remote_defaults(args: argparse.Namespace) -> None:
    """``--base-url`` without ``--backend`` means the remote backend."""
    if getattr(args, "base_url", None) and not getattr(args, "backend", None):
        args.backend = "remote"


def load_options(args: argparse.Namespace) -> Any:
    """LoadOptions from the model flags (the API key read from ``--api-key-env``)."""
    from backends.base import LoadOptions

    return LoadOptions(yarn_factor=args.yarn_factor, device=args.device,
                       base_url=getattr(args, "base_url", None),
                       api_key=os.environ.get(getattr(args, "api_key_env", None) or "OPENAI_API_KEY") or None
                       ).validate()


def add_chat_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt", required=True, help="the user message (may end with /think or /no_think)")
    parser.add_argument("--system", default=None, help="system prompt")
    parser.add_argument("--no-thinking", action="store_true", help="hard switch: enable_thinking=False")
    parser.add_argument("--preset", default=None,
                        help="sampling preset from presets/sampling [default: the mode's card preset]")
    parser.add_argument("--seed", type=int, default=None, help="random seed for reproducible sampling")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="at most 38912 [default: preset's]")
    parser.add_argument("--temperature", type=float, default=None, help="override the preset's temperature")


def resolve_settings(args: argparse.Namespace, quantized: bool) -> tuple[Any, bool]:
    """Preset + overrides -> (validated GenerationSettings, thinking)."""
    from core.presets import default_preset_name, get_preset

    thinking = not args.no_thinking
    preset = get_preset(args.preset or default_preset_name(thinking, quantized))
    overrides = {k: v for k, v in (("seed", args.seed), ("max_new_tokens", args.max_new_tokens),
                                   ("temperature", args.temperature)) if v is not None}
    return preset.settings.with_updates(**overrides).validate(thinking), thinking


def cmd_chat(args: argparse.Namespace) -> int:
    from backends.loader import open_model
    from core.catalog import resolve_model
    from core.chat import model_messages
    from core.events import AnswerDelta, ReasoningDelta, Reply

    remote_defaults(args)
    spec = resolve_model(args.model, args.backend)
    settings, thinking = resolve_settings(args, spec.quantized)
    options = load_options(args)
    messages = [{"role": "user", "content": args.prompt}]
    model_messages(messages, args.system)  # bad input fails here, before any download or load

    def progress(fraction: float, message: str) -> None:
        if not args.json:
            print(f"[{fraction:4.0%}] {message}", file=sys.stderr, flush=True)

    started = time.perf_counter()
    backend = open_model(args.model, backend=args.backend, options=options, progress=progress)
    load_s = time.perf_counter() - started
    reply = Reply()
    section = None
    for event in backend.stream_chat(messages, settings,
                                     thinking=thinking, system_prompt=args.system):
        reply.add(event)
        if args.json or not isinstance(event, (ReasoningDelta, AnswerDelta)):
            continue
        kind = "reasoning" if isinstance(event, ReasoningDelta) else "answer"
        if kind != section:
            print(("\n" if section else "") + ("--- reasoning ---" if kind == "reasoning" else "--- answer ---"))
            section = kind
        print(event.text, end="", flush=True)
    stats = {**reply.stats.to_dict(), "load_s": load_s}
    info = backend.describe().to_dict()
    if args.json:
        print(json.dumps({"backend": backend.name, "model": spec.name, "reasoning": reply.reasoning,
                          "answer": reply.answer, "stats": stats, "info": info}, indent=2))
    else:
        ttft = f"{stats['ttft_s']:.3f}s" if stats["ttft_s"] is not None else "-"
        speed = f"{stats['tokens_per_s']:.1f}" if stats["tokens_per_s"] else "-"
        print(f"\n--- {stats['prompt_tokens']} prompt + {stats['completion_tokens']} completion tokens, "
              f"first token {ttft}, {speed} tokens/s, load {load_s:.2f}s ({stats['finish_reason']}) ---")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from backends.base import LoadOptions
    from backends.compare_runner import EntrySpec, collect, new_comparison, run_comparison
    from core.chat import model_messages
    from core.events import AnswerDelta, ReasoningDelta

    remote_defaults(args)  # --base-url alone means the remote backend, as for chat
    if not 1 <= len(args.models) <= 4:
        raise PlaygroundError("compare takes 1 to 4 models (--models A B C)")
    quantized = any(EntrySpec(m, args.backend).resolve().quantized for m in args.models)
    settings, thinking = resolve_settings(args, quantized)
    model_messages([{"role": "user", "content": args.prompt}], args.system)  # fail fast on bad input
    options = LoadOptions(yarn_factor=args.yarn_factor, device=args.device,
                          base_url=getattr(args, "base_url", None),
                          api_key=os.environ.get(getattr(args, "api_key_env", "OPENAI_API_KEY"))).validate()
    entries = [EntrySpec(model, args.backend, options) for model in args.models]
    comparison = new_comparison(entries, args.prompt, settings, thinking, args.system or "")

    def show(event) -> None:
        if args.json or args.markdown:
            return
        label = comparison.entries[event.index].label
        if event.kind == "loaded":
            print(f"\n=== {label} (loaded in {event.payload[1]:.2f}s) ===", flush=True)
        elif event.kind == "event" and isinstance(event.payload, (ReasoningDelta, AnswerDelta)):
            print(event.payload.text, end="", flush=True)
        elif event.kind == "error":
            print(f"\n=== {label}: error: {event.payload} ===", flush=True)

    histories = comparison.start_turn(args.prompt)
    collect(comparison, run_comparison(entries, histories, settings, thinking, system_prompt=args.system or "",
                                       concurrent=args.concurrent), show)
    if args.perplexity:
        score_perplexity(comparison, entries, args.perplexity)
    if args.json:
        print(comparison.to_json())
    else:
        print(("" if args.markdown else "\n\n") + comparison.to_markdown())
    return 0 if all(e.error is None for e in comparison.entries) else 1


def score_perplexity(comparison: Any, entries: list[Any], text: str) -> None:
    """Perplexity of ``text`` (or a shipped text's name) on every entry, into the comparison."""
    from backends.compare_runner import load_fresh
    from core.texts import scoring_text

    body = scoring_text(text)
    for entry, result in zip(entries, comparison.entries):
        try:
            with load_fresh(entry.resolve(), entry.options, None) as backend:
                result.perplexity = backend.perplexity(body).to_dict()
        except PlaygroundError as exc:
            result.error = result.error or f"perplexity: {exc}"


def cmd_models(args: argparse.Namespace) -> int:
    from core.catalog import load_catalog
    from core.hub import available_offline

    rows = [{**spec.to_dict(), "offline": available_offline(spec)} for spec in load_catalog()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':34} {'backend':12} {'format':12} {'offline':8} source")
    for row in rows:
        source = row["source"] + (f" ({row['filename']})" if row.get("filename") else "")
        print(f"{row['name']:34} {row['backend']:12} {row['format']:12} {'yes' if row['offline'] else 'no':8} {source}")
    return 0


def cmd_build_tiny(args: argparse.Namespace) -> int:
    import tinymodels

    started = time.perf_counter()
    from tinymodels.registry import default_formats

    formats = args.formats or default_formats()  # default: every format but the on-request ones
    paths = tinymodels.build(formats, force=args.force,
                             progress=lambda f, message: print(f"[{f:4.0%}] {message}", file=sys.stderr))
    print(json.dumps({"paths": {k: str(v) for k, v in paths.items()},
                      "seconds": round(time.perf_counter() - started, 1)}, indent=2))
    return 0


def run(command: str, args: argparse.Namespace) -> int:
    handlers = {"chat": cmd_chat, "compare": cmd_compare, "models": cmd_models, "build-tiny": cmd_build_tiny}
    try:
        return handlers[command](args)
    except PlaygroundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


def quiet_libraries() -> None:
    """Library chatter (progress bars, warnings) goes away unless the user asks for it."""
    if not os.environ.get("QWEN3_PLAYGROUND_VERBOSE"):
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        # torchao (pulled in by gptqmodel) warns about CUDA-only kernels at import on CPU machines
        for name in ("torchao", "torch.utils._pytree"):
            logging.getLogger(name).setLevel(logging.ERROR)
