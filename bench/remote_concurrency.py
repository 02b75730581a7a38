"""Four visitors, one remote server: are their chats served at the same time?

    python -m bench.remote_concurrency                       # 4 calls, replies of ~1 s, medians of 3
    python -m bench.remote_concurrency --calls 8 --reply-seconds 2 --repeats 5

Starts a loopback OpenAI-compatible server (``tests/openai_loopback.py``: every reply is 10
reasoning deltas then 10 answer deltas spread over ``--reply-seconds``, any number of requests at
once), then the playground web app as a user would start it::

    QWEN3_PLAYGROUND_REMOTE_URL=http://127.0.0.1:<port>/v1 python app.py --port P \\
        --model remote:loopback-qwen3 --concurrency 8

and, through ``gradio_client``, times ``/chat``: one call alone (median of ``--repeats``), then
``--calls`` calls submitted at the same time from as many clients (time until the last one
finished; median of ``--repeats``).  ratio = concurrent ÷ single: 1.0 means the calls were served
in parallel, ``--calls`` means one after another (target <= 1.2).  It also reports the most
requests the server had in flight at once, and checks every reply is the complete scripted one.

The clients run in this process and share one SSL context (``--no-ssl-cache`` to measure without:
gradio_client builds one per call, ~0.1 s of CPU each, which four calls at once queue for on the
GIL; see :func:`cache_client_ssl_context`).

Writes ``bench/results/remote_concurrency.json`` and prints a Markdown table row.  The app is a
subprocess, stopped at the end (also on an error); its output goes to a temporary log file.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from openai_loopback import DEFAULT_MODEL, LoopbackServer, reply_parts, scripted_reply, start_app  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "remote_concurrency.json"
TARGET = 1.2
# The Qwen3 card's thinking preset; max_new_tokens above the reply's 20 chunks.
SETTINGS = dict(system_prompt="", thinking=True, temperature=0.6, top_p=0.95, top_k=20, min_p=0.0,
                presence_penalty=0.0, max_new_tokens=512, seed=0, yarn_factor=1.0)


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = None
    try:
        memory_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    versions = {}
    from importlib.metadata import PackageNotFoundError, version

    for name in ("gradio", "gradio_client", "openai", "httpx"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    commit = None
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        commit = (head + ("+changes" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "memory_gb": memory_gb,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "git": commit,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system, all threads) process ``pid`` has used so far (Linux), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class CpuMeter:
    """CPU seconds used by the app (its process) and by this process (clients + loopback server)."""

    def __init__(self, app_pid: int) -> None:
        self.app_pid = app_pid
        self.app = process_cpu_s(app_pid)
        self.here = time.process_time()

    def read(self) -> dict[str, float | None]:
        app = process_cpu_s(self.app_pid)
        return {"app_cpu_s": round(app - self.app, 3) if app is not None and self.app is not None else None,
                "bench_cpu_s": round(time.process_time() - self.here, 3)}


def cache_client_ssl_context() -> bool:
    """Make this process's httpx clients share one default SSL context; True if done.

    gradio_client sends every call with ``httpx.post``: a new httpx client, hence a new SSL
    context, which loads the whole CA bundle (~0.1 s of CPU) even for http://127.0.0.1.  Four
    calls submitted at once queue on this process's GIL for that, which would add ~0.2-0.4 s to
    the concurrent time although the app is not involved (real visitors are separate browsers).
    Only this process (the measuring clients) is changed, never the app.
    """
    import functools

    try:
        import httpx._transports.default as transport
    except ImportError:
        return False
    original = getattr(transport, "create_ssl_context", None)
    if original is None:
        return False
    if getattr(original, "cached_by_bench", False):
        return True
    cached = functools.lru_cache(maxsize=8)(original)

    def create_ssl_context(verify: Any = True, cert: Any = None, trust_env: bool = True) -> Any:
        try:
            return cached(verify, cert, trust_env)
        except TypeError:  # unhashable arguments (an SSLContext, a list): not cached
            return original(verify=verify, cert=cert, trust_env=trust_env)

    create_ssl_context.cached_by_bench = True  # type: ignore[attr-defined]
    transport.create_ssl_context = create_ssl_context
    return True


class Visitor:
    """One gradio_client.Client, as one visitor of the app."""

    def __init__(self, url: str, model: str, timeout: float) -> None:
        from gradio_client import Client

        self.client = Client(url, verbose=False, download_files=False)
        self.model = model
        self.timeout = timeout

    def chat(self, message: str) -> Call:
        """One /chat call, the arguments by keyword."""
        started = time.perf_counter()
        job = self.client.submit(message=message, history=[], model=self.model, **SETTINGS, api_name="/chat")
        history = job.result(timeout=self.timeout)
        return Call(message, started, time.perf_counter(), history)


@dataclass
class Call:
    message: str
    started: float  # time.perf_counter(): the same clock as the loopback server's timings
    finished: float
    history: list[dict]

    @property
    def seconds(self) -> float:
        return self.finished - self.started


def split_time(calls: list[Call], server: LoopbackServer) -> dict[str, float | None]:
    """Where the calls' time went, from the server's timings: median seconds from the call's
    start until its request reached the server (``before_server_s``), and from the end of the
    server's reply until the client had the result (``after_server_s``)."""
    by_message = {body["messages"][-1]["content"]: timing for body, timing in zip(server.requests, server.timings)}
    before, after = [], []
    for call in calls:
        timing = by_message.get(call.message)
        if timing and timing["ended"] is not None:
            before.append(timing["arrived"] - call.started)
            after.append(call.finished - timing["ended"])
    return {"before_server_s": round(statistics.median(before), 3) if before else None,
            "after_server_s": round(statistics.median(after), 3) if after else None}


