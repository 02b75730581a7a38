"""Speed: the playground's streaming path vs the bare library, on the same loaded model.

    python -m bench.speed                                  # the tiny models (offline, ~1 min)
    python -m bench.speed --size 0.6b                      # random-weight Qwen3-0.6B-shaped models
    python -m bench.speed --size tiny 0.6b --models bf16 gguf-q8_0 --tokens 128 --repeats 7

For every model, in one process, with one CPU thread, greedy decoding, thinking off and a fixed
number of new tokens (the tiny models' "endless" prompt, ``Sing la la la forever.``, never stops;
the random-weight models cannot emit an end-of-turn token, see ``tinymodels.random_size``):

- **playground**: ``Playground.request`` + ``Playground.chat`` (the per-message checks, the pool's
  lease, the backend's ``stream_chat``) consumed as the UI consumes it.  Time to first token
  (TTFT) is the call to the first streamed text; it includes everything the playground does
  (settings check, history rules, chat template, tokenization, worker thread, reasoning parser).
- **bare**: the library itself on the backend's own loaded object, with the prompt ids the
  playground sent (computed before the clock starts):
  transformers / gptq: ``model.generate(input_ids, ...)`` in the calling thread with a streamer
  that only records timestamps; llama.cpp: ``llm.generate(prompt_tokens, temp=0)`` token by token
  (llama-cpp-python's own loop, which ``create_completion`` runs on: the strictest baseline).

Tokens/s on both sides is (tokens - 1) / (last text - first text) as seen by the consumer, over
``--tokens`` new tokens; TTFT comes from separate one-token runs (``--ttft-repeats``, cheap, so
many more pairs: a 0.6B prefill on a busy machine swings by tens of ms).  Each side runs once to
warm up, then the runs alternate (A B, B A, A B, ...) and the report gives the medians of the
per-pair ratio and TTFT difference.  Every run starts from an empty KV cache.

Multi-turn: a chat of ``--turns`` long user messages (``bench.kv_reuse``); TTFT at turn 1 and at
the last turn with the backend's KV prefix reuse (transformers' ``PrefixCache``, llama.cpp's own),
and the last turn again with the cache dropped before every turn.

Writes ``<out>/latest.md`` and ``<out>/latest.json`` (machine, library versions, date, every run).
"""
from __future__ import annotations

import os

# One thread on both sides of every comparison (2 busy cores: two threads make timings swing).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import datetime as _dt  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ENDLESS_PROMPT = "Sing la la la forever."
TARGET_RATIO = 0.97
TARGET_TTFT_MS = 10.0
SIZES = ("tiny", "0.6b")
DEFAULT_MODELS = {
    "tiny": ("bf16", "fp8", "gptq-int4", "gguf-f16", "gguf-q8_0", "gguf-q4_k_m"),
    "0.6b": ("bf16", "fp8", "gptq-int4", "gguf-q8_0"),
}
DEFAULT_TOKENS = {"tiny": 128, "0.6b": 32}
DEFAULT_REPEATS = {"tiny": 15, "0.6b": 7}
DEFAULT_WORDS = {"tiny": 600, "0.6b": 200}  # words pasted into every user turn of the long chat


# -- the machine -------------------------------------------------------------------------------
def _cpuinfo() -> dict[str, Any]:
    info: dict[str, Any] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"model": platform.processor() or platform.machine()}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and "model" not in info:
            info["model"] = value
        elif key == "flags" and "flags" not in info:
            wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8",
                      "f16c", "fma")
            info["flags"] = [f for f in value.split() if f in wanted]
    return info


def _gpu() -> str | None:
    try:
        import torch

        if torch.cuda.is_available():
            return ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    except Exception:  # noqa: BLE001
        pass
    return None


