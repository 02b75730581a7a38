"""Tools in a real headless Chromium, offline, on the tiny bf16 model: the Tools panel connects
an MCP server over stdio (the cards' mcp-server-time) and one over streamable HTTP (the tests'
weather server) from a pasted config, lists their tools; a chat calls one tool, then two in
parallel with "ask before each call" (one run, one skipped); a reload keeps the calls; the
Compare tab runs three formats with the same tools. Screenshots go to ``artifacts/``.
"""
from __future__ import annotations

import json
import sys

import pytest

from chromium import ARTIFACTS, offline_context, requires_chromium
from mcp_weather_server import serve_http
from tinymodels.script import PARALLEL_Q, WEATHER_Q, WEATHER_REPORTS

pytestmark = [requires_chromium, pytest.mark.timeout(420)]


@pytest.fixture()
def weather_http():
    server = serve_http()
    try:
        yield server
    finally:
        server.close()


def config_for(weather_url: str) -> str:
    return json.dumps({"mcpServers": {
        "time": {"command": sys.executable, "args": ["-m", "mcp_server_time", "--local-timezone=Asia/Shanghai"]},
        "weather": {"url": weather_url}}}, indent=2)


def connect_tools(page, config: str) -> None:
    from playwright.sync_api import expect

    page.locator("#tools-panel").get_by_text("Tools", exact=True).first.click()
    page.locator("#mcp-config .cm-content").click()
    page.keyboard.insert_text(config)
    page.locator("#mcp-connect").click()
    status = page.locator("#mcp-status")
    expect(status).to_contain_text("time (stdio): ready, 2 tool(s)", timeout=60000)
    expect(status).to_contain_text("weather (http): ready, 2 tool(s)")
    tools = page.locator("#tool-list")
    for name in ("get_current_time", "convert_time", "get_weather", "get_location"):
        expect(tools.locator("label", has_text=name).locator("input")).to_be_checked()
    # the weather questions: the weather server's tools only, as the tiny model was trained
    for name in ("get_current_time", "convert_time"):
        tools.locator("label", has_text=name).locator("input").uncheck()


def send(page, text: str) -> None:
    page.locator("#message textarea").fill(text)
    page.locator("#message textarea").press("Enter")


def test_tools_panel_calls_approval_and_reload(browser, ui_server, outside, weather_http):
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    page = offline_context(browser, outside).new_page()
    page.goto(ui_server.url)
    expect(page.locator("#model-info")).to_contain_text("tiny-bf16 · transformers", timeout=30000)
    connect_tools(page, config_for(weather_http.url))
    page.locator("#tools-panel").screenshot(path=str(ARTIFACTS / "tools-panel.png"))
    page.get_by_text("Tool descriptions and schemas").click()  # each tool's description and JSON schema
    expect(page.locator("#tool-details")).to_contain_text("Get the current weather in a city.")
    expect(page.locator("#tool-details")).to_contain_text('"required": [')
    page.screenshot(path=str(ARTIFACTS / "tools-1-panel.png"), full_page=True)

    # one call: it runs, its result is nested in it, the answer quotes it
    chat = page.locator("#chatbot")
    send(page, WEATHER_Q)
    expect(chat).to_contain_text("It is sunny and 21 degrees in Paris.", timeout=60000)
    call = chat.locator(".thought-group", has_text="Tool call: get_weather").first
    expect(call).to_contain_text(WEATHER_REPORTS["Paris"])  # the preview beside the title
    call.locator(".title").first.click()  # open: the arguments, then the result nested inside
    expect(call).to_contain_text('"city": "Paris"')
    expect(call).to_contain_text("Result · 20 characters")

    # two calls in parallel, asking before each: run the first, skip the second (in a new chat: the
    # tiny model knows single questions only)
    page.locator("#clear").click()
    expect(chat).not_to_contain_text(WEATHER_Q)
    page.locator("#approve-each input").check()
    send(page, PARALLEL_Q)
    run = chat.get_by_role("button", name="▶ Run", exact=True)
    expect(run).to_have_count(1, timeout=60000)
    expect(chat).to_contain_text("waiting for you: Run or Skip")
    page.screenshot(path=str(ARTIFACTS / "tools-2-approval.png"), full_page=True)
    run.click()
    skip = chat.get_by_role("button", name="Skip", exact=True)
    expect(chat).to_contain_text(WEATHER_REPORTS["Paris"], timeout=30000)
    expect(skip).to_have_count(1, timeout=30000)  # the second call now waits
    skip.click()
    expect(chat).to_contain_text("skipped by you", timeout=30000)
    expect(chat).to_contain_text("tokens/s", timeout=60000)
    expect(chat.get_by_role("button", name="Skip", exact=True)).to_have_count(0)
    page.screenshot(path=str(ARTIFACTS / "tools-3-parallel.png"), full_page=True)
    chat.get_by_text("Tool call: get_weather", exact=True).click()  # open the call: arguments and result
    expect(chat).to_contain_text('"city": "Paris"')
    expect(chat.get_by_text("Result · 20 characters")).to_be_visible()
    chat.screenshot(path=str(ARTIFACTS / "tools-chat.png"), animations="disabled")

    # a reload keeps every call and result (the records travel in the messages), once the browser
    # has kept the finished reply
    page.wait_for_function("([q]) => { const saved = localStorage.getItem('qwen3-playground-chat') || '';"
                           " return saved.includes(q) && saved.includes('tokens/s'); }", arg=[PARALLEL_Q],
                           timeout=10000)
    page.reload()
    expect(chat).to_contain_text(PARALLEL_Q, timeout=30000)
    expect(chat.get_by_text("Tool call: get_weather", exact=True)).to_have_count(1)
    expect(chat.get_by_text("Tool call skipped: get_weather", exact=True)).to_have_count(1)
    expect(chat).to_contain_text("skipped by you")
    saved = json.loads(page.evaluate("() => localStorage.getItem('qwen3-playground-chat')"))
    records = [json.loads(m["metadata"]["id"].split(":", 2)[2]) for m in saved
               if str((m.get("metadata") or {}).get("id", "")).startswith("tool_result:")]
    # the two calls of the scripted round; what the model writes after a declined call is not
    # scripted (a later round may hold more calls)
    assert [(r["arguments"], r["error"]) for r in records[:2]] == [({"city": "Paris"}, None),
                                                                   ({"city": "Tokyo"}, "declined")]
    assert records[0]["result"] == WEATHER_REPORTS["Paris"]
    page.screenshot(path=str(ARTIFACTS / "tools-4-after-reload.png"), full_page=True)
    # what Regenerate / the next message sends back: the calls by the template's rules
    from core.chat import model_messages

    sent = model_messages(saved + [{"role": "user", "content": "thanks"}])
    assert [m["role"] for m in sent][:4] == ["user", "assistant", "tool", "tool"] and sent[-1]["role"] == "user"
    assert [c["function"]["arguments"] for c in sent[1]["tool_calls"]] == ['{"city": "Paris"}', '{"city": "Tokyo"}']
    assert sent[3]["content"] == "The user declined to run this tool call."


