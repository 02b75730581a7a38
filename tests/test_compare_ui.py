"""The Compare tab driven through its API (gradio_client) on the tiny models, in-process.

Three formats through three backends: tiny-fp8 (transformers, FP8 dequantized on CPU),
tiny-gptq-int4 (gptqmodel) and tiny-gguf-q8_0 (llama.cpp); the fourth entry repeats the first
(agreement of an entry with itself). The app and its shared ModelPool come from conftest's
``ui_server``; each client is its own session (its own comparison in gr.State).
"""
from __future__ import annotations

import json
import threading

import pytest

from core.compare import Comparison
from core.texts import TEXTS
from tinymodels.script import ADD_ANSWER, ADD_Q, ADD_REASONING, ENDLESS_Q, FRUIT_ANSWER, FRUIT_Q, case

ENTRIES = ("tiny-fp8", "tiny-gptq-int4", "tiny-gguf-q8_0", "tiny-fp8")
ANOTHER = case("multi_turn")  # after "Name a fruit." -> "Apple.": "Another one?" -> "Banana."


def text(message: dict) -> str:
    content = message["content"]
    return content if isinstance(content, str) else "".join(p.get("text", "") for p in content)


def title(message: dict) -> str:
    return (message.get("metadata") or {}).get("title") or ""


def answers(column: dict) -> list[str]:
    return [text(m) for m in column["value"] if m["role"] == "assistant" and not title(m)]


def table(output) -> list[dict]:
    return [dict(zip(output["headers"], row)) for row in output["data"]]


def entry_args(*models: str, yarn: float = 1.0) -> list:
    padded = [*models, *[""] * (4 - len(models))]
    return [value for model in padded for value in (model, yarn)]


def compare_job(client, models, prompt=ADD_Q, *, thinking=True, seed=0, max_new_tokens=200, concurrent=False,
                loop_guard=True):
    return client.submit(*entry_args(*models), prompt, "", thinking, "auto", seed, max_new_tokens, concurrent,
                         None, 0, loop_guard, api_name="/compare")


def new_client(ui_server, **kwargs):
    from gradio_client import Client

    return Client(ui_server.url, verbose=False, **kwargs)


@pytest.fixture(scope="module")
def every_update():
    """Every streamed token reaches the client (the tab sends at most one update per 50 ms)."""
    import ui.compare_handlers

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ui.compare_handlers, "UPDATE_EVERY_S", 0.0)
        yield


@pytest.fixture(scope="module")
def three_formats(ui_server, every_update):
    """One session that compared the four entries (thinking on, seed 0): (client, steps, final)."""
    client = new_client(ui_server)
    job = compare_job(client, ENTRIES)
    steps = list(job)
    return client, steps, job.result()


def test_every_entry_streams_its_reasoning_and_answer_side_by_side(three_formats):
    client, steps, final = three_formats
    columns, status = final[:4], final[7]
    assert [c["label"] for c in columns] == [f"{i + 1}. {m}" for i, m in enumerate(ENTRIES)]
    for column in columns:
        user, thought, answer, note = column["value"]
        assert text(user) == ADD_Q
        assert text(thought) == ADD_REASONING and title(thought).startswith("Thought for")
        assert thought["metadata"]["status"] == "done" and thought["metadata"]["duration"] >= 0
        assert text(answer) == ADD_ANSWER
        assert "completion tokens" in title(note) and "tokens/s" in title(note)
    assert status.startswith("Done in")
    # it streamed: every column was seen thinking (pending panel, partial reasoning), and answers
    # were seen half written; one after another, later columns waited, then loaded
    partial_answers = set()
    for index in range(4):
        seen = [s[index]["value"] for s in steps if s[index].get("value")]
        pending = [text(v[1]) for v in seen if len(v) >= 2 and (v[1]["metadata"] or {}).get("status") == "pending"]
        assert pending and all(ADD_REASONING.startswith(p) for p in pending)
        partial_answers |= {text(v[2]) for v in seen if len(v) >= 3 and not title(v[2])} - {ADD_ANSWER}
    assert partial_answers and all(ADD_ANSWER.startswith(p) for p in partial_answers)
    notes = {title(m) for s in steps for c in s[:4] for m in (c.get("value") or [])}
    assert {"Loading the model…", "Waiting for its turn (one entry after another)"} <= notes