def _version(module: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(module)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    cpu = _cpuinfo()
    try:
        import psutil

        memory_gb = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        memory_gb = None
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu.get("model"),
        "cpu_flags": cpu.get("flags", []),
        "logical_cores": os.cpu_count(),
        "memory_gb": memory_gb,
        "gpu": _gpu(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in (
            "torch", "transformers", "tokenizers", "llama_cpp_python", "gptqmodel", "gguf", "numpy")},
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


# -- models ------------------------------------------------------------------------------------
def model_ref(size: str, fmt: str) -> str:
    """What ``open_model`` gets: a tiny catalog name, or the path of a random-weight build."""
    if size == "tiny":
        return f"tiny-{fmt}"
    import tinymodels
    from tinymodels.gguf import gguf_file
    from tinymodels.random_size import format_name

    folder = tinymodels.build((format_name(fmt),), progress=_progress)[format_name(fmt)]
    return str(gguf_file(folder)) if fmt.startswith("gguf") else str(folder)


def _progress(fraction: float, message: str) -> None:
    print(f"  [{fraction:4.0%}] {message}", file=sys.stderr, flush=True)


def forget_cache(backend: Any) -> None:
    """Drop the backend's KV cache, so that the next prompt is read in full."""
    if getattr(backend, "llm", None) is not None:
        backend.llm.reset()
    cache = getattr(backend, "_prefix_cache", None)
    if cache is not None:
        cache.clear()


def prompt_ids(backend: Any, messages: list[dict], thinking: bool) -> list[int]:
    """The token ids the playground sends for ``messages`` (the bare run gets the same)."""
    from core.chat import model_messages

    prompt = model_messages(messages)
    if hasattr(backend, "encode_prompt"):
        return list(backend.encode_prompt(prompt, thinking))
    text = backend.render_prompt(prompt, thinking)
    return list(backend.tokenizer(text, add_special_tokens=False)["input_ids"])


# -- one run -----------------------------------------------------------------------------------
@dataclass
class Run:
    path: str  # "playground" | "bare"
    tokens: int
    ttft_s: float  # call -> first text (playground) / first token (bare)
    decode_s: float  # first -> last text/token
    total_s: float
    cpu_s: float  # CPU time of the whole process (every thread) during the run
    text: str = ""
    internal_ttft_s: float | None = None  # the backend's own GenerationStats.ttft_s
    internal_tokens_per_s: float | None = None

    @property
    def tokens_per_s(self) -> float | None:
        return (self.tokens - 1) / self.decode_s if self.tokens > 1 and self.decode_s > 0 else None

    def row(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("text")
        out["tokens_per_s"] = self.tokens_per_s
        return {k: (float(f"{v:.5g}") if isinstance(v, float) else v) for k, v in out.items()}


def run_playground(playground: Any, backend: Any, messages: list[dict], settings: Any) -> Run:
    from core.events import GenerationStats
    from playground import ModelReady

    forget_cache(backend)
    first = last = None
    text: list[str] = []
    stats = None
    cpu = time.process_time()
    started = time.perf_counter()
    request = playground.request(messages, model=backend.spec.source, backend=backend.name, settings=settings,
                                 thinking=False, options=backend.options)
    for event in playground.chat(request):
        now = time.perf_counter()
        if isinstance(event, ModelReady):
            continue
        if isinstance(event, GenerationStats):
            stats = event
            continue
        if event.text:
            first = first or now
            last = now
            text.append(event.text)
    ended = time.perf_counter()
    cpu = time.process_time() - cpu
    if stats is None or first is None:
        raise RuntimeError("the playground streamed no text")
    return Run("playground", stats.completion_tokens, first - started, last - first, ended - started, cpu,
               "".join(text), stats.ttft_s, stats.tokens_per_s)


def bare_runner(backend: Any, ids: list[int], max_new_tokens: int) -> Callable[[], Run]:
    """A function doing the same generation with the bare library on ``backend``'s own objects."""
    if getattr(backend, "llm", None) is not None:
        return _bare_llama_cpp(backend, ids, max_new_tokens)
    return _bare_transformers(backend, ids, max_new_tokens)


def _bare_transformers(backend: Any, ids: list[int], max_new_tokens: int) -> Callable[[], Run]:
    import torch
    from transformers import GenerationConfig
    from transformers.generation.streamers import BaseStreamer

    model, tokenizer = backend.model, backend.tokenizer
    input_ids = torch.tensor([ids], device=model.device)
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False,
                              eos_token_id=tokenizer.eos_token_id,
                              pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)

    class Timestamps(BaseStreamer):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.prompt = True

        def put(self, value: Any) -> None:
            if self.prompt:  # generate first puts the prompt
                self.prompt = False
                return
            self.times.append(time.perf_counter())

        def end(self) -> None:
            pass

    def run() -> Run:
        streamer = Timestamps()
        cpu = time.process_time()
        started = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                 generation_config=config, streamer=streamer)
        ended = time.perf_counter()
        cpu = time.process_time() - cpu
        new = out[0, input_ids.shape[1]:].tolist()
        times = streamer.times
        return Run("bare", len(new), times[0] - started, times[-1] - times[0], ended - started, cpu,
                   tokenizer.decode(new, skip_special_tokens=True))

    return run


