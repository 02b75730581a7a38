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


def add_chat_flags(parser: argparse.ArgumentParser, prompt_required: bool = True) -> None:
    """The prompt, the switches, and one flag per generation setting (``core.settings.SCHEMA``)."""
    from core.settings import SCHEMA

    parser.add_argument("--prompt", required=prompt_required,
                        help="the user message (may end with /think or /no_think)"
                             + ("" if prompt_required else "; without it, compare only scores (--score, --perplexity)"))
    parser.add_argument("--system", default=None, help="system prompt")
    parser.add_argument("--no-thinking", action="store_true", help="hard switch: enable_thinking=False")
    parser.add_argument("--preset", default=None,
                        help="sampling preset from presets/sampling [default: the mode's card preset]")
    parser.add_argument("--no-loop-guard", dest="loop_guard", action="store_false",
                        help="do not stop a reply that repeats itself (the loop guard is on by default)")
    settings = parser.add_argument_group("generation settings (each overrides the preset's value)")
    for spec in SCHEMA:
        settings.add_argument(spec.flag, dest=spec.name, type=spec.type, default=None,
                              metavar=spec.type.__name__.upper(), help=f"{spec.help} [{spec.range_text}]")


def add_loop_retry_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--retry-on-loop", action="store_true",
                        help="when the loop guard stops the reply, retry once with the card's advice "
                             "(presence_penalty 1.5), saying which settings changed")


def add_tool_flags(parser: argparse.ArgumentParser) -> None:
    """Tools the model may call (``docs``: README "Tools")."""
    from core.tools import DEFAULT_MAX_ROUNDS, DEFAULT_TOOL_TIMEOUT_S, MAX_ROUNDS_LIMIT

    tools = parser.add_argument_group("tools (Qwen3's Hermes tool calls; off unless given)")
    tools.add_argument("--mcp", metavar="CONFIG.json", default=None,
                       help='MCP servers in the cards\' format: {"mcpServers": {"time": {"command": ..., "args": [...]}}}')
    tools.add_argument("--code-interpreter", action="store_true",
                       help="let the model run Python in a separate, limited process")
    tools.add_argument("--max-tool-rounds", type=int, default=DEFAULT_MAX_ROUNDS, metavar="N",
                       help=f"rounds of tool calls per reply [1 to {MAX_ROUNDS_LIMIT}, default {DEFAULT_MAX_ROUNDS}]")
    tools.add_argument("--tool-timeout", type=float, default=DEFAULT_TOOL_TIMEOUT_S, metavar="SECONDS",
                       help=f"time limit of one tool call [default {DEFAULT_TOOL_TIMEOUT_S:g}]")


def toolbox_for(playground: Any, args: argparse.Namespace) -> Any:
    """The toolbox of ``--mcp`` / ``--code-interpreter`` (None without them)."""
    mcp = None
    if args.mcp:
        from core.mcp_config import load_mcp_config

        mcp = load_mcp_config(args.mcp)
    return playground.toolbox(mcp=mcp, code_interpreter=args.code_interpreter, max_rounds=args.max_tool_rounds,
                              timeout_s=args.tool_timeout)


def playground_for(args: argparse.Namespace) -> Any:
    """The playground a command runs on: the environment's configuration (``QWEN3_PLAYGROUND_*``);
    the command line's user is the host, who picks the model (``--model``) whatever visitors may do."""
    from core.config import AppConfig
    from playground import Playground

    return Playground(AppConfig.from_env(visitors_switch_models=True))


def load_options(playground: Any, spec: Any, args: argparse.Namespace) -> Any:
    """LoadOptions from the model flags (the API key read from ``--api-key-env``)."""
    api_key = None
    if getattr(args, "base_url", None):
        api_key = os.environ.get(getattr(args, "api_key_env", None) or "OPENAI_API_KEY") or None
    return playground.load_options(spec, args.yarn_factor, device=None if args.device == "auto" else args.device,
                                   base_url=getattr(args, "base_url", None), api_key=api_key)


def resolve_settings(playground: Any, args: argparse.Namespace, quantized: bool,
                     fixed_thinking: bool | None = None) -> tuple[Any, bool]:
    """Preset (``--preset``, else the mode's card preset) + the settings' flags -> (settings,
    thinking); ``fixed_thinking``: the model always (True) or never (False) thinks."""
    from core.presets import default_preset_name, get_preset
    from core.settings import SCHEMA

    thinking = not args.no_thinking if fixed_thinking is None else fixed_thinking
    name = args.preset or default_preset_name(thinking, quantized)
    preset = playground.presets.get(name) or get_preset(name)
    return preset.settings.with_values(**{spec.name: getattr(args, spec.name) for spec in SCHEMA
                                          if getattr(args, spec.name) is not None}), thinking


def read_history(path: str | None) -> list[dict[str, Any]]:
    """The messages of a chat exported from the UI (JSON or Markdown export), to continue it."""
    if not path:
        return []
    from pathlib import Path

    from core import chat_io

    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise PlaygroundError(f"cannot read the history file {path}: {exc.strerror or exc}") from None
    return chat_io.parse(data)


