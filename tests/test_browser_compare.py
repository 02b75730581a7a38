"""The Compare tab in a real headless Chromium: three tiny models side by side, offline.

Same set-up as ``test_browser.py`` (Debian's /usr/bin/chromium through Playwright; every request
not to 127.0.0.1 is aborted and fails the test). Screenshots go to ``artifacts/`` (gitignored).
"""
from __future__ import annotations

import re

from chromium import ARTIFACTS, offline_context, requires_chromium
from conftest import join_threads
from tinymodels.script import ADD_ANSWER, ADD_Q, ADD_REASONING, ENDLESS_Q

ENTRIES = ("tiny-fp8", "tiny-gptq-int4", "tiny-gguf-q8_0")

pytestmark = requires_chromium


def pick(page, index: int, model: str) -> None:
    """Choose a catalog entry in the index-th picker (type to filter, click the option)."""
    field = page.locator(f"#compare-model-{index} input")
    field.click()
    field.fill(model)
    page.get_by_role("option", name=re.compile(rf"^{re.escape(model)} ")).first.click()


def test_compare_three_models_side_by_side_offline(browser, ui_server):
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    outside: list[str] = []
    page = offline_context(browser, outside).new_page()
    page.set_viewport_size({"width": 1600, "height": 1100})
    page.goto(ui_server.url)
    page.get_by_role("tab", name="Compare").click()
    for index, model in enumerate(ENTRIES, 1):
        pick(page, index, model)
        expect(page.locator(f"#compare-model-{index} input")).to_have_value(re.compile(rf"^{re.escape(model)}"))
    page.locator("#compare-prompt textarea").fill(ADD_Q)
    page.locator("#compare-send").click()

    # every column fills: the question, a collapsed reasoning panel, the answer, the stats note
    for index, model in enumerate(ENTRIES, 1):
        column = page.locator(f"#compare-column-{index}")
        expect(column).to_contain_text(ADD_ANSWER, timeout=60000)
        expect(column).to_contain_text("tokens/s", timeout=20000)
        expect(column).to_contain_text(ADD_Q)
        expect(column.locator(".thought-group .title").first).to_contain_text("Thought for")
        expect(column).not_to_contain_text(ADD_REASONING)  # collapsed
        expect(column).to_contain_text(f"{index}. {model}")  # the column's label
    expect(page.locator("#compare-column-4")).to_be_hidden()  # the unused fourth column
    expect(page.locator("#compare-status")).to_contain_text("Done in", timeout=20000)

    # the results table: one row per entry, the reference agrees with every format here
    table = page.locator("#compare-table")
    for index, model in enumerate(ENTRIES, 1):  # agreement 100% with the first entry, the same answer
        row = table.get_by_role("row", name=re.compile(rf"^{index}\. {re.escape(model)} .* 100% yes"))
        expect(row).to_have_count(1)
    expect(page.locator("#compare-published")).to_be_hidden()  # no source published figures for tiny models
    # the charts (Vega's SVG, bundled with Gradio): one bar per entry, labelled with it, in order
    labels = [f"{index}. {model}" for index, model in enumerate(ENTRIES, 1)]
    for chart, unit in (("#compare-speed-chart", "tokens/s"), ("#compare-memory-chart", "MiB")):
        bars = page.locator(f"{chart} svg [aria-roledescription=bar]")
        expect(bars).to_have_count(len(ENTRIES), timeout=10000)
        expect(bars.first).to_be_visible()
        described = bars.evaluate_all("bars => bars.map(bar => bar.getAttribute('aria-label'))")
        shown = [re.fullmatch(rf"entry: (.+); {re.escape(unit)}: ([\d.,]+)", label or "") for label in described]
        assert all(shown), described
        assert [m.group(1) for m in shown] == labels, described
        assert all(float(m.group(2).replace(",", "")) > 0 for m in shown), described
    page.locator("#compare-column-1 .thought-group .title").first.click()  # the reasoning is kept
    expect(page.locator("#compare-column-1")).to_contain_text(ADD_REASONING)
    page.screenshot(path=str(ARTIFACTS / "browser-compare.png"), full_page=True)

    # Stop stops every column: the endless song, one after another; the later columns never start
    page.locator("#compare-thinking input[type=checkbox]").uncheck()
    page.locator("#compare-loop-guard input[type=checkbox]").uncheck()  # the song must go on until Stop
    page.locator("#compare-prompt textarea").fill(ENDLESS_Q)
    page.locator("#compare-send").click()
    expect(page.locator("#compare-column-1")).to_contain_text("la la la", timeout=30000)
    page.locator("#compare-stop").click()
    expect(page.locator("#compare-status")).to_contain_text("Stopped", timeout=10000)
    for index in (1, 2, 3):
        expect(page.locator(f"#compare-column-{index}")).to_contain_text("Stopped")
    expect(page.locator("#compare-column-2 [data-testid=bot]").first).not_to_contain_text("la la")  # never sang
    assert join_threads(lambda name: name == "generate" or name.startswith("compare-"), 10) == [], \
        "a column kept generating after Stop"
    page.screenshot(path=str(ARTIFACTS / "browser-compare-stopped.png"), full_page=True)

    assert outside == [], f"the page tried to reach outside 127.0.0.1: {outside}"