def test_figures_are_present_and_sane(three_formats, ui_server):
    _, _, final = three_formats
    rows = table(final[4])
    assert [r["entry"] for r in rows] == [f"{i + 1}. {m}" for i, m in enumerate(ENTRIES)]
    for row in rows:
        assert row["error"] == ""
        assert float(row["load s"]) >= 0 and 0 < float(row["TTFT s"]) <= float(row["total s"])
        assert float(row["tokens/s"]) > 0 and float(row["memory MiB"]) > 0
        assert int(row["reasoning tok"]) > 0 and int(row["answer tok"]) > 0
        assert row["agreement"] == "100%" and row["same answer"] == "yes"  # the script, in every format
    assert rows[3]["agreement"] == "100%"  # the reference model against itself
    assert float(rows[3]["load s"]) < 1.0  # the pool lent the first entry's model again
    # memory: GPTQ-Int4 packs the weights smaller than the FP8 checkpoint dequantized to bf16
    assert float(rows[1]["memory MiB"]) < float(rows[0]["memory MiB"])
    speed, memory = final[5], final[6]
    assert [p[0] for p in speed["data"]] == [r["entry"] for r in rows]
    assert all(p[1] > 0 for p in speed["data"] + memory["data"])
    assert [p[1] for p in memory["data"]] == [float(r["memory MiB"]) for r in rows]


def test_export_round_trips_through_import(three_formats):
    client, _, final = three_formats
    json_path, md_path = client.predict(api_name="/compare_export")
    exported = json.loads(open(json_path, encoding="utf-8").read())
    assert exported["prompt"] == ADD_Q and exported["thinking"] is True and exported["settings"]["seed"] == 0
    assert [e["answer"] for e in exported["entries"]] == [ADD_ANSWER] * 4
    assert [e["reasoning"] for e in exported["entries"]] == [ADD_REASONING] * 4
    assert exported["table"][3]["prefix_agreement"] == 1.0
    assert exported["entries"][2]["info"]["backend"] == "llama.cpp"
    markdown = open(md_path, encoding="utf-8").read()
    assert markdown.startswith("# Comparison") and "| 3. tiny-gguf-q8_0 |" in markdown and ADD_ANSWER in markdown

    from gradio_client import handle_file

    other = new_client_like(client)  # another session imports the file and shows the same comparison
    imported = other.predict(handle_file(json_path), api_name="/compare_import")
    assert imported[8:] == tuple(v for m in ENTRIES for v in (m, 1.0))  # the pickers show its entries
    assert [answers(c) for c in imported[:4]] == [answers(c) for c in final[:4]]
    assert imported[4]["data"] == final[4]["data"]
    again, _ = other.predict(api_name="/compare_export")
    assert json.loads(open(again, encoding="utf-8").read()) == exported
    assert Comparison.from_dict(exported).to_dict() == exported


def new_client_like(client):
    from gradio_client import Client

    return Client(client.src, verbose=False)


def test_perplexity_of_the_script_is_low_and_comparable_across_formats(three_formats):
    client, _, _ = three_formats
    final = client.predict(*entry_args(*ENTRIES), "tiny-script", "", api_name="/compare_perplexity")
    rows = table(final[4])
    scores = [float(r["perplexity"]) for r in rows]
    assert all(1.0 <= s < 1.5 for s in scores), scores
    assert max(scores) / min(scores) < 1.1, scores
    assert rows[0]["agreement"] == "100%"  # the same entries: it joined the comparison's table
    pasted = client.predict(*entry_args(*ENTRIES), "tiny-script", TEXTS["encyclopedia"],
                            api_name="/compare_perplexity")
    assert all(float(r["perplexity"]) > 20 for r in table(pasted[4]))  # an unseen text: far less expected
    assert "pasted text" in pasted[7]


def test_a_failing_entry_shows_its_error_while_the_others_finish(ui_server, tmp_path):
    client = new_client(ui_server)
    bad = str(tmp_path / "no-such-model")
    job = compare_job(client, ("tiny-fp8", bad, "tiny-gguf-q8_0"), concurrent=True)
    final = job.result()
    first, broken, third = final[:3]
    assert answers(first) == answers(third) == [ADD_ANSWER]
    assert title(broken["value"][-1]) == "Error" and "no-such-model" in text(broken["value"][-1])
    assert answers(broken) == []
    rows = table(final[4])
    assert rows[1]["error"] and rows[1]["agreement"] == "" and rows[2]["agreement"] == "100%"
    assert final[3].get("visible") is False  # the unused fourth column is hidden
    assert "1 failed" in final[7]


def test_a_follow_up_continues_every_columns_conversation(ui_server):
    client = new_client(ui_server)
    first = compare_job(client, ("tiny-fp8", "tiny-gguf-q8_0"), FRUIT_Q).result()
    assert [answers(c) for c in first[:2]] == [[FRUIT_ANSWER]] * 2
    final = client.submit(ANOTHER.messages[-1]["content"], "", True, "auto", 0, 200, False,
                          api_name="/compare_follow_up").result()
    for column in final[:2]:
        assert answers(column) == [FRUIT_ANSWER, ANOTHER.answer]  # no leaked reasoning: "Banana."
        thoughts = [text(m) for m in column["value"] if title(m).startswith("Thought")]
        assert thoughts == [case("fruit").reasoning, ANOTHER.reasoning]  # the first turn's panel stays
    json_path, md_path = client.predict(api_name="/compare_export")
    exported = json.loads(open(json_path, encoding="utf-8").read())
    markdown = open(md_path, encoding="utf-8").read()
    assert f"### Turn 1: {FRUIT_Q}" in markdown and "### Turn 2: Another one?" in markdown
    for entry in exported["entries"]:
        assert [m["content"] for m in entry["history"]] == [FRUIT_Q, FRUIT_ANSWER, "Another one?"]
        assert entry["turns"][0]["answer"] == FRUIT_ANSWER and entry["answer"] == ANOTHER.answer