def check_reply(message: str, history: list[dict], thinking: bool = True) -> None:
    """The reply is the server's complete scripted one for ``message`` (else RuntimeError)."""
    parts = reply_parts(history)
    reasoning, answer = scripted_reply(message)
    expected = {"reasoning": reasoning if thinking else "", "answer": answer}
    got = {"reasoning": parts["reasoning"], "answer": parts["answer"]}
    if got != expected or parts["errors"]:
        raise RuntimeError(f"wrong reply to {message!r}: got {got} (errors: {parts['errors']}), expected {expected}")


def concurrent_round(visitors: list[Visitor], tag: str) -> tuple[float, list[Call]]:
    """All visitors send their message at once; (seconds until the last reply, the calls)."""
    n = len(visitors)
    barrier = threading.Barrier(n + 1)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        message = f"Question {i + 1} of {n}, {tag}: what is {i + 2}+3?"
        barrier.wait(timeout=60)
        try:
            call = visitors[i].chat(message)
            check_reply(message, call.history)
            results[i] = call
        except BaseException as exc:  # noqa: BLE001  (reported below)
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for thread in threads:
        thread.start()
    barrier.wait(timeout=60)
    started = time.perf_counter()
    deadline = started + max(v.timeout for v in visitors) + 30
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.perf_counter()))
    elapsed = time.perf_counter() - started
    if any(thread.is_alive() for thread in threads):
        raise RuntimeError(f"a concurrent /chat call did not end within {deadline - started:g} s")
    for result in results:
        if isinstance(result, BaseException):
            raise RuntimeError(f"a concurrent /chat call failed: {type(result).__name__}: {result}") from result
    return elapsed, results


