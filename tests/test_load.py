"""Load: 8 concurrent ``gradio_client`` sessions chat with the tiny models through ``/chat``.

Each session is its own ``gradio_client.Client`` (its own Gradio session) in its own thread; all
start together and run three turns each, so replies for different sessions interleave on the
shared models (one generation per model at a time, the queue's default concurrency as in
``app.py ui``). Half the sessions use tiny-bf16 (transformers, with its KV prefix reuse), half
tiny-gguf-q8_0 (llama.cpp, with its KV reuse): a cache kept across sessions would show up as
wrong answers.

Checked for every reply: it arrives, it is the scripted answer for that session's question, and
the returned history is exactly the session's own (its earlier turns unchanged, a per-session
marker note at the top, no other session's messages). Each session follows one rotation of the
cycle add -> sky -> fruit (the tiny model answers all of them reliably with thinking on, whatever
the seed); at any turn the sessions on one model ask different questions.

Latency (client side, submit -> last streamed update) p50/p95 is printed (``pytest -s``) and
written to ``artifacts/load.json``.
"""
from __future__ import annotations

import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

from tinymodels.script import (ADD_ANSWER, ADD_Q, ADD_REASONING, FRUIT_ANSWER, FRUIT_Q, FRUIT_REASONING, SKY_ANSWER,
                               SKY_Q, SKY_REASONING)

SESSIONS = 8
TURNS = 3
MODELS = ("tiny-bf16", "tiny-gguf-q8_0")
MAX_NEW_TOKENS = 60  # a scripted reply takes about 20 tokens: bounded even if a reply went astray
REPLY_TIMEOUT_S = 60
THINKING = dict(temperature=0.6, top_p=0.95, top_k=20, min_p=0.0, presence_penalty=0.0)
QUESTIONS = {  # question -> (reasoning, answer)
    ADD_Q: (ADD_REASONING, ADD_ANSWER),
    SKY_Q: (SKY_REASONING, SKY_ANSWER),
    FRUIT_Q: (FRUIT_REASONING, FRUIT_ANSWER),
}
CYCLE = (ADD_Q, SKY_Q, FRUIT_Q)


def text(message: dict) -> str:
    content = message["content"]
    return content if isinstance(content, str) else "".join(part.get("text", "") for part in content)


def title(message: dict) -> str:
    return (message.get("metadata") or {}).get("title") or ""


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil
    return ordered[int(rank) - 1]


@dataclass
class Session:
    index: int
    model: str
    questions: tuple[str, ...]
    seed: int
    marker: dict = field(init=False)
    history: list[dict] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # submit -> final history
    first_update: list[float] = field(default_factory=list)  # submit -> first streamed reasoning/answer
    failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # A note (metadata.id "note:…": never sent to the model) that only this session's history carries.
        self.marker = {"role": "assistant", "content": f"load-session-{self.index}",
                       "metadata": {"id": f"note:s{self.index}", "title": f"session {self.index}"}}
        self.history = [self.marker]


