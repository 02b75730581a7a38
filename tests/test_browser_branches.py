"""Edit, branches and Continue in a real headless Chromium, on the tiny model: edit the first of two
messages and get the scripted reply to the new text; step back to the first branch and find the
old continuation intact; regenerate twice with other settings and step through the three
alternatives with their settings; reload and find the branches; export and import the tree;
stop a reply, continue it, and get the rest of the scripted text.

Debian's /usr/bin/chromium driven by Playwright (never ``playwright install``); every request
that does not go to 127.0.0.1 is aborted and fails the test. Screenshots go to ``artifacts/``.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from chromium import ARTIFACTS, offline_context, requires_chromium, wait_pumping
from gates import ForwardGate
from core.messages import content_text, kind_of
from playground.tools.approval import ReplyControl
from test_browser_session import bot_messages, final_saves, send, stored_chat, user_messages, wait_saved
from tinymodels.script import FRUIT_ANSWER, FRUIT_Q, case

ANOTHER = case("multi_turn")  # "Name a fruit." -> "Apple.", then "Another one?" -> "Banana."
SKY = case("another")  # "What color is the sky?" -> reasoning "On a clear day the sky looks blue." -> "The sky is blue."
SKY_Q = SKY.messages[-1]["content"]

pytestmark = [requires_chromium, pytest.mark.timeout(600)]


@pytest.fixture()
def gate(ui_server, monkeypatch):
    backend = ui_server.demo.playground.load("tiny-bf16")
    gate = ForwardGate()
    monkeypatch.setattr(backend.model, "forward", gate.forward(backend.model.forward))
    halted = threading.Event()  # Stop has reached the server (its first step)
    request_stop = ReplyControl.request_stop

    def noted_stop(self, *args, **kwargs):
        result = request_stop(self, *args, **kwargs)
        halted.set()
        return result

    monkeypatch.setattr(ReplyControl, "request_stop", noted_stop)
    gate.halted = halted
    yield gate
    gate.release.set()


def edit_message(page, index: int, text: str) -> None:
    """Gradio's own edit of a user message: the pencil, the text, Submit."""
    user_messages(page).nth(index).hover()
    page.locator("#chatbot button[aria-label=Edit]").nth(index).click()
    box = page.locator("#chatbot textarea").first
    box.fill(text)
    page.locator("#chatbot button[aria-label=Submit]").first.click()


def position(page):
    return page.locator("#branch-position")


def last_reply_parts(chat: list[dict]) -> tuple[str, str, list[dict]]:
    """(reasoning, answer, figures notes) of the stored chat's last reply."""
    last = max(i for i, m in enumerate(chat) if m["role"] == "user")
    reply = chat[last + 1:]
    text = {kind_of(m): content_text(m["content"]) for m in reply}
    return text.get("reasoning", ""), text.get("answer", ""), [m for m in reply if kind_of(m) == "stats"]


def made_with(chat: list[dict]) -> str:
    return last_reply_parts(chat)[2][-1]["metadata"]["log"]


