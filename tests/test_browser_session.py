"""Not losing anything, in a real headless Chromium: reload keeps the chat (a reply cut by the
reload is kept and marked), Regenerate, export / import (a broken file changes nothing), the YaRN
slider's context readout.

Debian's /usr/bin/chromium driven by Playwright (never ``playwright install``); every request
that does not go to 127.0.0.1 is aborted and fails the test. Screenshots go to ``artifacts/``.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from chromium import ARTIFACTS, offline_context, requires_chromium, wait_pumping
from gates import ForwardGate
from core.messages import content_text
from tinymodels.script import ENDLESS_Q, FRUIT_ANSWER, FRUIT_Q, case
from ui.chat_files import SAVED_ATTRIBUTE, STORAGE_KEY

ANOTHER = case("multi_turn")  # "Name a fruit." -> "Apple.", then "Another one?" -> "Banana."
ANOTHER_Q = ANOTHER.messages[-1]["content"]

pytestmark = requires_chromium


@pytest.fixture()
def counted_tiny_model(ui_server, monkeypatch):
    """The tiny model with a gate on its forward pass (``tests/gates.py``): ``computed`` is set at
    each pass (a Regenerate is seen to compute), and the song is held mid-reply until the page
    has reloaded."""
    backend = ui_server.demo.playground.load("tiny-bf16")
    gate = ForwardGate()
    monkeypatch.setattr(backend.model, "forward", gate.forward(backend.model.forward))
    backend.gate, backend.computed = gate, gate.computed
    yield backend
    gate.release.set()


def send(page, text: str) -> None:
    box = page.locator("#message textarea")
    box.fill(text)
    box.press("Enter")


def final_saves(page) -> int:
    """How many replies (or other chat changes) the page has saved as they ended."""
    return int(page.evaluate(f"() => document.body.getAttribute({SAVED_ATTRIBUTE!r}) || '0'"))


def wait_saved(page, before: int, timeout: float = 30000) -> None:
    """Wait for the page's signal that the chat as it ended is in localStorage (a final save after ``before``)."""
    page.wait_for_function(f"n => Number(document.body.getAttribute({SAVED_ATTRIBUTE!r}) || 0) > n", arg=before,
                           timeout=timeout)


def stored_chat(page) -> list[dict]:
    return json.loads(page.evaluate(f"() => localStorage.getItem({STORAGE_KEY!r}) || '[]'"))


def bot_messages(page):
    return page.locator("#chatbot [data-testid=bot]")


def user_messages(page):
    return page.locator("#chatbot [data-testid=user]")


