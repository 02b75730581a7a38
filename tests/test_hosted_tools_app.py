"""Hosted mode's tools end to end, as a stranger meets them: the app runs in hosted mode with the
host's ``QWEN3_PLAYGROUND_MCP_CONFIG`` (the tests' weather server) and an allow-list; a
visitor's own MCP config and the code interpreter are refused on the named endpoints, the host's
tools work (API and a real Chromium), and the Tools panel offers no config box or code switch."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from chromium import ARTIFACTS, offline_context, requires_chromium
from tinymodels.script import WEATHER_Q

pytestmark = pytest.mark.timeout(300)

WEATHER_SERVER = str(Path(__file__).with_name("mcp_weather_server.py"))
SETTINGS = [None] * 6 + [7, None]  # every generation setting: the card's preset, seed 7, no thinking budget
VISITOR_CONFIG = json.dumps({"mcpServers": {"mine": {"command": "sh", "args": ["-c", "id"]}}})


@pytest.fixture(scope="module")
def hosted_app(tmp_path_factory):
    from backends.pool import ModelPool
    from conftest import launch_in_process
    from core.config import AppConfig
    from playground import Playground
    from ui.blocks import build_app

    folder = tmp_path_factory.mktemp("host")
    config_file = folder / "host-mcp.json"
    config_file.write_text(json.dumps({"mcpServers": {"weather": {"command": sys.executable,
                                                                  "args": [WEATHER_SERVER]}}}))
    config = AppConfig.from_env({"QWEN3_PLAYGROUND_HOSTED": "1", "QWEN3_PLAYGROUND_MCP_CONFIG": str(config_file),
                                 "QWEN3_PLAYGROUND_TOOLS": "get_weather,get_location"})
    playground = Playground(config, ModelPool(max_models=1))
    playground.start_up("tiny-bf16")
    demo = build_app(playground)
    url = launch_in_process(demo)
    try:
        yield url, demo, str(config_file)
    finally:
        demo.close()
        playground.close()


def chat_json(client, tools):
    return client.predict(WEATHER_Q, [], "", True, *SETTINGS, "tiny-bf16", 1.0, tools, api_name="/chat_json")


@pytest.mark.parametrize("tools, refused", [
    ({"mcp_config": VISITOR_CONFIG}, "does not let visitors add MCP servers or run code"),
    ({"code_interpreter": True}, "does not let visitors add MCP servers or run code"),
    ({"enabled": ["get_weather", "run_shell"]}, "does not offer a tool named 'run_shell'"),
])
def test_a_visitors_own_tools_are_refused_on_every_named_endpoint(hosted_app, tools, refused):
    from gradio_client import Client

    url, _, config_file = hosted_app
    client = Client(url, verbose=False)
    with pytest.raises(Exception, match=refused) as error:
        chat_json(client, tools)
    assert "it offers: get_weather, get_location" in str(error.value)
    assert config_file not in str(error.value) and WEATHER_SERVER not in str(error.value)
    history = client.predict(WEATHER_Q, [], "", True, *SETTINGS, "tiny-bf16", 1.0, tools, api_name="/chat")
    assert refused in history[-1]["content"] and history[-1]["metadata"]["id"].startswith("error:")


def test_the_hosts_tools_work_for_a_visitor(hosted_app):
    from gradio_client import Client

    url, _, _ = hosted_app
    client = Client(url, verbose=False)
    result = chat_json(client, {"enabled": ["get_weather", "get_location"]})
    assert result["answer"] == "It is sunny and 21 degrees in Paris."
    assert [(c["name"], c["arguments"], c["result"]) for c in result["tool_calls"]] == [
        ("get_weather", {"city": "Paris"}, "sunny and 21 degrees")]
    assert result["messages"][-2] == {"role": "tool", "tool_call_id": result["messages"][-3]["tool_calls"][0]["id"],
                                      "content": "sunny and 21 degrees"}


@requires_chromium
def test_the_hosted_tools_panel_lists_the_hosts_tools_only(hosted_app, browser, outside):
    from playwright.sync_api import expect

    url, _, config_file = hosted_app
    page = offline_context(browser, outside).new_page()
    page.goto(url)
    expect(page.locator("#model-info")).to_contain_text("tiny-bf16", timeout=30000)
    page.locator("#tools-panel").get_by_text("Tools", exact=True).first.click()
    expect(page.locator("#mcp-config")).to_have_count(0)  # no config box, no code interpreter
    expect(page.locator("#code-interpreter")).to_have_count(0)
    page.locator("#mcp-connect").click()
    expect(page.locator("#mcp-status")).to_contain_text("This playground offers 2 tool(s).", timeout=60000)
    expect(page.locator("#tool-list")).to_contain_text("get_weather")
    expect(page.locator("#tool-list")).not_to_contain_text("fail")
    page.locator("#message textarea").fill(WEATHER_Q)
    page.locator("#message textarea").press("Enter")
    chat = page.locator("#chatbot")
    expect(chat).to_contain_text("It is sunny and 21 degrees in Paris.", timeout=60000)
    expect(chat.get_by_text("Tool call: get_weather", exact=True)).to_have_count(1)
    assert config_file not in page.content() and WEATHER_SERVER not in page.content()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "tools-hosted.png"), full_page=True)
