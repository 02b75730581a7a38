"""Continue: a reply cut short (by max_new_tokens, by Stop, by a reload) goes on where it ended, on
every backend: the model reads the reply so far after the prompt and writes the rest of the
scripted text; the chat's reasoning panel and answer grow instead of starting again."""
from __future__ import annotations

import pytest

from core.config import AppConfig
from core.continuation import continuation_of
from core.errors import PlaygroundError, PromptError
from core.events import AnswerDelta, GenerationStats, ReasoningDelta
from playground import Playground
from test_thinking_budget import playground  # noqa: F401  (the module's Playground, one model at a time)
from tinymodels.script import case
from ui.chat_tab import stream_reply
from ui.formatting import close_reply

pytestmark = pytest.mark.timeout(600)

SKY = case("another")  # reasoning "On a clear day the sky looks blue." then "The sky is blue."
QUESTION = SKY.messages[-1]["content"]
NO_THINK = case("another_no_think_hard")


def chat(playground, history, model, thinking=True, **settings):
    return list(stream_reply(playground, history, "", thinking, {"seed": 7, **settings}, model, 1.0))[-1]


def parts(history):
    """(reasoning, answer, ending kind) of the chat's last reply."""
    kinds = {}
    for message in history:
        kind = (message.get("metadata") or {}).get("id", "").partition(":")[0] if message["role"] == "assistant" else None
        if kind:
            kinds[kind] = message
    return (kinds.get("reasoning", {}).get("content"), kinds.get("answer", {}).get("content"),
            history[-1]["metadata"]["id"])


@pytest.mark.parametrize("model", ["tiny-bf16", "tiny-gptq-int4", "tiny-gguf-q4_k_m"])
@pytest.mark.parametrize("cut_at", [4, 14])  # in the reasoning; in the answer
def test_a_reply_cut_by_max_new_tokens_continues_to_the_scripted_end(playground, model, cut_at):
    cut = chat(playground, [{"role": "user", "content": QUESTION}], model, max_new_tokens=cut_at)
    reasoning, answer, note = parts(cut)
    assert note.endswith(":length")  # the figures note says why it ended: it can be continued
    assert SKY.reasoning.startswith(reasoning or "") and (reasoning or "") != SKY.reasoning or answer != SKY.answer
    reply_id = note.split(":")[1]
    done = list(stream_reply(playground, list(cut), "", True, {"seed": 7}, model, 1.0,
                             continuation=continuation_of(cut)))[-1]
    assert parts(done)[:2] == (SKY.reasoning, SKY.answer)
    assert done[-1]["metadata"]["id"] == f"stats:{reply_id}"  # the same reply, ended by itself
    assert sum(m["role"] == "assistant" and m["metadata"]["id"].startswith("answer:") for m in done) == 1
    assert "Continued" in done[-1]["content"]
    assert [m["content"] for m in done if m["role"] == "user"] == [QUESTION]


def test_a_stopped_reply_continues_without_thinking_too(playground):
    cut = chat(playground, [{"role": "user", "content": NO_THINK.messages[-1]["content"]}], "tiny-bf16",
               thinking=False, max_new_tokens=2)
    stopped = close_reply(cut[:-1], "stopped")  # as Stop leaves it: the note says "stopped"
    assert stopped[-1]["metadata"]["id"].startswith("stopped:")
    continuation = continuation_of(stopped)
    assert continuation.thinking is False and NO_THINK.answer.startswith(continuation.markup)
    done = list(stream_reply(playground, stopped, "", True, {"seed": 7}, "tiny-bf16", 1.0,
                             continuation=continuation))[-1]  # thinking on in the UI: the reply's own mode wins
    assert parts(done)[:2] == (None, NO_THINK.answer)


def test_the_backends_stream_only_the_continuation(playground):
    request = playground.request([{"role": "user", "content": QUESTION}], model="tiny-bf16",
                                 settings={"seed": 7}, continue_from="<think>\nOn a clear day")
    events = list(playground.chat(request))
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    assert "On a clear day" + reasoning == SKY.reasoning and answer == SKY.answer
    [stats] = [e for e in events if isinstance(e, GenerationStats)]
    assert stats.finish_reason == "stop"


@pytest.mark.parametrize("history, reason", [
    ([], "no reply"),
    ([{"role": "user", "content": "hi"}], "no reply"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello", "metadata": {"id": "answer:a"}},
      {"role": "assistant", "content": "", "metadata": {"id": "stats:a", "title": "…"}}], "ended by itself"),
    ([{"role": "user", "content": "hi"},
      {"role": "assistant", "content": "x", "metadata": {"id": "tool_call:a:c1", "title": "Tool call: f"}},
      {"role": "assistant", "content": "", "metadata": {"id": "stopped:a", "title": "Stopped"}}], "called tools"),
    ([{"role": "user", "content": "hi"},
      {"role": "assistant", "content": "a <|im_end|>", "metadata": {"id": "answer:a"}},
      {"role": "assistant", "content": "", "metadata": {"id": "stopped:a", "title": "Stopped"}}], "control token"),
])
def test_what_cannot_be_continued_says_why(history, reason):
    with pytest.raises(PromptError, match=reason):
        continuation_of(history)


def test_a_continuation_refuses_a_history_that_does_not_end_with_the_user(playground):
    with pytest.raises(PlaygroundError, match="end with a user message"):
        playground.request([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}],
                           model="tiny-bf16", continue_from="x")


@pytest.mark.parametrize("model", ["tiny-bf16", "tiny-gguf-q4_k_m"])
def test_a_reply_the_thinking_budget_cut_thinks_on_when_continued(playground, model):
    cut = chat(playground, [{"role": "user", "content": QUESTION}], model, thinking_budget=8, max_new_tokens=300)
    reasoning, answer, note = parts(cut)
    assert note.endswith(":budget") and "Considering the limited time" in reasoning and answer == SKY.answer
    continuation = continuation_of(cut)
    assert SKY.reasoning.startswith(continuation.reasoning) and continuation.reasoning != SKY.reasoning
    assert continuation.answer is None and "answer" not in {m["metadata"]["id"].split(":")[0]
                                                            for m in continuation.kept if m["role"] == "assistant"}
    done = list(stream_reply(playground, list(cut), "", True, {"seed": 7, "thinking_budget": 8}, model, 1.0,
                             continuation=continuation))[-1]
    assert parts(done)[:2] == (SKY.reasoning, SKY.answer)  # no budget the second time: it thought to the end
    assert parts(done)[2] == note.removesuffix(":budget")


def test_a_real_llama_cpp_server_continues_a_cut_reply(tmp_path):
    """The remote backend continues from /v1/completions: the conversation rendered by Qwen3's
    template, then the reply so far (as for the playground's thinking budget)."""
    from test_remote_backend import MODEL, start_server

    server = start_server(tmp_path)
    remote = Playground(AppConfig(remote_base_url=server.url))
    try:
        model = f"remote:{MODEL}"
        cut = chat(remote, [{"role": "user", "content": QUESTION}], model, max_new_tokens=5)
        assert parts(cut)[2].endswith(":length") and parts(cut)[0] != SKY.reasoning
        done = list(stream_reply(remote, list(cut), "", True, {"seed": 7}, model, 1.0,
                                 continuation=continuation_of(cut)))[-1]
        assert parts(done)[:2] == (SKY.reasoning, SKY.answer)
    finally:
        remote.close()
        server.stop()
