"""Several visitors chatting with one remote model are served in parallel, not one after another.

The app runs as a user starts it (``python app.py --model remote:<name>`` with
``QWEN3_PLAYGROUND_REMOTE_URL``, a subprocess: see ``openai_loopback.start_app``), in front of the
loopback OpenAI-compatible server of ``tests/openai_loopback.py``.  The server holds every reply
before its first delta, and the test waits (with a timeout) until it has the 4 requests in flight
at once; only then are the replies let go, and each must be its own complete scripted answer.
Nothing here measures time: ``python -m bench.remote_concurrency`` does.
"""
from __future__ import annotations

import threading

import pytest

pytest.importorskip("openai")
pytest.importorskip("gradio_client")

from openai_loopback import LoopbackServer, reply_parts, scripted_reply, start_app  # noqa: E402

MODEL = "loopback-qwen3"
CALLS = 4
IN_FLIGHT_TIMEOUT_S = 30.0
CALL_TIMEOUT_S = 120.0
SETTINGS = dict(system_prompt="", thinking=True, temperature=0.6, top_p=0.95, top_k=20, min_p=0.0,
                presence_penalty=0.0, max_new_tokens=512, seed=0, yarn_factor=1.0)


@pytest.fixture(scope="module")
def loopback():
    with LoopbackServer(MODEL, chunks=10, reply_seconds=1.0) as server:
        yield server


@pytest.fixture(scope="module")
def app(loopback, tmp_path_factory):
    log = tmp_path_factory.mktemp("remote-concurrency") / "app.log"
    process = start_app("--model", f"remote:{MODEL}", "--concurrency", "8", remote_url=loopback.url, log=log,
                        timeout=120)
    try:
        yield process
    finally:
        process.stop()


def submit(client, message: str):
    """One /chat call, every argument by keyword (the API's positions may change)."""
    return client.submit(message=message, history=[], model=f"remote:{MODEL}", **SETTINGS, api_name="/chat")


def expected(message: str) -> dict[str, str]:
    reasoning, answer = scripted_reply(message)
    return {"reasoning": reasoning, "answer": answer}


def got(history: list[dict]) -> dict[str, str]:
    parts = reply_parts(history)
    assert not parts["errors"], parts["errors"]
    return {"reasoning": parts["reasoning"], "answer": parts["answer"]}


def test_loopback_server_streams_like_an_openai_server(loopback):
    """The helper itself: OpenAI's chunk shape through the openai client, usage, the thinking
    switch, and the in-flight count with hold / release."""
    import openai

    client = openai.OpenAI(base_url=loopback.url, api_key="none", max_retries=0, timeout=30)
    try:
        assert [(m.id, m.model_extra["max_model_len"]) for m in client.models.list().data] == [(MODEL, 32768)]
        reasoning, answer, finish, usage = "", "", None, None
        for chunk in client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi there"}], stream=True,
                stream_options={"include_usage": True}, extra_body={"chat_template_kwargs": {"enable_thinking": True}}):
            usage = chunk.usage or usage
            if chunk.choices:
                reasoning += chunk.choices[0].delta.model_extra.get("reasoning_content") or ""
                answer += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
        assert {"reasoning": reasoning, "answer": answer} == expected("hi there")
        assert finish == "stop" and usage.completion_tokens == 20
        plain = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                               extra_body={"chat_template_kwargs": {"enable_thinking": False}})
        assert plain.choices[0].message.content == expected("hi")["answer"]
        assert not plain.choices[0].message.model_extra.get("reasoning_content")

        loopback.reset_stats()
        loopback.hold()
        threads = [threading.Thread(target=lambda: client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "q"}], max_tokens=3), daemon=True) for _ in range(3)]
        try:
            for thread in threads:
                thread.start()
            assert loopback.wait_for_in_flight(3, timeout=IN_FLIGHT_TIMEOUT_S)
        finally:
            loopback.release()
        for thread in threads:
            thread.join(timeout=30)
        assert loopback.wait_for_completed(3, timeout=30) and loopback.stats()["max_in_flight"] == 3
    finally:
        client.close()


def test_four_chats_to_one_remote_model_are_served_in_parallel(app, loopback):
    from gradio_client import Client

    clients = [Client(app.url, verbose=False, download_files=False) for _ in range(CALLS)]
    try:
        # one call first: the model is loaded and the whole path works, so what follows only tests parallelism
        warm_up = "Warm-up: what is 1+1?"
        assert got(submit(clients[0], warm_up).result(timeout=CALL_TIMEOUT_S)) == expected(warm_up), app.log_tail()
        assert loopback.wait_idle(timeout=30)

        messages = [f"Visitor {i + 1} asks: what is {i + 2}+3?" for i in range(CALLS)]
        loopback.reset_stats()
        loopback.hold()  # every reply waits before its first delta until all are in flight (or the timeout)
        try:
            jobs = [submit(client, message) for client, message in zip(clients, messages)]
            all_at_once = loopback.wait_for_in_flight(CALLS, timeout=IN_FLIGHT_TIMEOUT_S)
            seen = loopback.max_in_flight
        finally:
            loopback.release()
        histories = [job.result(timeout=CALL_TIMEOUT_S) for job in jobs]

        assert all_at_once, (f"the {CALLS} /chat calls were not served in parallel: the remote server had at most "
                             f"{seen} request(s) in flight at once within {IN_FLIGHT_TIMEOUT_S:g} s")
        for message, history in zip(messages, histories):
            assert got(history) == expected(message)
        assert loopback.wait_for_completed(CALLS, timeout=30)
        asked = sorted(body["messages"][-1]["content"] for body in loopback.requests)
        assert asked == sorted(messages)  # one request per call, nothing retried
    finally:
        for client in clients:
            client.close()