def run(args: argparse.Namespace) -> dict[str, Any]:
    model = f"remote:{args.served_name}"
    ssl_cached = cache_client_ssl_context() if args.ssl_cache else False
    started_machine = machine()
    with LoopbackServer(args.served_name, chunks=args.chunks, reply_seconds=args.reply_seconds) as server:
        flags = ("--model", model, "--concurrency", str(args.concurrency))
        print(f"loopback server {server.url}: {2 * server.chunks} deltas, one every {server.delay:g} s", flush=True)
        app = start_app(*flags, remote_url=server.url, timeout=args.timeout)
        visitors: list[Visitor] = []
        try:
            print(f"app {app.url} (pid {app.process.pid}, log {app.log})", flush=True)
            visitors += [Visitor(app.url, model, args.timeout) for _ in range(args.calls)]
            # one call per client, one after another: the first also waits for the model's load, and
            # a client's first call costs more (its connection, the API description) than later ones
            for i, visitor in enumerate(visitors):
                warm = visitor.chat(f"Warm-up {i + 1}: what is 1+1?")
                check_reply(warm.message, warm.history)
                print(f"warm-up call {i + 1}: {warm.seconds:.2f} s", flush=True)

            single: list[float] = []
            server.reset_stats()
            meter = CpuMeter(app.process.pid)
            calls = []
            for r in range(args.repeats):
                call = visitors[0].chat(f"Alone, round {r + 1}: what is 2+2?")
                check_reply(call.message, call.history)
                calls.append(call)
                single.append(call.seconds)
                print(f"1 call, round {r + 1}: {call.seconds:.2f} s", flush=True)
            server.wait_idle(timeout=30)
            single_split = split_time(calls, server)
            single_max_in_flight = server.max_in_flight
            single_cpu = {k: round(v / args.repeats, 3) if v is not None else None for k, v in meter.read().items()}
            print(f"single call: {single_split['before_server_s']} s before the server, "
                  f"{single_split['after_server_s']} s after its reply; CPU per call: app {single_cpu['app_cpu_s']} s, "
                  f"bench process {single_cpu['bench_cpu_s']} s", flush=True)

            concurrent: list[float] = []
            per_call: list[list[float]] = []
            splits: list[dict[str, float | None]] = []
            max_in_flight: list[int] = []
            meter = CpuMeter(app.process.pid)
            for r in range(args.repeats):
                server.wait_idle(timeout=30)
                server.reset_stats()
                elapsed, round_calls = concurrent_round(visitors, f"round {r + 1}")
                server.wait_idle(timeout=30)
                concurrent.append(elapsed)
                per_call.append([round(c.seconds, 3) for c in round_calls])
                splits.append(split_time(round_calls, server))
                max_in_flight.append(server.max_in_flight)
                print(f"{args.calls} calls at once, round {r + 1}: {elapsed:.2f} s "
                      f"(each: {', '.join(f'{c.seconds:.2f}' for c in round_calls)}; server max in flight "
                      f"{server.max_in_flight}; median {splits[-1]['before_server_s']} s before the server, "
                      f"{splits[-1]['after_server_s']} s after its reply)", flush=True)
            per_round = {k: round(v / args.repeats, 3) if v is not None else None for k, v in meter.read().items()}
            print(f"CPU per round of {args.calls} calls: app {per_round['app_cpu_s']} s, "
                  f"bench process {per_round['bench_cpu_s']} s", flush=True)
        finally:
            for visitor in visitors:
                visitor.client.close()
            code = app.stop()
            print(f"app stopped (exit status {code})", flush=True)

    single_s, concurrent_s = statistics.median(single), statistics.median(concurrent)
    ratio = concurrent_s / single_s
    return {
        "command": "python -m bench.remote_concurrency " + " ".join(sys.argv[1:]),
        "machine": {**started_machine, "load_average_end": [round(x, 2) for x in os.getloadavg()]},
        "settings": {"calls": args.calls, "repeats": args.repeats, "reply_seconds": args.reply_seconds,
                     "chunks": args.chunks, "app_flags": list(flags), "served_model": args.served_name,
                     "client_ssl_context_cached": ssl_cached, "chat": SETTINGS},
        "results": {
            "single_s": round(single_s, 3),
            "single_runs_s": [round(s, 3) for s in single],
            "concurrent_s": round(concurrent_s, 3),
            "concurrent_runs_s": [round(s, 3) for s in concurrent],
            "concurrent_per_call_s": per_call,
            "ratio": round(ratio, 3),
            "target_ratio": TARGET,
            "meets_target": ratio <= TARGET,
            "server_max_in_flight": max(max_in_flight),
            "server_max_in_flight_per_round": max_in_flight,
            "server_max_in_flight_single": single_max_in_flight,
            # medians: from a call's start to its request at the server, from the reply's end to the result
            "single_split_s": single_split,
            "concurrent_split_s_per_round": splits,
            # CPU seconds: app = the web app's process, bench = this process (gradio clients + loopback server)
            "cpu_per_single_call_s": single_cpu,
            "cpu_per_concurrent_round_s": per_round,
        },
    }


def markdown(report: dict[str, Any]) -> str:
    m, s, r = report["machine"], report["settings"], report["results"]
    header = ("| date | machine | git | reply s | 1 call s | " + f"{s['calls']} calls at once s | ratio | "
              "server max in flight | target ≤ 1.2 |")
    rule = "|---|---|---|--:|--:|--:|--:|--:|:-:|"
    row = (f"| {m['date'][:10]} | {m['cpu']}, {m['logical_cores']} cores | {m['git'] or '-'} | "
           f"{s['reply_seconds']:g} | {r['single_s']:.2f} | {r['concurrent_s']:.2f} | {r['ratio']:.2f} | "
           f"{r['server_max_in_flight']} of {s['calls']} | {'✓' if r['meets_target'] else '✗'} |")
    return "\n".join([header, rule, row])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.remote_concurrency",
                                     description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--calls", type=int, default=4, help="concurrent /chat calls [4]")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of each measurement (median) [3]")
    parser.add_argument("--reply-seconds", type=float, default=1.0, help="length of one server reply [1.0]")
    parser.add_argument("--chunks", type=int, default=10, help="reasoning deltas, then as many answer deltas [10]")
    parser.add_argument("--concurrency", type=int, default=8, help="the app's --concurrency [8]")
    parser.add_argument("--served-name", default=DEFAULT_MODEL, help=f"model name on the server [{DEFAULT_MODEL}]")
    parser.add_argument("--timeout", type=float, default=120.0, help="limit for the app's start and each call [120]")
    parser.add_argument("--no-ssl-cache", dest="ssl_cache", action="store_false",
                        help="let the measuring clients build an SSL context per call, as gradio_client does "
                             "(adds client-side CPU to the concurrent time; see cache_client_ssl_context)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON report [{RESULTS.relative_to(ROOT)}]")
    args = parser.parse_args(argv)
    try:
        report = run(args)
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    r = report["results"]
    print(f"\n1 call: {r['single_s']:.2f} s; {report['settings']['calls']} calls at once: {r['concurrent_s']:.2f} s; "
          f"ratio {r['ratio']:.2f} (target <= {TARGET}); server max in flight {r['server_max_in_flight']}")
    print(f"wrote {args.out}\n")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