def _bare_llama_cpp(backend: Any, ids: list[int], max_new_tokens: int) -> Callable[[], Run]:
    import llama_cpp

    llm = backend.llm
    vocab = llm._model.vocab

    def run() -> Run:
        llm.reset()
        out: list[int] = []
        times: list[float] = []
        cpu = time.process_time()
        started = time.perf_counter()
        stream = llm.generate(ids, temp=0.0, top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0)
        for token in stream:
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                break
            times.append(time.perf_counter())
            out.append(token)
            if len(out) >= max_new_tokens:
                break
        stream.close()
        ended = time.perf_counter()
        cpu = time.process_time() - cpu
        return Run("bare", len(out), times[0] - started, times[-1] - times[0], ended - started, cpu,
                   llm.detokenize(out).decode("utf-8", errors="replace"))

    return run


# -- one model ---------------------------------------------------------------------------------
def interleaved(paths: dict[str, Callable[[], Run]], repeats: int) -> tuple[list[Run], list[Run]]:
    """One warm-up run of each path, then ``repeats`` of each alternating A B, B A, ...

    Returns (playground runs, bare runs), pair by pair.
    """
    for fn in paths.values():  # warm-up: first calls allocate buffers, compile kernels...
        fn()
    runs: dict[str, list[Run]] = {"playground": [], "bare": []}
    for i in range(repeats):
        for name in (("playground", "bare") if i % 2 == 0 else ("bare", "playground")):
            runs[name].append(paths[name]())
    return runs["playground"], runs["bare"]


