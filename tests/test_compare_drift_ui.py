"""The Compare tab's drift score, through its API (``/compare_drift``) and in a real Chromium.

Entries: tiny-bf16 (the reference, transformers), tiny-gguf-q4_k_m and tiny-gguf-q8_0 (llama.cpp)
on the shipped ``encyclopedia`` text (193 tokens; ``tests/test_drift.py`` has the figures:
KLD mean 0.056 for Q4_K_M, 0.0018 for Q8_0). The browser part saves a screenshot to
``artifacts/compare-drift.png`` (copied by hand to ``docs/screenshots/`` for the README).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from chromium import ARTIFACTS, offline_context, requires_chromium
from tinymodels.script import ADD_Q

ENTRIES = ("tiny-bf16", "tiny-gguf-q4_k_m", "tiny-gguf-q8_0")
TEXT = "encyclopedia"
SCREENSHOT = ARTIFACTS / "compare-drift.png"  # a test run never changes tracked files

pytestmark = pytest.mark.timeout(300)


def entry_args(*models: str) -> list:
    padded = [*models, *[""] * (4 - len(models))]
    return [value for model in padded for value in (model, 1.0)]


def table(output) -> list[dict]:
    return [dict(zip(output["headers"], row)) for row in output["data"]]


def test_drift_endpoint_fills_the_table_shows_progress_and_exports(ui_server):
    from gradio_client import Client

    client = Client(ui_server.url, verbose=False)
    job = client.submit(*entry_args(*ENTRIES), TEXT, "", api_name="/compare_drift")
    steps = list(job)
    final = job.result()
    statuses = [step[7] for step in steps]
    for number in (1, 2, 3):
        assert any(s.startswith(f"Scoring drift on entry {number} of 3") for s in statuses), statuses
    assert final[7].startswith("Drift of every entry from 1. tiny-bf16 on encyclopedia")
    rows = table(final[4])
    assert [r["entry"] for r in rows] == [f"{i}. {m}" for i, m in enumerate(ENTRIES, 1)]
    reference, q4, q8 = rows
    assert float(reference["KLD mean"]) == 0.0 and float(reference["KLD max"]) == 0.0
    assert reference["same top token"] == "100.0%"
    assert 0 < float(q8["KLD mean"]) < float(q4["KLD mean"])  # 8 bits drift less than 4
    assert float(q4["same top token"].rstrip("%")) < 100.0
    assert all(r["tokens scored"] == "193" and float(r["perplexity"]) > 1 and r["error"] == "" for r in rows)

    json_path, md_path = client.predict(api_name="/compare_export")  # the export carries the figures
    exported = json.loads(Path(json_path).read_text(encoding="utf-8"))
    assert [e["drift"]["text"] for e in exported["entries"]] == [TEXT] * 3
    assert exported["table"][1]["kld_mean"] == pytest.approx(exported["entries"][1]["drift"]["kld_mean"])
    assert exported["table"][0]["same_top_token"] == 1.0
    markdown = Path(md_path).read_text(encoding="utf-8")
    assert "| KLD mean | KLD p99 | KLD max | same top token | tokens scored |" in markdown
    assert "Drift vs 1. tiny-bf16 on 193 tokens" in markdown


def test_drift_refuses_an_oversize_pasted_text(ui_server):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    limit = ui_server.demo.playground.config.max_message_chars
    client = Client(ui_server.url, verbose=False)
    with pytest.raises(AppError, match="the pasted text is"):
        client.predict(*entry_args("tiny-bf16", "tiny-bf16"), TEXT, "p" * (limit + 1), api_name="/compare_drift")


@requires_chromium
def test_score_drift_in_chromium_fills_the_drift_columns_and_charts(browser, ui_server, outside):
    from playwright.sync_api import expect

    from test_browser_compare import pick

    page = offline_context(browser, outside).new_page()
    page.set_viewport_size({"width": 1600, "height": 1100})
    page.goto(ui_server.url)
    page.get_by_role("tab", name="Compare").click()
    for index, model in enumerate(ENTRIES, 1):
        pick(page, index, model)
        expect(page.locator(f"#compare-model-{index} input")).to_have_value(re.compile(rf"^{re.escape(model)}"))
    page.locator("#compare-prompt textarea").fill(ADD_Q)  # a reply first: memory by kind and the bound
    page.locator("#compare-send").click()
    expect(page.locator("#compare-status")).to_contain_text("Done in", timeout=120000)
    page.get_by_text("Perplexity and drift").click()
    text = page.locator("#compare-text input")
    text.click()
    text.fill(TEXT)
    page.get_by_role("option", name=TEXT, exact=True).click()
    expect(text).to_have_value(TEXT)
    page.locator("#compare-drift").click()
    status = page.locator("#compare-status")
    expect(status).to_contain_text("Drift of every entry from 1. tiny-bf16", timeout=120000)

    table = page.locator("#compare-table")
    expect(table.get_by_role("row")).to_have_count(1 + len(ENTRIES))  # the header row, one per entry
    headers = table.locator("[role=columnheader]").evaluate_all("cells => cells.map(c => c.getAttribute('title'))")
    for header in ("KLD mean", "KLD p99", "same top token", "tokens scored", "perplexity"):
        assert header in headers, headers
    cells = table.get_by_role("row").evaluate_all(
        "rows => rows.slice(1).map(row => [...row.querySelectorAll('[role=gridcell]')].map(c => c.innerText.trim()))")
    shown = [dict(zip(headers, row)) for row in cells]
    reference, q4 = shown[0], shown[1]
    assert reference["entry"] == "1. tiny-bf16" and q4["entry"] == "2. tiny-gguf-q4_k_m", shown
    # the reference: KLD 0 and every top token the same; Q4_K_M: a positive KLD
    assert float(reference["KLD mean"]) == 0.0 and reference["same top token"] == "100.0%", reference
    assert float(q4["KLD mean"]) > 0 and q4["tokens scored"] == "193", q4

    bars = page.locator("#compare-kld-chart svg [aria-roledescription=bar]")  # one bar per entry
    expect(bars).to_have_count(len(ENTRIES), timeout=10000)
    described = bars.evaluate_all("bars => bars.map(bar => bar.getAttribute('aria-label'))")
    assert [re.match(r"entry: (.+?); ", d).group(1) for d in described] == \
        [f"{i}. {m}" for i, m in enumerate(ENTRIES, 1)], described
    shares = page.locator("#compare-bound-chart svg [aria-roledescription=bar]")  # one per entry, > 0
    expect(shares).to_have_count(len(ENTRIES))
    described = shares.evaluate_all("bars => bars.map(bar => bar.getAttribute('aria-label'))")
    assert all(float(re.search(r"% of bound: ([\d.,]+)", d).group(1).replace(",", "")) > 0 for d in described), described
    kinds = page.locator("#compare-kinds-chart svg [aria-roledescription=bar]")  # stacked: weights, KV (other)
    expect(kinds.first).to_be_visible()
    described = kinds.evaluate_all("bars => bars.map(bar => bar.getAttribute('aria-label'))")
    for entry in (f"{i}. {m}" for i, m in enumerate(ENTRIES, 1)):
        stacked = [d for d in described if f"entry: {entry};" in d]
        assert any("weights" in d for d in stacked) and any("KV cache" in d for d in stacked), described
    expect(page.locator("#compare-measure-note")).to_contain_text("windows of")
    expect(page.locator("#compare-measure-note")).to_contain_text("memory bandwidth")
    page.locator("#compare-kld-chart").scroll_into_view_if_needed()
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert outside == [], f"the page tried to reach outside 127.0.0.1: {outside}"