def test_reload_regenerate_export_import(browser, ui_server, counted_tiny_model, outside, tmp_path):
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    context = offline_context(browser, outside)
    page = context.new_page()
    page.goto(ui_server.url)
    expect(page.locator("#model-info")).to_contain_text("tiny-bf16 · transformers", timeout=30000)
    chat = page.locator("#chatbot")

    # two turns, then Regenerate: the last reply is computed again and replaces the old one; each
    # reply ends with one final save, which the page counts
    assert final_saves(page) == 0
    send(page, FRUIT_Q)
    expect(chat).to_contain_text(FRUIT_ANSWER, timeout=30000)
    expect(chat).to_contain_text("tokens/s", timeout=10000)
    wait_saved(page, 0)
    send(page, ANOTHER_Q)
    expect(chat).to_contain_text(ANOTHER.answer, timeout=30000)
    expect(chat.get_by_text("tokens/s")).to_have_count(2, timeout=10000)
    wait_saved(page, 1)
    counted_tiny_model.computed.clear()
    page.locator("#regenerate").click()
    wait_pumping(page, counted_tiny_model.computed, "Regenerate to compute a new reply", timeout_s=20)
    # the page says the regenerated reply has ended and is saved: the storage holds it, figures included
    wait_saved(page, 2)
    assert final_saves(page) == 3
    kept = stored_chat(page)
    assert [content_text(m["content"]) for m in kept if m["role"] == "user"] == [FRUIT_Q, ANOTHER_Q]
    assert ANOTHER.answer in [content_text(m["content"]) for m in kept if m["role"] == "assistant"]
    assert sum(str((m.get("metadata") or {}).get("id", "")).startswith("stats:") for m in kept) == 2, kept
    expect(chat.get_by_text("tokens/s")).to_have_count(2)
    expect(user_messages(page)).to_have_count(2)
    expect(chat).to_contain_text(ANOTHER.answer)
    page.screenshot(path=str(ARTIFACTS / "session-1-chat.png"), full_page=True)

    # reload at once: the chat comes back from the browser's storage, exactly
    page.reload()
    expect(page.locator("#model-info")).to_contain_text("tiny-bf16", timeout=30000)
    expect(user_messages(page)).to_have_count(2, timeout=10000)
    expect(chat).to_contain_text(FRUIT_ANSWER)
    expect(chat).to_contain_text(ANOTHER.answer)
    expect(chat.get_by_text("tokens/s")).to_have_count(2)
    expect(chat).not_to_contain_text("Interrupted")
    page.screenshot(path=str(ARTIFACTS / "session-2-after-reload.png"), full_page=True)

    # export: a JSON and a Markdown file, both downloadable
    page.locator("#export-chat").click()
    json_link = page.locator("#chat-json a").first
    expect(json_link).to_be_visible(timeout=15000)
    with page.expect_download() as download_info:
        json_link.click()
    exported = json.loads(Path(download_info.value.path()).read_text(encoding="utf-8"))
    assert exported["format"] == "qwen3-playground-chat"
    assert [m["content"] for m in exported["messages"] if m["role"] == "user"] == [FRUIT_Q, ANOTHER_Q]
    md_link = page.locator("#chat-markdown a").first
    expect(md_link).to_be_visible()
    with page.expect_download() as download_info:
        md_link.click()
    markdown = Path(download_info.value.path()).read_text(encoding="utf-8")
    assert FRUIT_Q in markdown and ANOTHER.answer in markdown
    page.screenshot(path=str(ARTIFACTS / "session-3-export.png"), full_page=True)

    # a broken file: a clear error, the chat unchanged
    broken = tmp_path / "broken.json"
    broken.write_bytes(b'{"messages": [\xff\xfe')
    page.locator("#import-chat input[type=file], input[type=file]").first.set_input_files(str(broken))
    expect(page.get_by_text("not UTF-8")).to_be_visible(timeout=10000)
    expect(user_messages(page)).to_have_count(2)
    page.screenshot(path=str(ARTIFACTS / "session-4-import-error.png"), full_page=True)

    # Clear, then import the Markdown export back: the same chat
    page.locator("#clear").click()
    expect(user_messages(page)).to_have_count(0)
    saved = tmp_path / "chat.md"
    saved.write_text(markdown, encoding="utf-8")
    page.locator("#import-chat input[type=file], input[type=file]").first.set_input_files(str(saved))
    expect(user_messages(page)).to_have_count(2, timeout=10000)
    expect(chat).to_contain_text(ANOTHER.answer)

    # a reply still streaming when the page reloads: kept, and marked
    page.locator("#thinking-toggle input[type=checkbox]").uncheck()
    expect(page.locator("#temperature input[type=number]")).to_have_value("0.7", timeout=10000)
    page.locator("#loop-guard input[type=checkbox]").uncheck()  # the song must still stream at the reload
    counted_tiny_model.gate.arm(after=10)  # the prompt and nine tokens of the song, then held until released
    send(page, ENDLESS_Q)
    expect(bot_messages(page).last).to_contain_text("la la la", timeout=20000)
    # the autosave copies the streaming reply: reload once the storage holds part of the song
    page.wait_for_function(f"() => (localStorage.getItem({STORAGE_KEY!r}) || '').includes('la la la')",
                           timeout=10000)
    page.reload()
    expect(user_messages(page)).to_have_count(3, timeout=15000)
    expect(chat).to_contain_text("la la la")
    expect(chat).to_contain_text("Interrupted")
    page.screenshot(path=str(ARTIFACTS / "session-5-interrupted.png"), full_page=True)
    # the server noticed the page went away: once the model may go on, the generation ends
    assert counted_tiny_model.gate.reached.is_set()  # the reply was held mid-song through the reload
    counted_tiny_model.gate.release.set()
    assert counted_tiny_model._generation_lock.wait_free(timeout=10), "the generation kept running after the page left"

    # a second browser (another user) starts with an empty chat
    other = offline_context(browser, outside).new_page()
    other.goto(ui_server.url)
    expect(other.locator("#model-info")).to_contain_text("tiny-bf16", timeout=30000)
    expect(user_messages(other)).to_have_count(0)
    context.close()


def test_yarn_slider_readout(browser, ui_server, outside):
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    page = offline_context(browser, outside).new_page()
    page.goto(ui_server.url)
    expect(page.locator("#model-info")).to_contain_text("tiny-bf16", timeout=30000)
    page.get_by_text("Context length (YaRN)").click()
    readout = page.locator("#yarn-readout")
    expect(readout).to_contain_text("Context window: 32,768 tokens")
    expect(readout).to_contain_text("YaRN off")
    factor = page.locator("#yarn input[type=number]")
    factor.fill("4")
    factor.blur()  # the number box "releases" the slider when it loses focus: the model reloads
    expect(readout).to_contain_text("Context window: 131,072 tokens", timeout=30000)
    expect(readout).to_contain_text("static")  # the card's warning about static YaRN
    expect(page.locator("#model-info")).to_contain_text("YaRN x4", timeout=30000)  # reloaded with it
    page.screenshot(path=str(ARTIFACTS / "session-6-yarn.png"), full_page=True)
    factor.fill("1")
    factor.blur()
    expect(readout).to_contain_text("Context window: 32,768 tokens", timeout=10000)
    expect(page.locator("#model-info")).not_to_contain_text("YaRN x4", timeout=30000)