def _median(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _same_text(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


def bench_model(size: str, fmt: str, args: argparse.Namespace) -> dict[str, Any]:
    from bench.kv_reuse import run_chat
    from core.request import LoadOptions
    from core.settings import GenerationSettings
    from playground import Playground

    tokens = args.tokens or DEFAULT_TOKENS[size]
    result: dict[str, Any] = {"size": size, "format": fmt}
    ref = model_ref(size, fmt)
    started = time.perf_counter()
    playground = Playground()
    lease = playground.lease(playground.resolve(ref), LoadOptions(threads=1, context_length=args.context,
                                                                  device="cpu"))
    backend = lease.__enter__()  # held (never evicted) until the end of this model's runs
    result.update(model=ref if size == "tiny" else f"random-0.6b-{fmt}", backend=backend.name,
                  load_s=round(time.perf_counter() - started, 2))
    try:
        info = backend.describe()
        result.update(quantization=info.quantization, dtype=info.dtype, memory_mib=round(info.memory_bytes / 2**20, 1),
                      details={k: v for k, v in info.details.items()
                               if k in ("kernel", "architecture", "chat_template")})
        messages = [{"role": "user", "content": ENDLESS_PROMPT}]
        settings = GenerationSettings(temperature=0.0, top_p=1.0, top_k=0, min_p=0.0, max_new_tokens=tokens, seed=0)
        ids = prompt_ids(backend, messages, thinking=False)
        bare = bare_runner(backend, ids, tokens)
        result.update(prompt_tokens=len(ids), max_new_tokens=tokens, repeats=args.repeats or DEFAULT_REPEATS[size],
                      ttft_repeats=args.ttft_repeats,
                      bare_path="llm.generate" if getattr(backend, "llm", None) is not None else "model.generate")
        paths = {"playground": lambda: run_playground(playground, backend, messages, settings), "bare": bare}
        repeats = args.repeats or DEFAULT_REPEATS[size]
        play, base = interleaved(paths, repeats)
        ratios = [p.tokens_per_s / b.tokens_per_s for p, b in zip(play, base) if p.tokens_per_s and b.tokens_per_s]
        # TTFT from its own runs of one new token: many more pairs for the same time, so that a
        # few ms of difference stands out of a busy machine's noise even for a 0.6B prefill.
        one = settings.with_updates(max_new_tokens=1)
        first = {"playground": lambda: run_playground(playground, backend, messages, one),
                 "bare": bare_runner(backend, ids, 1)}
        play1, base1 = interleaved(first, args.ttft_repeats)
        result.update(
            tokens_generated={"playground": sorted({r.tokens for r in play}), "bare": sorted({r.tokens for r in base})},
            same_output=all(_same_text(p.text, b.text) for p, b in zip(play, base)),
            playground_tokens_per_s=_median([r.tokens_per_s for r in play]),
            bare_tokens_per_s=_median([r.tokens_per_s for r in base]),
            ratio=_median(ratios),
            playground_ttft_ms=_median([r.ttft_s * 1000 for r in play1]),
            bare_ttft_ms=_median([r.ttft_s * 1000 for r in base1]),
            ttft_delta_ms=_median([(p.ttft_s - b.ttft_s) * 1000 for p, b in zip(play1, base1)]),
            ttft_delta_ms_long_runs=_median([(p.ttft_s - b.ttft_s) * 1000 for p, b in zip(play, base)]),
            total_ratio=_median([b.total_s / p.total_s for p, b in zip(play, base)]),
            # Noise-robust companion on a shared machine: CPU time the same generation takes
            # (bare / playground; < 1 = the playground does more work). GIL waits are not in it.
            cpu_ratio=_median([b.cpu_s / p.cpu_s for p, b in zip(play, base) if p.cpu_s > 0]),
            best_ratio=(max(r.tokens_per_s or 0 for r in play) / max(r.tokens_per_s or 0 for r in base)
                        if any(r.tokens_per_s for r in base) else None),
            runs=[r.row() for r in play + base],
            ttft_runs=[r.row() for r in play1 + base1],
        )
        result["meets_targets"] = bool(result["ratio"] and result["ratio"] >= TARGET_RATIO
                                       and result["ttft_delta_ms"] < TARGET_TTFT_MS)
        if args.turns > 1:
            words = args.words or DEFAULT_WORDS[size]
            chat = dict(settings=settings.with_updates(max_new_tokens=args.turn_tokens), thinking=False,
                        forget=lambda: forget_cache(backend))
            forget_cache(backend)
            reused = run_chat(playground, backend, args.turns, words, args.turn_tokens, True, **chat)
            multi: dict[str, Any] = {"turns": args.turns, "words_per_turn": words, "reuse": reused}
            if not args.no_baseline:
                multi["no_reuse"] = run_chat(playground, backend, args.turns, words, args.turn_tokens, False,
                                             **chat)
            result["multi_turn"] = multi
    finally:
        lease.__exit__(None, None, None)
        playground.pool.unload_all()
    return result


# -- report ------------------------------------------------------------------------------------
def _fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _repeats(report: dict[str, Any]) -> str:
    counts = {}
    for r in report["results"]:
        if "repeats" in r:
            counts.setdefault(r["size"], r["repeats"])
    if len(set(counts.values())) == 1:
        return str(next(iter(counts.values())))
    return ", ".join(f"{n} ({size})" for size, n in counts.items()) or str(report["settings"].get("repeats"))


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    v = m["versions"]
    lines = [
        f"Command: `{report['command']}`",
        "",
        f"Machine: {m['cpu']}, {m['logical_cores']} logical cores, {m['memory_gb']} GB RAM, "
        f"GPU: {m['gpu'] or 'none'}; 1 thread on both sides; {m['date']}; load average "
        f"{m['load_average'][0]} at the start, {(m.get('load_average_end') or ['?'])[0]} at the end "
        "(a shared machine: other jobs may run, hence medians of interleaved runs).",
        f"Libraries: torch {v['torch']}, transformers {v['transformers']}, tokenizers {v['tokenizers']}, "
        f"llama-cpp-python {v['llama_cpp_python']}, gptqmodel {v['gptqmodel']}.",
        "",
        f"Greedy, thinking off, one prompt (`{ENDLESS_PROMPT}`). Tokens/s: {_repeats(report)} "
        f"interleaved runs per side after a warm-up; ratio = playground ÷ bare (target ≥ {TARGET_RATIO}). "
        f"TTFT: {report['settings'].get('ttft_repeats', '?')} interleaved one-token runs per side; ΔTTFT = "
        f"playground − bare (target < {TARGET_TTFT_MS:g} ms). Medians of per-pair values. CPU ratio = CPU "
        "time of the bare run ÷ the playground's for the same tokens (all threads; steadier than wall time "
        "on a shared machine, but blind to waits).",
        "",
        "| model | backend | bare path | new tokens | playground tok/s | bare tok/s | ratio | CPU ratio "
        "| TTFT playground ms | TTFT bare ms | ΔTTFT ms | targets |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|:-:|",
    ]
    for r in report["results"]:
        if "error" in r:
            lines.append(f"| {r['model']} | {r.get('backend', '?')} |" + " – |" * 9 + " error: "
                         f"{r['error'][:80]} |")
            continue
        ok = "✓" if r["meets_targets"] else "✗"
        same = "" if r["same_output"] else " (outputs differ!)"
        lines.append(
            f"| {r['model']} | {r['backend']} | `{r['bare_path']}` | {r['max_new_tokens']} "
            f"| {_fmt(r['playground_tokens_per_s'])} | {_fmt(r['bare_tokens_per_s'])} | {_fmt(r['ratio'], 3)} "
            f"| {_fmt(r.get('cpu_ratio'), 3)} | {_fmt(r['playground_ttft_ms'])} | {_fmt(r['bare_ttft_ms'])} "
            f"| {_fmt(r['ttft_delta_ms'])} | {ok}{same} |")
    multi = [r for r in report["results"] if r.get("multi_turn")]
    if multi:
        turns = multi[0]["multi_turn"]["turns"]
        lines += [
            "",
            f"Multi-turn: a chat of {turns} long user messages (`bench.kv_reuse`), {report['settings']['turn_tokens']} "
            "new tokens per reply; time to first streamed text with the backend's KV prefix reuse, and at the "
            "last turn again with the cache dropped before every turn.",
            "",
            f"| model | backend | words/turn | turn 1 prompt | turn 1 TTFT ms | turn {turns} prompt (cached) "
            f"| turn {turns} TTFT ms | turn {turns} without reuse ms |",
            "|---|---|--:|--:|--:|--:|--:|--:|",
        ]
        for r in multi:
            mt = r["multi_turn"]
            first, last = mt["reuse"][0], mt["reuse"][-1]
            base = mt.get("no_reuse")
            lines.append(
                f"| {r['model']} | {r['backend']} | {mt['words_per_turn']} | {first['prompt_tokens']:,} "
                f"| {_fmt(first['first_text_s'] * 1000)} | {last['prompt_tokens']:,} ({last['cached_prompt_tokens']:,}) "
                f"| {_fmt(last['first_text_s'] * 1000)} | {_fmt(base[-1]['first_text_s'] * 1000) if base else '–'} |")
    return "\n".join(lines) + "\n"


def to_json(report: dict[str, Any]) -> str:
    """Indented JSON with every run (and multi-turn row) on one line: readable, and small."""
    rows: list[str] = []

    def compact(value: Any) -> Any:
        if isinstance(value, dict):
            if "path" in value or "turn" in value:
                rows.append(json.dumps(value, ensure_ascii=False))
                return f"@@row{len(rows) - 1}@@"
            return {k: compact(v) for k, v in value.items()}
        if isinstance(value, list):
            return [compact(v) for v in value]
        return value

    text = json.dumps(compact(report), indent=1, ensure_ascii=False)
    for i, row in enumerate(rows):
        text = text.replace(f'"@@row{i}@@"', row, 1)
    return text + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.speed", description=__doc__.split("\n")[0])
    parser.add_argument("--size", nargs="+", choices=SIZES, default=["tiny"],
                        help="tiny: the trained tiny models; 0.6b: random-weight Qwen3-0.6B-shaped models "
                             "(built on first use, a few minutes) [tiny]")
    parser.add_argument("--models", nargs="+", default=None,
                        help="formats, e.g. bf16 fp8 gptq-int4 gguf-q8_0 [every format of the size]")
    parser.add_argument("--tokens", type=int, default=None, help="new tokens per run [tiny 128, 0.6b 32]")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved runs per side [tiny 15, 0.6b 7]")
    parser.add_argument("--ttft-repeats", type=int, default=15,
                        help="interleaved one-token runs per side for time to first token [15]")
    parser.add_argument("--turns", type=int, default=8, help="turns of the multi-turn chat; 0 skips it [8]")
    parser.add_argument("--words", type=int, default=None, help="words per user turn [tiny 600, 0.6b 200]")
    parser.add_argument("--turn-tokens", type=int, default=8, help="new tokens per multi-turn reply [8]")
    parser.add_argument("--no-baseline", action="store_true", help="skip the multi-turn run without KV reuse")
    parser.add_argument("--context", type=int, default=16384,
                        help="llama.cpp context cap, tokens (memory) [16384]")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="[bench/results]")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(ROOT))
    from cli import quiet_libraries

    quiet_libraries()
    report: dict[str, Any] = {
        "command": "python -m bench.speed " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
        "settings": {"repeats": args.repeats, "ttft_repeats": args.ttft_repeats, "tokens": args.tokens,
                     "turns": args.turns, "words": args.words,
                     "turn_tokens": args.turn_tokens, "threads": 1, "greedy": True, "thinking": False,
                     "prompt": ENDLESS_PROMPT, "llama_cpp_context": args.context},
        "results": [],
    }
    for size in args.size:
        for fmt in args.models or DEFAULT_MODELS[size]:
            print(f"{size} {fmt} ...", file=sys.stderr, flush=True)
            try:
                result = bench_model(size, fmt, args)
            except Exception as exc:  # noqa: BLE001  (one failing backend must not lose the rest)
                traceback.print_exc()
                result = {"size": size, "format": fmt, "model": f"{size}-{fmt}",
                          "error": f"{type(exc).__name__}: {exc}"}
            report["results"].append(result)
            if "error" not in result:
                print(f"  ratio {_fmt(result['ratio'], 3)}, ΔTTFT {_fmt(result['ttft_delta_ms'])} ms "
                      f"({_fmt(result['playground_tokens_per_s'])} vs {_fmt(result['bare_tokens_per_s'])} tok/s)",
                      file=sys.stderr, flush=True)
    report["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(to_json(report))
    text = markdown(report)
    (args.out / "latest.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
