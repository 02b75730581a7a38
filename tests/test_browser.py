"""The playground in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright).

Never ``playwright install``: install the browser with ``apt-get install -y chromium``. Every
request that does not go to 127.0.0.1 is aborted and fails the test: the page must work offline.
A screenshot of each stage goes to ``artifacts/`` (gitignored).
"""
from __future__ import annotations

import re
import threading
import time

import pytest

from chromium import ARTIFACTS, offline_context, requires_chromium
from conftest import join_threads
from tinymodels.script import ADD_ANSWER, ADD_Q, ADD_REASONING, ENDLESS_Q

pytestmark = requires_chromium


@pytest.fixture()
def slow_tiny_model(ui_server, monkeypatch):
    """Slow the tiny model down (it writes its whole reasoning in milliseconds) so the pending
    reasoning panel stays on screen long enough to be seen: each forward pass (one token) waits."""
    from backends.base import LoadOptions
    from core.catalog import resolve_model

    backend = ui_server.demo.playground.load("tiny-bf16")
    forward = backend.model.forward

    def slow_forward(*args, **kwargs):
        time.sleep(0.12)
        return forward(*args, **kwargs)

    monkeypatch.setattr(backend.model, "forward", slow_forward)
    return backend


def test_chat_reasoning_panel_thinking_toggle_offline(browser, ui_server, slow_tiny_model):
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    outside: list[str] = []
    context = offline_context(browser, outside)
    page = context.new_page()
    page.goto(ui_server.url)
    expect(page.locator("#model-info")).to_contain_text("tiny-bf16 · transformers", timeout=30000)
    expect(page.locator("#model-status")).to_contain_text("tiny demo model")

    # send a message: the reasoning panel opens with a spinner, then collapses with a duration
    page.locator("#message textarea").fill(ADD_Q)
    page.locator("#message textarea").press("Enter")
    expect(page.locator("#message textarea")).to_have_value("", timeout=3000)  # moved into the chat at once
    expect(page.locator("#chatbot")).to_contain_text(ADD_Q)
    thought = page.locator("#chatbot .thought-group").first
    # one locator for the whole pending state: open (expanded), spinner, "Thinking…"
    pending = thought.locator(".title.expanded", has=page.locator(".loading-spinner"), has_text="Thinking")
    expect(pending).to_be_visible(timeout=15000)
    page.screenshot(path=str(ARTIFACTS / "browser-1-thinking.png"))

    expect(thought.locator(".duration")).to_be_visible(timeout=20000)
    expect(thought.locator(".title")).to_contain_text("Thought for")
    expect(thought.locator(".loading-spinner")).to_have_count(0)
    expect(thought.locator(".title")).not_to_have_class(lambda_class("expanded"))
    chat = page.locator("#chatbot")
    expect(chat).to_contain_text(ADD_ANSWER, timeout=20000)
    expect(chat).to_contain_text("tokens/s", timeout=20000)  # the stats note under the reply
    expect(chat).not_to_contain_text(ADD_REASONING)  # collapsed: the body is gone
    thought.locator(".title").click()  # open it again: the reasoning is kept
    expect(thought).to_contain_text(ADD_REASONING)
    expect(page.locator("#message textarea")).to_have_value("")
    page.screenshot(path=str(ARTIFACTS / "browser-2-answer.png"), full_page=True)

    # flip Thinking: the preset switches to the non-thinking card values
    temperature = page.locator("#temperature input[type=number]")
    top_p = page.locator("#top_p input[type=number]")
    expect(temperature).to_have_value("0.6")
    expect(top_p).to_have_value("0.95")
    budget = page.locator("#thinking_budget input[type=number]")  # not a preset's: a preset change keeps it
    budget.fill("512")
    budget.press("Enter")
    page.locator("#thinking-toggle input[type=checkbox]").uncheck()
    expect(temperature).to_have_value("0.7", timeout=10000)
    expect(budget).to_have_value("512")
    expect(top_p).to_have_value("0.8")
    expect(page.locator("#preset input")).to_have_value("non-thinking")
    expect(page.locator("#preset-note")).not_to_contain_text("customised")

    # Clear, then Stop: the endless prompt streams until Stop; the server-side generation ends too
    page.locator("#clear").click()
    expect(chat).not_to_contain_text(ADD_ANSWER)
    page.locator("#loop-guard input[type=checkbox]").uncheck()  # the song must run until Stop
    page.locator("#message textarea").fill(ENDLESS_Q)
    page.locator("#message textarea").press("Enter")
    reply = chat.locator("[data-testid=bot]").last
    expect(reply).to_contain_text("la la la", timeout=15000)
    assert generating(), "the endless reply should be generating"
    page.locator("#stop").click()
    expect(chat).to_contain_text("Stopped")
    # Stop sets the reply's stop event (the generation ends) and cancels the event (Gradio closes
    # the stream, which hands the model back): both within moments
    assert join_threads(lambda name: name == "generate", 5) == [], "generate kept running after Stop"
    assert slow_tiny_model._generation_lock.wait_free(5), "the model was not handed back after Stop"
    expect(chat.locator("[data-testid=bot]").first).to_contain_text("la la la")  # what was streamed stays

    # changing a slider marks the preset as customised
    temperature.fill("0.9")
    temperature.press("Enter")
    expect(page.locator("#preset-note")).to_contain_text("customised", timeout=10000)
    page.screenshot(path=str(ARTIFACTS / "browser-3-non-thinking.png"), full_page=True)

    # load another model by name: progress in the status, then its info line and quantized preset
    page.locator("#model-custom textarea, #model-custom input").first.fill("tiny-fp8")
    page.locator("#model-custom textarea, #model-custom input").first.press("Enter")
    expect(page.locator("#model-status")).to_contain_text("tiny-fp8 ready", timeout=30000)
    expect(page.locator("#model-info")).to_contain_text("fp8", timeout=10000)
    expect(page.locator("#preset input")).to_have_value("non-thinking-quantized", timeout=10000)
    expect(page.locator("#presence_penalty input[type=number]")).to_have_value("1.5")
    expect(page.locator("#model-choice input")).to_have_value(re.compile("tiny-fp8"))  # the picker follows

    # YaRN: a desired context gives the recommended factor; using it reloads the model with it
    page.get_by_text("Context length (YaRN)").click()
    expect(page.locator("#yarn-readout")).to_contain_text("32,768")
    page.locator("#desired-context input").fill("65536")
    page.locator("#desired-context input").press("Enter")
    expect(page.locator("#yarn-recommendation")).to_contain_text("Recommended factor for 65,536 tokens: 2")
    page.get_by_role("button", name="Use recommended factor (reloads)").click()
    expect(page.locator("#model-info")).to_contain_text("YaRN x2", timeout=30000)
    expect(page.locator("#model-info")).to_contain_text("context 65,536")
    expect(page.locator("#yarn input[type=number]")).to_have_value("2")
    expect(page.locator("#yarn-readout")).to_contain_text("static")  # the card's warning
    page.screenshot(path=str(ARTIFACTS / "browser-4-yarn.png"), full_page=True)

    # another browser session has its own, empty chat
    other = offline_context(browser, outside).new_page()
    other.goto(ui_server.url)
    expect(other.locator("#model-info")).to_contain_text("tiny-bf16", timeout=30000)
    expect(other.locator("#chatbot")).not_to_contain_text(ADD_ANSWER)
    expect(other.locator("#temperature input[type=number]")).to_have_value("0.6")

    assert outside == [], f"the page tried to reach outside 127.0.0.1: {outside}"


def generating() -> bool:
    return any(t.name == "generate" and t.is_alive() for t in threading.enumerate())


def lambda_class(name: str):
    """A regex matching a class attribute that contains ``name`` as a whole word."""
    import re

    return re.compile(rf"(^|\s){re.escape(name)}(\s|$)")