def _busy_threads() -> list[threading.Thread]:
    """transformers' generate threads and the runner's column threads (llama.cpp decodes in these)."""
    return [t for t in threading.enumerate()
            if t.is_alive() and (t.name == "generate" or t.name.startswith("compare-"))]


@pytest.mark.parametrize("concurrent", [False, True], ids=["one-after-another", "at-the-same-time"])
def test_stop_stops_every_column(ui_server, concurrent):
    client = new_client(ui_server)
    models = ("tiny-gguf-q8_0", "tiny-fp8")
    job = compare_job(client, models, ENDLESS_Q, thinking=False, max_new_tokens=20000, concurrent=concurrent,
                      loop_guard=False)  # the song must go on until Stop
    # one after another, only the first has started; at the same time, both sing (transformers
    # slowly: llama.cpp's per-token Python loop on the tiny model takes most of the GIL)
    for step in job:
        lengths = [len(answers(c)[0]) if answers(c) else 0 for c in step[:2]]
        if (lengths[0] > 30 and lengths[1] > 0) if concurrent else lengths[0] > 30:
            break
    job.cancel()
    backends = [ui_server.backend(m) for m in models]
    # each lock is released only after its generate thread has been joined (Backend.stream_chat)
    assert all(b is None or b._generation_lock.wait_free(timeout=10) for b in backends), "a model stayed busy"
    assert not _busy_threads(), "a column kept generating after Stop"
    exported = json.loads(open(client.predict(api_name="/compare_export")[0], encoding="utf-8").read())
    first, second = exported["entries"]
    assert first["answer"].startswith("la la") and first["stats"] is None
    if concurrent:
        assert second["answer"].startswith("la") and second["stats"] is None
    else:
        assert second["answer"] == "" and second["info"] is None  # it never started
    # the models are free at once: a new comparison answers
    final = compare_job(client, models, thinking=False).result()
    assert [answers(c) for c in final[:2]] == [[ADD_ANSWER]] * 2


def test_bad_requests_are_refused_with_a_reason(ui_server, tmp_path):
    from gradio_client.exceptions import AppError

    client = new_client(ui_server)
    with pytest.raises(AppError, match="Pick 2 to 4 entries"):
        compare_job(client, ("tiny-fp8",)).result()
    with pytest.raises(AppError, match="Type a prompt"):
        compare_job(client, ("tiny-fp8", "tiny-fp8"), "  ").result()
    with pytest.raises(AppError, match="Start a comparison first"):
        client.submit("hi", "", True, "auto", 0, 50, False, api_name="/compare_follow_up").result()
    with pytest.raises(AppError, match="no-such-preset"):
        client.submit(*entry_args("tiny-fp8", "tiny-fp8"), ADD_Q, "", True, "no-such-preset", 0, 50, False,
                      api_name="/compare").result()
    with pytest.raises(AppError, match="Nothing to export"):
        client.predict(api_name="/compare_export")
    from gradio_client import handle_file

    not_an_export = tmp_path / "notes.json"
    not_an_export.write_text('{"prompt": "hi"}')
    with pytest.raises(AppError, match="Not a comparison export"):
        client.predict(handle_file(str(not_an_export)), api_name="/compare_import")


def test_stop_marks_columns_that_were_cut_short():
    """The Stop button's follow-up step: spinners close, unfinished columns say "Stopped"."""
    from backends.pool import ModelPool
    from core.settings import GenerationSettings
    from playground import Playground
    from playground.compare import EntrySpec, new_comparison
    from ui.compare_handlers import make_compare_handlers
    from ui.compare_view import column_messages

    comparison = new_comparison([EntrySpec("a"), EntrySpec("b")], ADD_Q, GenerationSettings(), True)
    comparison.start_turn(ADD_Q)
    comparison.entries[0].reasoning = "half a tho"
    stopped = make_compare_handlers(Playground(pool=ModelPool()))[2]
    assert stopped(comparison)[-2].startswith("Stopped")
    first, second = column_messages(comparison, 0), column_messages(comparison, 1)
    thought, note = first[1], first[-1]
    assert thought["metadata"]["status"] == "done" and "cut off" in thought["metadata"]["title"]
    assert note["metadata"]["id"].startswith("stopped:") and second[-1]["metadata"]["id"].startswith("stopped:")
    assert comparison.entries[0].error is None and comparison.entries[0].stop_reason == "stopped"
