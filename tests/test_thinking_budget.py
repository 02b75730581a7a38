"""The thinking budget (Qwen's method) on the tiny models of every local format: the reasoning is
cut exactly at the budget, Qwen's early-stop text is inserted as if the model had written it, and
the model goes on to its answer; a budget the reasoning fits in changes nothing, and without
thinking the budget is moot."""
from __future__ import annotations

import pytest

from core.config import AppConfig
from core.events import AnswerDelta, GenerationStats, ReasoningDelta, ThinkingBudgetReached
from core.reasoning import EARLY_STOP_TEXT, THINK_CLOSE
from playground import Playground
from tinymodels.script import case

pytestmark = pytest.mark.timeout(600)

EVERY_FORMAT = ["tiny-bf16", "tiny-fp8", "tiny-gptq-int4", "tiny-awq-int4", "tiny-moe", "tiny-gguf-q4_k_m"]
SKY = case("another")  # the longest scripted reasoning: "On a clear day the sky looks blue."
INSERTED = EARLY_STOP_TEXT.split(THINK_CLOSE)[0]  # what the reasoning panel shows of it


@pytest.fixture(scope="module")
def playground():
    playground = Playground(AppConfig(max_models=1))
    yield playground
    playground.pool.unload_all()
    playground.close()


def reply(playground, model, question, budget, thinking=True, max_new_tokens=300):
    request = playground.request([{"role": "user", "content": question}], model=model, thinking=thinking,
                                 settings={"seed": 7, "thinking_budget": budget, "max_new_tokens": max_new_tokens})
    events = [e for e in playground.chat(request) if not type(e).__name__ == "ModelReady"]
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    cuts = [e for e in events if isinstance(e, ThinkingBudgetReached)]
    [stats] = [e for e in events if isinstance(e, GenerationStats)]
    return reasoning, answer, cuts, stats


@pytest.mark.parametrize("model", EVERY_FORMAT)
def test_the_reasoning_is_cut_at_the_budget_and_the_answer_follows(playground, model):
    budget = 8
    reasoning, answer, cuts, stats = reply(playground, model, SKY.messages[-1]["content"], budget)
    assert [(c.budget, c.text) for c in cuts] == [(budget, EARLY_STOP_TEXT)]
    written, _, inserted = reasoning.partition("\n\n" + INSERTED.strip("\n"))
    assert inserted == "" and reasoning.endswith(INSERTED.rstrip("\n"))  # the inserted text ends the reasoning
    assert SKY.reasoning.startswith(written) and written != SKY.reasoning  # the model's own start, cut short
    cut_short = reply(playground, model, SKY.messages[-1]["content"], 0, max_new_tokens=budget)
    assert cut_short[0] == written and cut_short[3].completion_tokens == budget  # exactly the budget's tokens
    # then the model answers (the MoE twin, never trained on the early-stop text, answers something else)
    assert answer == SKY.answer if model != "tiny-moe" else answer.strip()
    assert stats.finish_reason == "stop" and stats.completion_tokens > budget


@pytest.mark.parametrize("model", ["tiny-bf16", "tiny-gguf-q4_k_m"])
def test_a_budget_the_reasoning_fits_in_changes_nothing(playground, model):
    question = SKY.messages[-1]["content"]
    unlimited = reply(playground, model, question, 0)
    roomy = reply(playground, model, question, 200)
    assert roomy[2] == [] and roomy[:2] == unlimited[:2] == (SKY.reasoning, SKY.answer)


@pytest.mark.parametrize("model", ["tiny-bf16", "tiny-gguf-q4_k_m"])
def test_without_thinking_the_budget_is_moot(playground, model):
    no_think = case("another_no_think_hard")
    reasoning, answer, cuts, _ = reply(playground, model, no_think.messages[-1]["content"], 1, thinking=False)
    assert (reasoning, answer, cuts) == ("", no_think.answer, [])
    soft = case("another_no_think")  # the soft switch: the model closes its (empty) reasoning at once
    reasoning, answer, cuts, _ = reply(playground, model, soft.messages[-1]["content"], 4)
    assert (reasoning, answer, cuts) == ("", soft.answer, [])


def test_max_new_tokens_still_bounds_the_whole_reply(playground):
    reasoning, answer, cuts, stats = reply(playground, "tiny-bf16", SKY.messages[-1]["content"], 8, max_new_tokens=10)
    assert len(cuts) == 1 and stats.completion_tokens == 10 and stats.finish_reason == "length"


def test_the_cli_takes_the_budget(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, str(root / "app.py"), "chat", "--model", "tiny-bf16", "--prompt",
                          SKY.messages[-1]["content"], "--thinking-budget", "8", "--seed", "7", "--json"],
                         capture_output=True, text=True, timeout=300, cwd=root)
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads(out.stdout)
    assert data["reasoning"].endswith(INSERTED.rstrip("\n")) and data["answer"] == SKY.answer
    assert data["thinking_budget"] == {"budget": 8, "reached": True}


def test_the_chat_shows_the_budget_and_says_when_it_is_moot(playground):
    from core.messages import kind_of
    from ui.chat_tab import stream_reply
    from ui.formatting import user_message

    pending_logs: list[str] = []
    for history in stream_reply(playground, [user_message(SKY.messages[-1]["content"])], "", True,
                                {"seed": 7, "thinking_budget": 8, "max_new_tokens": 300}, "tiny-bf16", 1.0):
        thought = next((m for m in history if kind_of(m) == "reasoning"), None)
        if thought and thought["metadata"].get("status") == "pending":
            pending_logs.append(thought["metadata"].get("log", ""))
    thought = next(m for m in history if kind_of(m) == "reasoning")
    assert thought["metadata"]["title"].endswith("· cut at the 8-token thinking budget")
    assert thought["content"].endswith(INSERTED.rstrip("\n"))
    assert any(log.endswith("/ 8 tokens") for log in pending_logs)  # the count while it thinks
    assert "Thinking budget 8 tokens: reached" in history[-1]["content"]
    assert [m["content"] for m in history if kind_of(m) == "answer"] == [SKY.answer]

    *_, moot = stream_reply(playground, [user_message(SKY.messages[-1]["content"])], "", False,
                            {"seed": 7, "thinking_budget": 8, "max_new_tokens": 300}, "tiny-bf16", 1.0)
    assert "Thinking budget 8 tokens: moot, thinking is off" in moot[-1]["content"]


def test_compare_cuts_every_entry_and_marks_the_cut(tmp_path):
    """``app.py compare --thinking-budget``: every entry gets the budget, and the table says which
    reply it cut (the column only exists when there is a budget)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent

    def compare(*extra: str) -> dict:
        out = subprocess.run([sys.executable, str(root / "app.py"), "compare", "--models", "tiny-bf16",
                              "tiny-gguf-q4_k_m", "--prompt", SKY.messages[-1]["content"], "--seed", "7", *extra],
                             capture_output=True, text=True, timeout=300, cwd=root)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout

    data = json.loads(compare("--thinking-budget", "8", "--json"))
    assert [row["budget_cut"] for row in data["table"]] == [True, True]
    for entry in data["entries"]:
        assert entry["reasoning"].endswith(INSERTED.rstrip("\n")) and entry["answer"] == SKY.answer
    roomy = json.loads(compare("--thinking-budget", "200", "--json"))
    assert [row["budget_cut"] for row in roomy["table"]] == [False, False]
    assert "budget_cut" not in json.loads(compare("--json"))["table"][0]
    assert "| budget cut |" in compare("--thinking-budget", "8", "--markdown")