COMPARED = ("tiny-bf16", "tiny-gptq-int4", "tiny-gguf-q4_k_m")


def test_compare_three_formats_with_the_same_tools(browser, ui_server, outside, weather_http):
    """The ★ figure: does each quantization still call the tool correctly? The Compare tab takes the
    Chat tab's tools; each column runs its own loop; the table counts calls, valid calls, rounds."""
    from playwright.sync_api import expect
    from test_browser_compare import pick

    ARTIFACTS.mkdir(exist_ok=True)
    page = offline_context(browser, outside).new_page()
    page.set_viewport_size({"width": 1600, "height": 1100})
    page.goto(ui_server.url)
    expect(page.locator("#model-info")).to_contain_text("tiny-bf16", timeout=30000)
    connect_tools(page, config_for(weather_http.url))
    page.get_by_role("tab", name="Compare").click()
    for index, model in enumerate(COMPARED, 1):
        pick(page, index, model)
    page.locator("#compare-prompt textarea").fill(WEATHER_Q)
    page.locator("#compare-send").click()
    for index in range(1, len(COMPARED) + 1):
        column = page.locator(f"#compare-column-{index}")
        expect(column).to_contain_text("It is sunny and 21 degrees in Paris.", timeout=120000)
        expect(column).to_contain_text("get_weather")
    expect(page.locator("#compare-status")).to_contain_text("Done in", timeout=30000)
    expect(page.locator("#compare-tools-note")).to_contain_text("calls run automatically")
    table = page.locator("#compare-table")
    for header in ("tool calls", "valid calls", "rounds", "same final answer"):
        expect(table).to_contain_text(header)
    # every format: one call, valid, two rounds; the final answer matches the first entry's
    headers = [h.strip() for h in table.locator("thead th").all_inner_texts()]
    wanted = [headers.index(h) for h in ("tool calls", "valid calls", "rounds", "same final answer")]
    rows = [{int(cell.get_attribute("data-col")): cell.inner_text().strip()  # by column: empty cells kept
             for cell in row.get_by_role("gridcell").all()} for row in table.get_by_role("row").all()[1:]]
    assert [row[0] for row in rows] == [f"{index}. {model}" for index, model in enumerate(COMPARED, 1)]
    for index, row in enumerate(rows):
        assert [row[i] for i in wanted] == ["1", "1", "2", "yes" if index else "ref"], row
    page.screenshot(path=str(ARTIFACTS / "tools-5-compare.png"), full_page=True)
