"""The thinking budget on the remote backend.

A real ``llama_cpp.server`` has no budget of its own: the playground's way runs (the reply is
requested with max_tokens = the budget, then continued from /v1/completions after Qwen's early-stop
text), and the reasoning is cut exactly at the budget as on the local backends. Servers that have
their own (vLLM, SGLang, llama-server, recognised by ``owned_by``) get their field; one that
refuses or ignores it falls back to the playground's way, and the model info says which way runs.
"""
from __future__ import annotations

import pytest

from core.config import AppConfig
from core.events import AnswerDelta, ReasoningDelta, ThinkingBudgetReached
from core.reasoning import EARLY_STOP_SENTENCE, EARLY_STOP_TEXT
from openai_loopback import LoopbackServer, scripted_reply
from playground import Playground
from tinymodels.script import case
from test_thinking_budget import reply  # the same request, on a remote model

pytestmark = pytest.mark.timeout(300)

SKY = case("another")  # the longest scripted reasoning: "On a clear day the sky looks blue."
QUESTION = "Why is the sky blue?"


def info(playground, model):
    return playground.peek(model).describe()


def test_a_real_llama_cpp_server_is_cut_exactly_at_the_budget(tmp_path):
    from test_remote_backend import MODEL, start_server

    server = start_server(tmp_path)
    remote = Playground(AppConfig(remote_base_url=server.url))
    model = f"remote:{MODEL}"
    try:
        budget = 8
        reasoning, answer, cuts, stats = reply(remote, model, SKY.messages[-1]["content"], budget)
        assert [(c.budget, c.text, c.by_server) for c in cuts] == [(budget, EARLY_STOP_TEXT, False)]
        written, sentence, rest = reasoning.rpartition(EARLY_STOP_SENTENCE.rstrip())
        assert sentence and rest == ""  # the inserted sentence ends the reasoning
        assert SKY.reasoning.startswith(written.rstrip()) and written.rstrip() != SKY.reasoning
        cut_short = reply(remote, model, SKY.messages[-1]["content"], 0, max_new_tokens=budget)
        assert cut_short[0] == written.rstrip() and cut_short[3].finish_reason == "length"  # the budget's tokens
        assert answer == SKY.answer and stats.finish_reason == "stop"
        details = info(remote, model)
        assert details.details["thinking_budget"] == "playground"
        assert any("applied by the playground" in note for note in details.notes)
        roomy = reply(remote, model, SKY.messages[-1]["content"], 200)
        assert roomy[:3] == (SKY.reasoning, SKY.answer, [])  # a budget the reasoning fits in changes nothing
    finally:
        remote.close()
        server.stop()


@pytest.mark.parametrize("owned_by, field", [
    ("vllm", {"thinking_token_budget": 3}),
    ("sglang", {"custom_params": {"thinking_budget": 3}}),
    ("llamacpp", {"thinking_budget_tokens": 3, "thinking_budget_message": EARLY_STOP_SENTENCE}),
])
def test_a_server_with_its_own_budget_gets_its_field(owned_by, field):
    with LoopbackServer(owned_by=owned_by, chunks=10, reply_seconds=0.2) as server:
        remote = Playground(AppConfig(remote_base_url=server.url))
        try:
            model = f"remote:{server.model}"
            reasoning, answer, cuts, stats = reply(remote, model, QUESTION, 3)
            [body] = server.requests
            assert {k: body.get(k) for k in field} == field
            assert body["max_tokens"] == 300  # one request: the server cuts the reasoning, not max_tokens
            full_reasoning, full_answer = scripted_reply(QUESTION)
            assert full_reasoning.startswith(reasoning.split("\n\nConsidering")[0]) and answer == full_answer
            assert len(reasoning) < len(full_reasoning) or owned_by == "llamacpp"
            [cut] = cuts
            assert (cut.budget, cut.by_server) == (3, True)
            assert (cut.text == EARLY_STOP_TEXT) == (owned_by == "llamacpp")
            details = info(remote, model)
            assert details.details["thinking_budget"] == "server"
            assert any("applied by the server" in note and next(iter(field)) in note for note in details.notes)
        finally:
            remote.close()


def test_a_server_that_ignores_its_field_falls_back_to_the_playgrounds_way():
    with LoopbackServer(owned_by="vllm", thinking_budget="ignore", chunks=40, reply_seconds=0.2) as server:
        remote = Playground(AppConfig(remote_base_url=server.url))
        try:
            model = f"remote:{server.model}"
            full_reasoning, full_answer = scripted_reply(QUESTION)
            first = reply(remote, model, QUESTION, 3)
            assert first[:3] == (full_reasoning, full_answer, [])  # not cut: nothing claimed
            details = info(remote, model)
            assert details.details["thinking_budget"] == "playground"
            assert any("ignored its budget field" in note for note in details.notes)
            server.requests.clear()
            reasoning, answer, cuts, stats = reply(remote, model, QUESTION, 3)
            chat, continuation = server.requests
            assert "thinking_token_budget" not in chat and chat["max_tokens"] == 3
            assert continuation["prompt"].endswith(EARLY_STOP_TEXT)
            assert continuation["prompt"].startswith(f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n<think>\n")
            assert [(c.budget, c.by_server) for c in cuts] == [(3, False)]
            assert reasoning.endswith(EARLY_STOP_SENTENCE.rstrip()) and answer == full_answer
            assert stats.completion_tokens == 3 + 40  # the cut reasoning, then the continued answer
        finally:
            remote.close()


def test_a_server_that_refuses_its_field_answers_and_says_so():
    with LoopbackServer(owned_by="vllm", thinking_budget="refuse", chunks=10, reply_seconds=0.2) as server:
        remote = Playground(AppConfig(remote_base_url=server.url))
        try:
            model = f"remote:{server.model}"
            reasoning, answer, cuts, _ = reply(remote, model, QUESTION, 3)
            assert (reasoning, answer) == scripted_reply(QUESTION) and cuts == []
            assert "thinking_token_budget" not in server.requests[-1]
            notes = info(remote, model).notes
            assert any("refused its budget field" in note and "thinking_token_budget" in note for note in notes)
            _, _, cuts, _ = reply(remote, model, QUESTION, 3)  # the next reply: the playground's way
            assert [(c.budget, c.by_server) for c in cuts] == [(3, False)]
        finally:
            remote.close()


@pytest.mark.parametrize("inserted, log", [
    ("</think>", "the server ended it"),
    (EARLY_STOP_TEXT, "the server ended it with Qwen's early-stop text"),
])
def test_the_reasoning_panel_says_a_server_cut_it(inserted, log):
    """A server's cut is known once the reply ended, after the panel closed: it still says so."""
    from ui.reply_view import ReplyView

    history: list = []
    view = ReplyView(history, "r1", thinking_budget=3)
    for event in [ReasoningDelta("The user asks"), AnswerDelta("Loopback answer"),
                  ThinkingBudgetReached(3, inserted, by_server=True)]:
        view.add(event)
    view.close()
    thought = history[0]["metadata"]
    assert thought["title"].endswith(" · cut at the 3-token thinking budget") and thought["log"] == log
    assert history[1]["content"] == "Loopback answer"