def cmd_chat(args: argparse.Namespace) -> int:
    remote_defaults(args)
    playground = playground_for(args)
    try:
        return _chat(playground, args)
    finally:
        playground.close()  # MCP servers stop with the command


def _chat(playground: Any, args: argparse.Namespace) -> int:
    from core.events import AnswerDelta, ReasoningDelta
    from core.tools import ToolCallStarted, ToolResult

    spec = playground.resolve(args.model, args.backend)
    settings, thinking = resolve_settings(playground, args, spec.quantized, spec.fixed_thinking)
    history = [*read_history(args.history), {"role": "user", "content": args.prompt}]
    # every rule checked here, before any download or load (MCP servers start now: a bad one fails fast)
    request = playground.request(history, model=args.model, backend=args.backend, settings=settings,
                                 thinking=thinking, system_prompt=args.system,
                                 options=load_options(playground, spec, args), toolbox=toolbox_for(playground, args),
                                 loop_guard=args.loop_guard)

    def progress(fraction: float, message: str) -> None:
        if not args.json:
            print(f"[{fraction:4.0%}] {message}", file=sys.stderr, flush=True)

    section = None

    def show(event: Any) -> None:
        nonlocal section
        if args.json:
            return
        if isinstance(event, ToolCallStarted):
            print(f"\n--- tool call: {event.name} {json.dumps(event.arguments, ensure_ascii=False)} ---", flush=True)
            section = None
        elif isinstance(event, ToolResult):
            label = f"error ({event.error})" if event.error else "result"
            print(f"--- {label}, {event.duration_s:.2f}s ---\n{event.content}", flush=True)
            section = None
        if not isinstance(event, (ReasoningDelta, AnswerDelta)):
            return
        kind = "reasoning" if isinstance(event, ReasoningDelta) else "answer"
        if kind != section:
            print(("\n" if section else "") + ("--- reasoning ---" if kind == "reasoning" else "--- answer ---"))
            section = kind
        print(event.text, end="", flush=True)

    result = playground.reply(request, progress, on_event=show)
    retried = None
    if result.reply.stop_reason == "repeating" and not args.json:
        loop = result.reply.loop
        print(f"\n--- stopped: repeating (the same {loop.period_chars} characters {loop.repeats} times) ---",
              flush=True)
    if result.reply.stop_reason == "repeating" and getattr(args, "retry_on_loop", False):
        retry, changed = loop_retry(playground, request)
        print("retrying once with " + ", ".join(f"{name} {old} -> {new}" for name, (old, new) in changed.items()),
              file=sys.stderr, flush=True)
        section = None
        retried = {"changed": changed, "first": {"stop_reason": "repeating", "stats": result.to_dict()["stats"]}}
        result = playground.reply(retry, progress, on_event=show)
        if result.reply.stop_reason == "repeating" and not args.json:
            print("\n--- stopped: repeating again ---", flush=True)
    data = result.to_dict()
    if retried is not None:
        data["retried"] = retried
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        stats = data["stats"]
        ttft = f"{stats['ttft_s']:.3f}s" if stats.get("ttft_s") is not None else "-"
        speed = f"{stats['tokens_per_s']:.1f}" if stats.get("tokens_per_s") else "-"
        if result.reply.stats:
            print(f"\n--- {stats['prompt_tokens']} prompt + {stats['completion_tokens']} completion tokens, "
                  f"first token {ttft}, {speed} tokens/s, load {stats['load_s']:.2f}s, seed {stats['seed']} "
                  f"({stats['finish_reason']}) ---")
    if result.reply.error or data.get("stop_reason") == "round_limit":
        print(f"\nerror: {result.reply.error or data['error']}", file=sys.stderr)
        return 1
    return 0


def loop_retry(playground: Any, request: Any) -> tuple[Any, dict[str, list[Any]]]:
    """The request to retry a reply the loop guard stopped: presence_penalty 1.5
    (``Playground.loop_retry_settings``); when it already was, a fresh seed instead of the same
    reply again. Returns (request, {setting: [old, new]})."""
    import random
    from dataclasses import replace

    from core.settings import SCHEMA_BY_NAME

    settings, changed = playground.loop_retry_settings(request.settings)
    if not changed:
        seed = random.SystemRandom().randrange(SCHEMA_BY_NAME["seed"].maximum)
        changed = {"seed": [settings.seed, seed]}
        settings = settings.with_updates(seed=seed)
    return replace(request, settings=settings.validate(request.thinking)), changed


def cmd_compare(args: argparse.Namespace) -> int:
    remote_defaults(args)  # --base-url alone means the remote backend, as for chat
    if not 1 <= len(args.models) <= 4:
        raise PlaygroundError("compare takes 1 to 4 models (--models A B C)")
    if args.prompt is None and not (args.score or args.perplexity):
        raise PlaygroundError("compare needs --prompt, --score or --perplexity")
    playground = playground_for(args)
    try:
        return _compare(playground, args)
    finally:
        playground.close()  # MCP servers stop with the command