def test_edit_branches_reload_export_import_and_continue(browser, ui_server, gate, outside, tmp_path):
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    page = offline_context(browser, outside).new_page()
    page.goto(ui_server.url)
    expect(page.locator("#model-info")).to_contain_text("tiny-bf16 · transformers", timeout=30000)
    chat, bar = page.locator("#chatbot"), page.locator("#branch-bar")
    saves = 0

    def settled() -> None:
        nonlocal saves
        wait_saved(page, saves)
        saves = final_saves(page)

    send(page, FRUIT_Q)
    expect(chat).to_contain_text(FRUIT_ANSWER, timeout=30000)
    settled()
    send(page, ANOTHER.messages[-1]["content"])
    expect(chat).to_contain_text(ANOTHER.answer, timeout=30000)
    settled()
    expect(bar).to_be_hidden()  # no alternatives yet

    # edit the first message: the scripted reply to the new text; what followed is an alternative
    edit_message(page, 0, SKY_Q)
    expect(chat).to_contain_text(SKY.answer, timeout=30000)
    settled()
    expect(user_messages(page)).to_have_count(1)
    expect(chat).not_to_contain_text(ANOTHER.answer)
    expect(bar).to_be_visible()
    expect(position(page)).to_have_text("2 / 2")
    page.screenshot(path=str(ARTIFACTS / "branches-1-edited.png"), full_page=True)

    # back to the first branch: the old continuation, intact
    page.locator("#branch-previous").click()
    expect(position(page)).to_have_text("1 / 2")
    expect(user_messages(page)).to_have_count(2)
    expect(chat).to_contain_text(ANOTHER.answer)
    expect(chat).not_to_contain_text(SKY.answer)
    settled()
    assert [content_text(m["content"]) for m in stored_chat(page) if m["role"] == "user"] == \
        [FRUIT_Q, ANOTHER.messages[-1]["content"]]

    # Regenerate twice, with other temperatures: three alternatives of the last reply, each with its settings
    temperature = page.locator("#temperature input[type=number]")
    for value in ("0.3", "0.9"):
        temperature.fill(value)
        temperature.blur()
        page.locator("#regenerate").click()
        settled()
        assert f"temperature {value}" in made_with(stored_chat(page))
    expect(position(page)).to_have_text("3 / 3")
    expect(chat).to_contain_text("temperature 0.9")
    for shown, value in (("2 / 3", "0.3"), ("1 / 3", "0.6")):
        page.locator("#branch-previous").click()
        expect(position(page)).to_have_text(shown)
        expect(chat).to_contain_text(f"temperature {value}")
        settled()
        assert f"temperature {value}" in made_with(stored_chat(page))
    expect(chat).to_contain_text(ANOTHER.answer)  # the first reply, as it was
    page.screenshot(path=str(ARTIFACTS / "branches-2-three-alternatives.png"), full_page=True)

    # reload: the chat and its alternatives come back from the browser's storage
    page.reload()
    expect(page.locator("#model-info")).to_contain_text("tiny-bf16", timeout=30000)
    expect(position(page)).to_have_text("1 / 3", timeout=15000)
    page.locator("#branch-next").click()
    expect(position(page)).to_have_text("2 / 3")
    expect(chat).to_contain_text("temperature 0.3")
    saves = final_saves(page)

    # the first message's fork: clicking the message picks it; the edited branch is there
    user_messages(page).first.click()
    expect(position(page)).to_have_text("1 / 2")
    page.locator("#branch-next").click()
    expect(chat).to_contain_text(SKY.answer)
    expect(user_messages(page)).to_have_count(1)
    settled()

    # export: the JSON keeps the tree; Clear; import: the same chat and the same alternatives
    page.locator("#export-chat").click()
    json_link = page.locator("#chat-json a").first
    expect(json_link).to_be_visible(timeout=15000)
    with page.expect_download() as download_info:
        json_link.click()
    exported = Path(download_info.value.path()).read_text(encoding="utf-8")
    assert len(json.loads(exported)["branches"]["forks"]) == 2  # the edit's, and the regenerates' (inside)
    page.locator("#clear").click()
    expect(user_messages(page)).to_have_count(0)
    expect(bar).to_be_hidden()
    saved = tmp_path / "chat.json"
    saved.write_text(exported, encoding="utf-8")
    page.locator("#import-chat input[type=file], input[type=file]").first.set_input_files(str(saved))
    expect(chat).to_contain_text(SKY.answer, timeout=10000)
    expect(position(page)).to_have_text("2 / 2")
    page.locator("#branch-previous").click()  # the bar stays on the fork it steps through
    expect(position(page)).to_have_text("1 / 2")
    expect(chat).to_contain_text("temperature 0.3")  # the regenerates' fork, as it was left: 2 of 3
    user_messages(page).last.click()  # the last turn's message: the bar turns to its reply's fork
    expect(position(page)).to_have_text("2 / 3")
    settled()

    # Stop a reply mid-way, then Continue: the rest of the scripted text, in the same reply
    temperature.fill("0.6")
    temperature.blur()
    gate.arm(after=6)  # the prompt, then five tokens of the reasoning
    send(page, SKY_Q)
    wait_pumping(page, gate.reached, "the reply to reach the gate")
    page.locator("#stop").click()
    wait_pumping(page, gate.halted, "Stop to reach the server")
    gate.release.set()
    expect(bot_messages(page).last).to_contain_text("Stopped", timeout=15000)
    settled()
    reasoning, answer, _ = last_reply_parts(stored_chat(page))
    assert reasoning and SKY.reasoning.startswith(reasoning) and reasoning != SKY.reasoning and not answer
    page.screenshot(path=str(ARTIFACTS / "branches-3-stopped.png"), full_page=True)
    page.locator("#continue").click()
    expect(bot_messages(page).last).to_contain_text("tokens/s", timeout=30000)
    settled()
    reasoning, answer, notes = last_reply_parts(stored_chat(page))
    assert (reasoning, answer) == (SKY.reasoning, SKY.answer)
    assert len(notes) == 1 and "Continued" in content_text(notes[0]["content"])
    assert not any(kind_of(m) == "stopped" for m in stored_chat(page))  # the Stopped note gave way
    page.screenshot(path=str(ARTIFACTS / "branches-4-continued.png"), full_page=True)