def plan() -> list[Session]:
    sessions = []
    for i in range(SESSIONS):
        shift = (i // len(MODELS)) % len(CYCLE)  # sessions on the same model start on different questions
        questions = tuple(CYCLE[(shift + t) % len(CYCLE)] for t in range(TURNS))
        sessions.append(Session(i, MODELS[i % len(MODELS)], questions, seed=i))
    return sessions


def check_turn(session: Session, before: list[dict], question: str, final: list[dict]) -> None:
    """The history after one turn: the session's own earlier history, then this turn, nothing else."""
    reasoning, answer = QUESTIONS[question]
    assert final[: len(before)] == before, f"session {session.index}: earlier turns changed"
    new = final[len(before):]
    assert [m["role"] for m in new] == ["user", "assistant", "assistant", "assistant"], new
    user, thought, reply, stats = new
    assert text(user) == question
    assert title(thought).startswith("Thought for") and text(thought) == reasoning, thought
    assert title(reply) == "" and text(reply) == answer, f"session {session.index} asked {question!r}: {reply}"
    assert "completion tokens" in title(stats) and session.model in text(stats)
    # nothing of another session: only this session's marker, only its own questions so far
    markers = [text(m) for m in final if title(m).startswith("session ")]
    assert markers == [f"load-session-{session.index}"], markers
    asked = [text(m) for m in final if m["role"] == "user"]
    assert asked == list(session.questions[: len(asked)])


def run_session(url: str, session: Session, start: threading.Barrier) -> Session:
    from gradio_client import Client

    client = Client(url, verbose=False, download_files=False)
    start.wait(timeout=120)
    for question in session.questions:
        before = list(session.history)
        submitted = time.perf_counter()
        job = client.submit(question, before, "", True, *THINKING.values(), MAX_NEW_TOKENS, session.seed, 0,
                            session.model, 1.0, api_name="/chat")
        first = None
        for step in job:
            if first is None and len(step) > len(before) + 1:
                first = time.perf_counter() - submitted
        final = job.result(timeout=REPLY_TIMEOUT_S)
        session.latencies.append(time.perf_counter() - submitted)
        session.first_update.append(first if first is not None else session.latencies[-1])
        try:
            check_turn(session, before, question, final)
        except AssertionError as exc:
            session.failures.append(f"turn {len(session.latencies)}: {exc}")
            return session  # the history is not the session's any more: stop this session here
        session.history = final
    return session


@pytest.fixture(scope="module")
def load_app():
    """The playground on its own pool (both tiny models loaded before the clock starts)."""
    import torch

    torch.set_num_threads(1)
    from backends.base import LoadOptions
    from backends.pool import ModelPool
    from conftest import launch_in_process
    from core.catalog import resolve_model
    from conftest import build_test_app
    from ui.launch import DEFAULT_CONCURRENCY

    pool = ModelPool(max_models=len(MODELS))
    demo = build_test_app(pool, MODELS[0])
    for model in MODELS:
        demo.playground.load(model)
    url = launch_in_process(demo, concurrency=DEFAULT_CONCURRENCY)
    try:
        yield url, pool
    finally:
        demo.close()
        pool.unload_all()


def test_eight_concurrent_sessions_get_their_own_replies(load_app):
    from conftest import ARTIFACTS

    url, pool = load_app
    sessions = plan()
    start = threading.Barrier(SESSIONS)
    began = time.perf_counter()
    with ThreadPoolExecutor(SESSIONS) as executor:
        futures = [executor.submit(run_session, url, session, start) for session in sessions]
        done = [future.result(timeout=REPLY_TIMEOUT_S * TURNS + 120) for future in futures]
    wall = time.perf_counter() - began

    latencies = [s for session in done for s in session.latencies]
    firsts = [s for session in done for s in session.first_update]
    report = {
        "sessions": SESSIONS, "turns": TURNS, "models": list(MODELS), "max_new_tokens": MAX_NEW_TOKENS,
        "replies": len(latencies), "wall_s": round(wall, 3),
        "latency_p50_s": round(percentile(latencies, 50), 3) if latencies else None,
        "latency_p95_s": round(percentile(latencies, 95), 3) if latencies else None,
        "latency_max_s": round(max(latencies), 3) if latencies else None,
        "first_update_p50_s": round(percentile(firsts, 50), 3) if firsts else None,
        "first_update_p95_s": round(percentile(firsts, 95), 3) if firsts else None,
        "per_model_p50_s": {model: round(statistics.median(
            [s for session in done if session.model == model for s in session.latencies] or [0.0]), 3)
            for model in MODELS},
        "failures": [f"session {session.index}: {failure}" for session in done for failure in session.failures],
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "load.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nload: {SESSIONS} sessions x {TURNS} turns on {', '.join(MODELS)}: {len(latencies)} replies in "
          f"{wall:.1f} s; latency p50 {report['latency_p50_s']} s, p95 {report['latency_p95_s']} s "
          f"(first update p50 {report['first_update_p50_s']} s, p95 {report['first_update_p95_s']} s)")

    assert not report["failures"], "\n".join(report["failures"])
    assert len(latencies) == SESSIONS * TURNS  # every reply arrived
    # the shared models are free again and still loaded: nothing stuck after the burst
    loaded = pool.loaded()
    assert len(loaded) == len(MODELS)
    for key in loaded:
        backend = pool.peek(resolve(key.source), key.options)
        assert backend is not None and not backend._generation_lock.locked()


def resolve(source: str):
    from core.catalog import load_catalog

    return next(spec for spec in load_catalog() if spec.source == source)
