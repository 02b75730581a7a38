"""Published reference figures beside measured ones (``presets/published_figures.json``,
``core.published``): the shipped file, what matches which checkpoint, a malformed file, and the
comparison's rows, JSON and Markdown exports, ``app.py compare --json`` and the Compare tab's block.

Nothing here loads a model: comparisons are built from their data classes, and the CLI's 30B
entries fail to load at once (offline, an empty Hugging Face cache)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.catalog import ModelSpec, load_catalog, resolve_model
from core.compare import Comparison, EntryResult
from core.compare_io import parse_comparison
from core.published import PUBLISHED_FILE, PublishedFiguresError, load_published
from playground import Playground
from playground.compare import EntrySpec, add_published

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(120)
GPTQ, BF16, GGUF = "Qwen/Qwen3-30B-A3B-GPTQ-Int4", "Qwen/Qwen3-30B-A3B", "Qwen/Qwen3-30B-A3B-GGUF"
SOURCE = "Qwen3-30B-A3B-GPTQ-Int4 model card, Performance"

# The Performance ("性能表现") table of https://huggingface.co/Qwen/Qwen3-30B-A3B-GPTQ-Int4, as the
# card prints it ("-": not reported)
CARD_TABLE = """\
| 模式 | 量化类型 | LiveBench 2024-11-25 | GPQA | MMLU-Redux | AIME24 |
|---|---|---|---|---|---|
| Thinking | bf16 | 74.3 | 65.8 | 89.5 | 80.4 |
| Thinking | GPTQ-int4 | 71.5 | 60.1 | 88.8 | 79.5 |
| Non-Thinking | bf16 | 59.4 | 54.8 | 84.1 | - |
| Non-Thinking | GPTQ-int4 | 57.2 | 50.4 | 83.5 | - |
"""


def card_rows() -> dict[tuple[str, str], dict[str, float]]:
    """(checkpoint, mode) -> figures, parsed from ``CARD_TABLE``."""
    lines = [[cell.strip() for cell in line.strip("|").split("|")] for line in CARD_TABLE.splitlines()]
    benchmarks = lines[0][2:]
    rows = {}
    for mode, quant, *cells in lines[2:]:
        checkpoint = BF16 if quant == "bf16" else GPTQ
        rows[(checkpoint, mode.lower())] = {b: float(c) for b, c in zip(benchmarks, cells) if c != "-"}
    return rows


def catalog() -> dict[str, ModelSpec]:
    return {spec.name: spec for spec in load_catalog()}


def test_the_shipped_file_loads_with_the_gptq_cards_source():
    sources = load_published().sources
    card = next(source for source in sources if source.url == f"https://huggingface.co/{GPTQ}")
    assert card.name == SOURCE
    assert [b.name for b in card.benchmarks] == ["LiveBench 2024-11-25", "GPQA", "MMLU-Redux", "AIME24"]
    assert all(b.higher_is_better for b in card.benchmarks)
    assert card.settings is None  # the card states no evaluation settings beside its table
    assert {(row.checkpoint, row.format) for row in card.rows} == {(BF16, "bf16"), (GPTQ, "gptq-int4")}


def test_the_figures_are_exactly_the_cards():
    card = next(source for source in load_published().sources if source.name == SOURCE)
    shipped = {(row.checkpoint, row.mode): row.figures for row in card.rows}
    assert shipped == card_rows()
    gptq_thinking = shipped[(GPTQ, "thinking")]
    assert gptq_thinking["LiveBench 2024-11-25"] == 71.5 and gptq_thinking["GPQA"] == 60.1
    assert gptq_thinking["MMLU-Redux"] == 88.8 and gptq_thinking["AIME24"] == 79.5
    assert "AIME24" not in shipped[(GPTQ, "non-thinking")]  # "-" in the card: absent, not 0
    assert shipped[(BF16, "non-thinking")] == {"LiveBench 2024-11-25": 59.4, "GPQA": 54.8, "MMLU-Redux": 84.1}


def test_only_the_exact_checkpoint_in_its_mode_matches():
    published, models = load_published(), catalog()
    for thinking, mode in ((True, "thinking"), (False, "non-thinking")):
        [match] = published.matching(models["qwen3-30b-a3b-gptq-int4"], thinking)
        assert (match.source.name, match.row.checkpoint, match.row.mode) == (SOURCE, GPTQ, mode)
        assert match.row.figures == card_rows()[(GPTQ, mode)]
        [match] = published.matching(models["qwen3-30b-a3b"], thinking)
        assert match.row.figures == card_rows()[(BF16, mode)]
        # the same model's other checkpoints, and the tiny models, have none
        for name in ("qwen3-30b-a3b-gguf-q4_k_m", "qwen3-30b-a3b-gguf-q8_0", "qwen3-30b-a3b-fp8", "qwen3-235b-a22b-gptq-int4",
                     "tiny-bf16", "tiny-fp8", "tiny-gptq-int4", "tiny-gguf-q4_k_m", "tiny-gguf-q8_0"):
            assert published.matching(models[name], thinking) == [], name
    assert models["qwen3-30b-a3b-gguf-q4_k_m"].source == GGUF
    # a repo id typed by hand resolves to the catalog entry; another owner's copy does not match
    assert published.matching(resolve_model(GPTQ), True)
    assert published.matching(resolve_model("someone/Qwen3-30B-A3B-GPTQ-Int4"), True) == []
    # the same repo id under another format (a GGUF file in it) is not the published checkpoint
    assert published.matching(ModelSpec("x", "llama.cpp", GPTQ, format="gguf-Q4_K_M", filename="x.gguf"), True) == []
    # a model that never thinks gets its non-thinking figures whatever the switch says
    never = ModelSpec("x", "gptq", GPTQ, format="gptq-int4", thinking="never")
    assert [m.row.mode for m in published.matching(never, True)] == ["non-thinking"]


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "published_figures.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def shipped_data() -> dict:
    return json.loads(PUBLISHED_FILE.read_text(encoding="utf-8"))


@pytest.mark.parametrize("change, field, problem", [
    (lambda d: d["sources"][0]["rows"][1]["figures"].update({"GPQA": "60.1"}), "sources[0].rows[1].figures['GPQA']",
     "must be a number"),
    (lambda d: d["sources"][0]["rows"][1]["figures"].update({"GPQA": None}), "sources[0].rows[1].figures['GPQA']",
     "leave a figure out"),
    (lambda d: d["sources"][0]["rows"][2]["figures"].update({"MMLU": 1.0}), "sources[0].rows[2].figures['MMLU']",
     "not one of the source's benchmarks"),
    (lambda d: d["sources"][0]["rows"][0].update({"mode": "Thinking"}), "sources[0].rows[0].mode", "must be one of"),
    (lambda d: d["sources"][0]["rows"][3].pop("checkpoint"), "sources[0].rows[3].checkpoint", "non-empty text"),
    (lambda d: d["sources"][0].update({"url": "http://example.com"}), "sources[0].url", "https://"),
    (lambda d: d["sources"][0].pop("name"), "sources[0].name", "non-empty text"),
    (lambda d: d["sources"][0]["benchmarks"][1].update({"higher_is_better": "yes"}),
     "sources[0].benchmarks[1].higher_is_better", "true or false"),
    (lambda d: d["sources"][0]["rows"].append(dict(d["sources"][0]["rows"][0])), "sources[0].rows[4]", "a second row"),
    (lambda d: d.update({"sources": {}}), "'sources'", "expected an object"),
])
def test_a_malformed_file_names_the_file_and_the_field(tmp_path, change, field, problem):
    data = shipped_data()
    change(data)
    path = write(tmp_path, data)
    with pytest.raises(PublishedFiguresError) as raised:
        load_published(path)
    message = str(raised.value)
    assert str(path) in message and field in message and problem in message, message


def test_a_file_that_is_not_json_says_so(tmp_path):
    path = write(tmp_path, '{"sources": [')
    with pytest.raises(PublishedFiguresError, match="not valid JSON") as raised:
        load_published(path)
    assert str(path) in str(raised.value)


def test_the_playground_refuses_a_malformed_file_at_start(tmp_path, monkeypatch):
    import playground.service

    data = shipped_data()
    data["sources"][0]["rows"][0]["mode"] = "both"
    path = write(tmp_path, data)
    monkeypatch.setattr(playground.service, "load_published", lambda: load_published(path))
    with pytest.raises(PublishedFiguresError, match=r"sources\[0\]\.rows\[0\]\.mode"):
        Playground()


ENTRIES = ("qwen3-30b-a3b-gptq-int4", "qwen3-30b-a3b-gguf-q4_k_m", "tiny-bf16")


def measured(thinking: bool = True) -> Comparison:
    """A finished comparison of the 30B GPTQ, its GGUF and a tiny model, built from its data
    classes (no model loads), with the published figures looked up as a run does."""
    comparison = Comparison(prompt="What is 2+3?", settings={"seed": 0}, thinking=thinking)
    stats = {"prompt_tokens": 10, "completion_tokens": 5, "reasoning_tokens": 2, "ttft_s": 0.1, "tokens_per_s": 20.0,
             "total_s": 0.3, "finish_reason": "stop"}
    for index, model in enumerate(ENTRIES, 1):
        comparison.entries.append(EntryResult(label=f"{index}. {model}", model=model, answer="The answer is 5.",
                                              stats=dict(stats)))
    add_published(Playground(), comparison, [EntrySpec(model) for model in ENTRIES])
    return comparison


def test_rows_and_json_export_carry_the_figures_with_their_source():
    comparison = measured()
    rows = comparison.rows()
    [published] = rows[0]["published"]
    assert published["source"] == SOURCE and published["url"] == f"https://huggingface.co/{GPTQ}"
    assert (published["checkpoint"], published["format"], published["mode"]) == (GPTQ, "gptq-int4", "thinking")
    assert {f["benchmark"]: f["value"] for f in published["figures"]} == card_rows()[(GPTQ, "thinking")]
    assert all(f["higher_is_better"] for f in published["figures"])
    assert rows[1]["published"] == [] and rows[2]["published"] == []  # the GGUF and the tiny model
    assert rows[0]["tokens_per_s"] == 20.0  # the measured figures stay beside them
    data = json.loads(comparison.to_json())
    assert data["table"][0]["published"] == rows[0]["published"] == data["entries"][0]["published"]
    assert Comparison.from_dict(data).to_dict() == comparison.to_dict()
    off = measured(thinking=False).rows()[0]["published"][0]
    assert off["mode"] == "non-thinking" and "AIME24" not in {f["benchmark"] for f in off["figures"]}


def test_markdown_export_has_one_line_per_matching_entry_naming_the_source():
    markdown = measured().to_markdown()
    block = markdown.split("**Published figures**", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in block.splitlines() if line.startswith("- ")]
    assert lines == [f"- **1. qwen3-30b-a3b-gptq-int4** (`{GPTQ}`, GPTQ-int4, thinking): LiveBench 2024-11-25 71.5 · "
                     "GPQA 60.1 · MMLU-Redux 88.8 · AIME24 79.5 (higher is better) — "
                     f"[{SOURCE}](https://huggingface.co/{GPTQ})"]
    assert markdown.index("| 1. qwen3-30b-a3b-gptq-int4 |") < markdown.index("**Published figures**")


def test_nothing_is_shown_when_no_entry_matches():
    comparison = measured()
    comparison.entries.pop(0)  # the GGUF and the tiny model are left
    assert not comparison.has_published and comparison.published_note() == ""
    assert "published" not in comparison.rows()[0]
    assert "Published figures" not in comparison.to_markdown()


def test_an_imported_file_never_brings_its_own_figures():
    comparison = measured()
    data = comparison.to_dict()
    data["entries"][1]["published"] = [{**data["entries"][0]["published"][0], "source": "made up"}]
    imported = parse_comparison(json.dumps(data), 4)
    assert all(entry.published is None for entry in imported.entries)
    assert "made up" not in imported.to_markdown()


def test_the_compare_tabs_block_is_shown_only_when_an_entry_matches():
    from ui.compare_handlers import render_measures
    from ui.compare_view import published_note

    note = published_note(measured())
    assert note.startswith("**Published figures**") and SOURCE in note and "LiveBench 2024-11-25 71.5" in note
    block = render_measures(measured())[-1]
    assert block.visible is True and block.value == note  # under the table
    tiny = Comparison(prompt="", settings={}, thinking=True, entries=[EntryResult("1. tiny-bf16", "tiny-bf16")])
    assert render_measures(tiny)[-1].visible is False and render_measures(None)[-1].visible is False


def test_the_tab_looks_the_figures_up_again_on_import(tmp_path):
    from ui.compare_handlers import make_compare_handlers

    data = measured().to_dict()
    data["entries"][0]["published"] = [{**data["entries"][0]["published"][0], "source": "made up"}]
    path = tmp_path / "comparison.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    import_json = make_compare_handlers(Playground())[6]
    imported = next(value for value in import_json(str(path)) if isinstance(value, Comparison))
    assert imported.entries[0].published[0]["source"] == SOURCE
    assert imported.entries[1].published == [] and imported.entries[2].published == []


def test_compare_command_json_carries_the_figures(tmp_path):
    """The 30B entries fail to load at once (offline, an empty cache): what was published for
    them is in the export all the same."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run([sys.executable, "app.py", "compare", "--models", "qwen3-30b-a3b-gptq-int4",
                             "qwen3-30b-a3b-gguf-q4_k_m", "--prompt", "hi", "--no-thinking", "--json"],
                            cwd=ROOT, capture_output=True, text=True, timeout=100, env=env)
    assert result.returncode == 1, result.stderr  # the entries failed to load
    data = json.loads(result.stdout)
    assert all("cannot be reached" in entry["error"] for entry in data["entries"])
    [published] = data["table"][0]["published"]
    assert published["source"] == SOURCE and published["mode"] == "non-thinking"
    assert {f["benchmark"]: f["value"] for f in published["figures"]} == card_rows()[(GPTQ, "non-thinking")]
    assert data["table"][1]["published"] == [] and data["entries"][1]["published"] == []