def _compare(playground: Any, args: argparse.Namespace) -> int:
    from core.compare import CallCheck
    from core.events import AnswerDelta, LoopStopped, ReasoningDelta
    from core.tools import ToolResult
    from playground import load_fresh
    from playground.compare import EntrySpec, add_published, collect, new_comparison, run_comparison

    specs = [playground.resolve(model, args.backend) for model in args.models]  # fail fast on a bad name
    settings, thinking = resolve_settings(playground, args, any(spec.quantized for spec in specs))
    settings = settings.validate(thinking)
    entries = [EntrySpec(model, args.backend, load_options(playground, spec, args))
               for model, spec in zip(args.models, specs)]
    # the tool flags (add_tool_flags) are optional for this command; MCP servers start now: a bad one fails fast
    toolbox = toolbox_for(playground, args) if hasattr(args, "mcp") else None
    score = score_text(args.score) if args.score else None  # a bad file fails before any load
    if args.prompt is not None:
        playground.request([{"role": "user", "content": args.prompt}], model=args.models[0], backend=args.backend,
                           settings=settings, thinking=thinking, system_prompt=args.system,
                           options=entries[0].options, toolbox=toolbox)  # prompt and settings checked before any load
    comparison = new_comparison(entries, args.prompt or "", settings, thinking, args.system or "")
    add_published(playground, comparison, entries)  # presets/published_figures.json, beside the measured figures

    def show(event) -> None:
        if args.json or args.markdown:
            return
        label = comparison.entries[event.index].label
        payload = event.payload
        if event.kind == "loaded":
            print(f"\n=== {label} (loaded in {payload.load_s:.2f}s) ===", flush=True)
        elif event.kind == "event" and isinstance(payload, (ReasoningDelta, AnswerDelta)):
            print(payload.text, end="", flush=True)
        elif event.kind == "event" and isinstance(payload, CallCheck):
            call = json.dumps(payload.arguments, ensure_ascii=False) if payload.arguments is not None else payload.raw
            invalid = f" (invalid: {payload.problem})" if payload.problem else ""
            print(f"\n--- {label}: tool call: {payload.name or '?'} {call}{invalid} ---", flush=True)
        elif event.kind == "event" and isinstance(payload, ToolResult):
            outcome = f"error ({payload.error})" if payload.error else "result"
            print(f"--- {outcome}, {payload.duration_s:.2f}s ---\n{payload.content}", flush=True)
        elif event.kind == "event" and isinstance(payload, LoopStopped):
            print(f"\n=== {label}: stopped: repeating ===", flush=True)
        elif event.kind == "error":
            print(f"\n=== {label}: error: {payload} ===", flush=True)

    if args.prompt is not None:
        histories = comparison.start_turn(args.prompt, toolbox)
        collect(comparison, run_comparison(playground, entries, histories, settings, thinking,
                                           system_prompt=args.system or "", acquire=load_fresh,
                                           concurrent=args.concurrent, toolbox=toolbox,
                                           loop_guard=args.loop_guard), show)
    if args.perplexity:
        score_perplexity(playground, comparison, entries, args.perplexity)
    if score is not None:
        score_drift_into(playground, comparison, entries, score, args.score_context, args.score_stride)
    if args.json:
        print(comparison.to_json())
    else:
        print(("" if args.markdown else "\n\n") + comparison.to_markdown())
    return 0 if all(e.error is None for e in comparison.entries) else 1


def score_perplexity(playground: Any, comparison: Any, entries: list[Any], text: str) -> None:
    """Perplexity of ``text`` (or a shipped text's name) on every entry, into the comparison."""
    from core.texts import scoring_text
    from playground import load_fresh

    body = scoring_text(text)
    for entry, result in zip(entries, comparison.entries):
        try:
            with load_fresh(playground.resolve(entry.model, entry.backend), entry.options, None) as backend:
                result.perplexity = backend.perplexity(body).to_dict()
        except PlaygroundError as exc:
            result.error = result.error or f"perplexity: {exc}"


def score_text(value: str) -> str:
    """``--score``'s text: a shipped text's name, a file's path, or the text itself."""
    from pathlib import Path

    from core.texts import TEXTS, scoring_text

    path = Path(value).expanduser()
    if value not in TEXTS and "\n" not in value and len(value) < 4096 and path.is_file():
        try:
            return scoring_text(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise PlaygroundError(f"cannot read the text to score from {path}: {exc}") from None
    return scoring_text(value)


def score_drift_into(playground: Any, comparison: Any, entries: list[Any], text: str, context: int,
                     stride: int) -> None:
    """Drift of every entry from the first on ``text`` (``playground.drift``), into the comparison."""
    from playground.drift import DriftEntry, score_drift

    results = score_drift(playground, [DriftEntry(e.model, e.backend, e.options) for e in entries], text,
                          context=context, stride=stride)
    for result, outcome in zip(comparison.entries, results):
        if isinstance(outcome, PlaygroundError):
            result.error = result.error or f"drift: {outcome}"
        else:
            result.drift = outcome.to_dict()


def cmd_models(args: argparse.Namespace) -> int:
    from backends.hub import available_offline

    rows = [{**spec.to_dict(), "offline": available_offline(spec)} for spec in playground_for(args).catalog]
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
