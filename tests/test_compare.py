"""Side-by-side comparison: metrics, the runner on tiny models, Stop, multi-turn, export, CLI."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from backends.base import LoadOptions
from playground import Playground, load_fresh
from playground.compare import EntrySpec, collect, new_comparison, run_comparison
from core.compare import Comparison, final_answer, prefix_agreement
from core.presets import get_preset
from core.texts import TEXTS

ROOT = Path(__file__).resolve().parent.parent
THINKING = get_preset("thinking").settings.with_updates(seed=0, max_new_tokens=200)


def test_prefix_agreement_and_answer_matching():
    assert prefix_agreement("The answer is 5.", "The answer is 5.") == 1.0
    assert prefix_agreement("The answer is 5.", "The answer is 6.") == 0.6  # 3 of 5 word tokens
    assert prefix_agreement("a b c d", "x b c d") == 0.0
    assert prefix_agreement("", "") == 1.0
    assert final_answer("So \\boxed{42}.") == final_answer("The result: \\boxed{ 42 }") == "42"
    assert final_answer("The answer is 5.") == final_answer("the answer is  5")


def run(entries, prompt="What is 2+3?", settings=THINKING, thinking=True, concurrent=False, stop=None, comparison=None):
    comparison = comparison or new_comparison(entries, prompt, settings, thinking)
    histories = comparison.start_turn(prompt)
    return collect(comparison, run_comparison(Playground(), entries, histories, settings, thinking, acquire=load_fresh,
                                                      concurrent=concurrent, stop=stop))


def test_two_formats_side_by_side_with_figures_and_a_failing_entry(tmp_path):
    entries = [EntrySpec("tiny-bf16"), EntrySpec(str(tmp_path / "missing-model")), EntrySpec("tiny-fp8")]
    comparison = run(entries, concurrent=True)
    ref, broken, fp8 = comparison.entries
    assert (ref.reasoning, ref.answer) == ("Two plus three makes five.", "The answer is 5.")
    assert (fp8.reasoning, fp8.answer) == (ref.reasoning, ref.answer)
    assert "unknown model" in broken.error and broken.stats is None
    rows = comparison.rows()
    assert rows[0]["prefix_agreement"] == 1.0 and rows[0]["answer_matches"] is True  # itself: 100%
    assert rows[2]["prefix_agreement"] == 1.0 and rows[2]["answer_matches"] is True
    assert rows[1]["prefix_agreement"] is None and rows[1]["error"]
    # the token counts are the script's (one tokenizer for every tiny format)
    from transformers import AutoTokenizer

    import tinymodels

    tokenizer = AutoTokenizer.from_pretrained(tinymodels.model_path("bf16"))
    count = lambda text: len(tokenizer(text, add_special_tokens=False).input_ids)  # noqa: E731
    for row in (rows[0], rows[2]):
        assert row["load_s"] > 0 and row["ttft_s"] > 0 and row["tokens_per_s"] > 0 and row["memory_mib"] > 0
        assert row["reasoning_tokens"] == count(ref.reasoning)
        assert row["answer_tokens"] == rows[0]["answer_tokens"] >= count(ref.answer)  # the answer, think markup, end
        assert row["total_s"] >= row["ttft_s"]


def test_export_round_trips_as_json_and_renders_markdown():
    comparison = run([EntrySpec("tiny-bf16"), EntrySpec("tiny-bf16", options=LoadOptions(yarn_factor=2.0))])
    data = json.loads(comparison.to_json())
    assert Comparison.from_dict(data).to_dict() == comparison.to_dict()
    assert data["table"][1]["entry"] == "2. tiny-bf16" and data["entries"][1]["yarn_factor"] == 2.0
    assert data["entries"][1]["info"]["rope_scaling"]["factor"] == 2.0
    md = comparison.to_markdown()
    assert "**Prompt:** What is 2+3?" in md and "| 1. tiny-bf16 |" in md and "The answer is 5." in md


def test_stop_stops_every_column():
    settings = get_preset("non-thinking").settings.with_updates(max_new_tokens=20000)
    entries = [EntrySpec("tiny-bf16"), EntrySpec("tiny-fp8")]
    comparison = new_comparison(entries, "Sing la la la forever.", settings, False)
    histories = comparison.start_turn("Sing la la la forever.")
    stop = threading.Event()
    seen = 0

    def on_event(event):
        nonlocal seen
        seen += event.kind == "event"
        if seen == 40:
            stop.set()

    collect(comparison, run_comparison(Playground(), entries, histories, settings, False, acquire=load_fresh,
                                         concurrent=True, stop=stop, loop_guard=False), on_event)
    for entry in comparison.entries:
        assert entry.stats["finish_reason"] == "cancelled" and entry.stats["completion_tokens"] < 500
    assert not [t for t in threading.enumerate() if t.name == "generate" and t.is_alive()]


def test_follow_up_continues_each_columns_own_conversation():
    entries = [EntrySpec("tiny-bf16"), EntrySpec("tiny-fp8")]
    comparison = run(entries, prompt="Name a fruit.")
    assert [e.answer for e in comparison.entries] == ["Apple.", "Apple."]
    run(entries, prompt="Another one?", comparison=comparison)
    for entry in comparison.entries:
        assert entry.answer == "Banana."
        assert [m["content"] for m in entry.history] == ["Name a fruit.", "Apple.", "Another one?"]


def test_perplexity_of_the_scripted_text_is_low_and_comparable():
    from playground import open_model

    scores = {m: open_model(m).perplexity(TEXTS["tiny-script"]).perplexity for m in ("tiny-bf16", "tiny-fp8")}
    assert all(1.0 <= p < 1.5 for p in scores.values()), scores
    other = open_model("tiny-bf16").perplexity(TEXTS["encyclopedia"]).perplexity
    assert other > 50 * scores["tiny-bf16"]  # an unseen text is far less predictable


@pytest.mark.parametrize("fmt", ["--json", "--markdown"])
def test_compare_command(fmt):
    result = subprocess.run([sys.executable, "app.py", "compare", "--models", "tiny-bf16", "tiny-fp8",
                             "--prompt", "What color is the sky?", "--no-thinking", "--seed", "1", fmt,
                             "--perplexity", "tiny-script"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    if fmt == "--json":
        data = json.loads(result.stdout)
        assert [e["answer"] for e in data["entries"]] == ["The sky is blue.", "The sky is blue."]
        assert data["thinking"] is False and data["settings"]["seed"] == 1
        assert all(row["prefix_agreement"] == 1.0 and row["perplexity"] < 1.5 for row in data["table"])
    else:
        assert result.stdout.startswith("# Comparison") and "| 2. tiny-fp8 |" in result.stdout


def test_compare_command_base_url_alone_means_the_remote_backend():
    """--base-url without --backend: every entry goes to that server (here: nothing listens)."""
    result = subprocess.run([sys.executable, "app.py", "compare", "--models", "served-a", "served-b",
                             "--prompt", "hi", "--base-url", "http://127.0.0.1:9/v1", "--json"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    entries = json.loads(result.stdout)["entries"]
    assert [e["backend"] for e in entries] == ["remote", "remote"]
    assert all("cannot connect to the server at http://127.0.0.1:9/v1" in e["error"] for e in entries)
