"""Hosted mode's tool policy (playground/tools/policy.py, Playground.toolbox_for): visitors are
strangers. The host's tools come from the tests' MCP weather server over stdio (its error-path
tools included); fast cases use Python functions. Rate windows run on an injected clock."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from core.config import AppConfig
from core.errors import InvalidSettings, PlaygroundError
from core.tools import ToolCall, ToolCallError, new_call_id
from playground import Playground
from playground.tools.mcp_servers import load_mcp_config
from playground.tools.policy import UNAVAILABLE, HostedToolbox, RateLimiter, anonymous_id
from playground.tools.toolbox import FunctionTools, Toolbox

pytestmark = pytest.mark.timeout(120)

WEATHER_SERVER = str(Path(__file__).with_name("mcp_weather_server.py"))
SECRET = "sk-host-only-7d1f"
ALLOWED = ("get_weather", "get_location", "fail", "huge", "crash")  # in the server's order
REFUSED = "this hosted playground does not let visitors add MCP servers or run code; it offers: "
LOGGER = "qwen3_playground.tools"


def host_config(tmp_path: Path, *, server: dict | None = None) -> Path:
    server = server or {"command": sys.executable, "args": [WEATHER_SERVER, "--test-tools"],
                        "env": {"HOST_SECRET": SECRET}}
    path = tmp_path / "host-mcp.json"
    path.write_text(json.dumps({"mcpServers": {"weather": server}}))
    return path


def call(tool: str, **arguments) -> ToolCall:
    return ToolCall(new_call_id(), tool, arguments, "", 0)


def secrets_of(path: Path) -> list[str]:
    """What a visitor must never read: the host's command, paths and env values."""
    return [sys.executable, WEATHER_SERVER, str(path), str(path.parent), SECRET, "--test-tools", "HOST_SECRET"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """A hosted playground whose host's MCP config is the weather server (started once)."""
    path = host_config(tmp_path_factory.mktemp("host"))
    config = AppConfig.from_env({"QWEN3_PLAYGROUND_HOSTED": "1", "QWEN3_PLAYGROUND_MCP_CONFIG": str(path),
                                 "QWEN3_PLAYGROUND_TOOLS": ",".join(ALLOWED),
                                 "QWEN3_PLAYGROUND_MAX_MESSAGE_CHARS": "1000",
                                 "QWEN3_PLAYGROUND_MAX_TOOL_ROUNDS": "3"})
    playground = Playground(config, catalog=[], presets={})
    playground.path = path
    yield playground
    playground.close()


def refusal(excinfo: pytest.ExceptionInfo, path: Path) -> str:
    message = str(excinfo.value)
    assert not [s for s in secrets_of(path) if s in message], message
    return message


# -- configuration ------------------------------------------------------------------------------
def test_env_reads_the_hosts_tools(tmp_path):
    path = host_config(tmp_path)
    config = AppConfig.from_env({"QWEN3_PLAYGROUND_MCP_CONFIG": str(path),
                                 "QWEN3_PLAYGROUND_TOOLS": " get_weather, get_location ,,get_weather",
                                 "QWEN3_PLAYGROUND_TOOL_CALLS_PER_MINUTE": "5"})
    assert list(config.tool_servers) == ["weather"] and config.tool_servers["weather"].command == sys.executable
    assert config.allowed_tools == ("get_weather", "get_location")
    assert config.tool_calls_per_minute == 5 and not config.code_interpreter
    assert SECRET not in repr(config)  # a server's env stays out of logs of the config
    defaults = AppConfig.from_env({})
    assert defaults.tool_servers == {} and defaults.allowed_tools == () and defaults.tool_calls_per_minute == 20


@pytest.mark.parametrize("env, words", [
    ({"QWEN3_PLAYGROUND_TOOL_CALLS_PER_MINUTE": "fast"}, "QWEN3_PLAYGROUND_TOOL_CALLS_PER_MINUTE must be a whole"),
    ({"QWEN3_PLAYGROUND_TOOL_CALLS_PER_MINUTE": "2.5"}, "QWEN3_PLAYGROUND_TOOL_CALLS_PER_MINUTE must be a whole"),
    ({"QWEN3_PLAYGROUND_TOOL_CALLS_PER_MINUTE": "0"}, "QWEN3_PLAYGROUND_TOOL_CALLS_PER_MINUTE must be at least 1"),
    ({"QWEN3_PLAYGROUND_MAX_TOOL_ROUNDS": "100"}, "QWEN3_PLAYGROUND_MAX_TOOL_ROUNDS must be from 1 to 64"),
    ({"QWEN3_PLAYGROUND_MAX_MESSAGE_CHARS": "lots"}, "QWEN3_PLAYGROUND_MAX_MESSAGE_CHARS must be a whole"),
    ({"QWEN3_PLAYGROUND_CODE_INTERPRETER": "maybe"}, "QWEN3_PLAYGROUND_CODE_INTERPRETER must be 1 or 0"),
    ({"QWEN3_PLAYGROUND_CODE_INTERPRETER": "1", "SPACE_ID": "me/space"},
     "QWEN3_PLAYGROUND_CODE_INTERPRETER cannot be on in hosted mode"),
    ({"QWEN3_PLAYGROUND_MCP_CONFIG": "/nonexistent/host-mcp.json"},
     "QWEN3_PLAYGROUND_MCP_CONFIG: cannot read the MCP config /nonexistent/host-mcp.json"),
])
def test_env_errors_name_the_variable(env, words):
    with pytest.raises(InvalidSettings) as excinfo:
        AppConfig.from_env(env)
    assert words in str(excinfo.value)


def test_a_bad_mcp_config_file_stops_start_up(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"mcpServers": {"w": {"args": []}}}')
    with pytest.raises(InvalidSettings, match=r"QWEN3_PLAYGROUND_MCP_CONFIG: .*bad.json: .*has no \"command\""):
        AppConfig.from_env({"QWEN3_PLAYGROUND_MCP_CONFIG": str(path)})
    path.write_text("{not json")
    with pytest.raises(InvalidSettings, match="QWEN3_PLAYGROUND_MCP_CONFIG: .*not valid JSON"):
        AppConfig.from_env({"QWEN3_PLAYGROUND_MCP_CONFIG": str(path)})
    with pytest.raises(InvalidSettings, match="cannot be on in hosted mode"):  # --hosted on top of the env
        AppConfig.from_env({"QWEN3_PLAYGROUND_CODE_INTERPRETER": "1"}, hosted=True)


# -- what visitors may ask for ------------------------------------------------------------------
def test_the_hosts_tools_are_offered_through_the_allow_list(host):
    assert [spec.name for spec in host.offered_tools()] == list(ALLOWED)  # not getenv, slow, image
    toolbox = host.toolbox_for({"enabled": ["get_weather", "huge"], "max_rounds": 64})
    assert isinstance(toolbox, HostedToolbox)
    assert [spec.name for spec in toolbox.specs()] == ["get_weather", "huge"]
    assert toolbox.max_rounds == 3  # capped at the host's maximum
    result = toolbox.run(call("get_weather", city="Paris"), 1)
    assert result.error is None and result.content  # the server's own report
    # nothing picked: no tools (hosted mode never adds any by itself)
    assert host.toolbox_for(None) is None and host.toolbox_for({"enabled": []}) is None
    assert host.toolbox_for({}) is None


@pytest.mark.parametrize("selection", [
    {"mcp_config": {"mcpServers": {"mine": {"command": "sh", "args": ["-c", "cat /etc/passwd"]}}}},
    {"mcp_config": {"mcpServers": {"mine": {"command": "sh"}}}, "enabled": ["get_weather"]},
    {"code_interpreter": True},
    {"code_interpreter": True, "enabled": ["get_weather"]},
])
def test_visitors_cannot_add_servers_or_run_code(host, selection):
    with pytest.raises(InvalidSettings) as excinfo:
        host.toolbox_for(selection, host.visitor_id("visitor-1"))
    assert refusal(excinfo, host.path) == REFUSED + ", ".join(ALLOWED)
    with pytest.raises(InvalidSettings, match="does not let visitors add MCP servers"):
        host.toolbox(code_interpreter=True)  # the CLI's way in, refused the same


@pytest.mark.parametrize("name", ["getenv", "slow", "no_such_tool", "x" * 500])
def test_a_tool_outside_the_allow_list_is_refused_like_a_missing_one(host, name):
    """The server has getenv and slow, but they are not offered: the visitor cannot tell."""
    with pytest.raises(InvalidSettings) as excinfo:
        host.toolbox_for({"enabled": ["get_weather", name]})
    message = refusal(excinfo, host.path)
    shown = name if len(name) <= 64 else name[:64] + "..."
    assert message == (f"this hosted playground does not offer a tool named {shown!r}; it offers: "
                       + ", ".join(ALLOWED))


def test_a_call_to_a_tool_not_enabled_does_not_run(host):
    toolbox = host.toolbox_for({"enabled": ["get_location"]})
    result = toolbox.run(call("getenv", name="HOST_SECRET"), 1)
    assert result.error == "unknown_tool" and SECRET not in result.content and "getenv" not in str(toolbox.specs())


# -- limits -------------------------------------------------------------------------------------
def test_calls_over_the_rate_are_refused_per_visitor(host, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(host, "tool_calls", RateLimiter(2, clock=clock))
    alice, bob = host.visitor_id("alice-session"), host.visitor_id("bob-session")
    mine = host.toolbox_for({"enabled": ["get_location"]}, alice)
    assert [mine.run(call("get_location"), 1).error for _ in range(2)] == [None, None]
    clock.now += 20
    over = mine.run(call("get_location"), 2)
    assert over.error == "rate_limited" and "wait 40 s" in over.content and "at most 2 per minute" in over.content
    # another visitor, and a new reply of the same visitor, share nothing but the limiter
    theirs = host.toolbox_for({"enabled": ["get_location"]}, bob)
    assert theirs.run(call("get_location"), 1).error is None
    assert host.toolbox_for({"enabled": ["get_location"]}, alice).run(call("get_location"), 1).error == "rate_limited"
    clock.now += 40.5  # the first two calls left the window
    assert mine.run(call("get_location"), 3).error is None


def test_the_rate_window_slides_and_is_thread_safe():
    from concurrent.futures import ThreadPoolExecutor

    clock = Clock()
    limiter = RateLimiter(50, clock=clock)
    with ThreadPoolExecutor(8) as pool:
        waits = list(pool.map(lambda _: limiter.take("v-0000000000"), range(200)))
    assert waits.count(0.0) == 50 and all(w == 60.0 for w in waits if w)
    clock.now += 59.9
    assert limiter.take("v-0000000000") == pytest.approx(0.1)
    clock.now += 0.1
    assert limiter.take("v-0000000000") == 0.0
    with pytest.raises(ValueError):
        RateLimiter(0)


def test_results_over_the_size_cap_are_cut(host):
    toolbox = host.toolbox_for({"enabled": ["huge"]})
    result = toolbox.run(call("huge", chars=50_000), 1)
    assert result.truncated and result.error is None
    assert len(result.content) <= 1000 and result.content.startswith("x" * 800) and "truncated" in result.content


def test_one_replys_results_share_a_budget():
    tools = FunctionTools("fn", [({"type": "function", "function": {
        "name": "text", "parameters": {"type": "object", "properties": {"n": {"type": "integer"}}}}},
        lambda n: "y" * n)])
    toolbox = HostedToolbox(Toolbox([tools]), visitor="v-0123456789", limiter=RateLimiter(100), result_chars=700,
                            reply_chars=1000)
    first = toolbox.run(call("text", n=5000), 1)
    assert first.truncated and len(first.content) == 700 and first.content.endswith("limit of 700 characters]")
    assert toolbox.run(call("text", n=200), 1).content == "y" * 200  # 900 of 1,000 used
    withheld = toolbox.run(call("text", n=200), 2)
    assert withheld.truncated and "yy" not in withheld.content
    assert "result withheld: 200 characters" in withheld.content and "1,000 characters in all" in withheld.content
    assert toolbox.run(call("text", n=100), 2).content == "y" * 100  # what still fits passes
    invalid = toolbox.run(ToolCallError("<tool_call>{</tool_call>", "not JSON", 0, new_call_id()), 2)
    assert invalid.error == "invalid_call"  # counted in no rate, refused by the toolbox as always


# -- the log and the visitor's id ---------------------------------------------------------------
def test_every_call_is_logged_without_arguments_or_results(host, caplog):
    raw = "203.0.113.7"
    toolbox = host.toolbox_for({"enabled": ["get_weather", "fail"]}, raw)  # a raw address: made anonymous
    visitor = host.visitor_id(raw)
    assert toolbox.visitor == visitor and raw not in visitor
    with caplog.at_level(logging.INFO, logger=LOGGER):
        ok = toolbox.run(call("get_weather", city="Paris"), 1)
        failed = toolbox.run(call("fail", message="argument-text-4242"), 2)
        forged = toolbox.run(call("evil\nvisitor=v-0000000000 outcome=ok"), 2)
    records = [r for r in caplog.records if r.name == LOGGER and r.getMessage().startswith("tool call")]
    assert [(r.visitor, r.tool, r.round, r.outcome) for r in records] == [
        (visitor, "get_weather", 1, "ok"), (visitor, "fail", 2, "tool_error"), (visitor, "(not offered)", 2,
                                                                                 "unknown_tool")]
    assert records[0].result_chars == len(ok.content) and records[0].duration_s >= 0
    assert "argument-text-4242" in failed.content  # the tool's own error goes back to the model...
    for record in records:  # ...but neither arguments nor results reach the log
        text = record.getMessage() + repr(vars(record))
        assert "Paris" not in text and "argument-text-4242" not in text and ok.content not in text
        assert raw not in text and "\n" not in record.getMessage()
    assert forged.error == "unknown_tool"


def test_anonymous_ids():
    salt = b"s" * 32
    first = anonymous_id("session-abc", salt)
    assert first == anonymous_id("session-abc", salt) and first.startswith("v-") and len(first) == 12
    assert first != anonymous_id("session-abd", salt) and first != anonymous_id("session-abc", b"t" * 32)
    one, two = Playground(AppConfig(), catalog=[], presets={}), Playground(AppConfig(), catalog=[], presets={})
    assert one.visitor_id("x") == one.visitor_id("x") != two.visitor_id("x")  # a salt per process (instance)


# -- errors never show the host's configuration -------------------------------------------------
def test_a_tool_server_that_dies_is_summarised(tmp_path, caplog):
    path = host_config(tmp_path)
    config = AppConfig(hosted=True, tool_servers=load_mcp_config(path), allowed_tools=ALLOWED)
    playground = Playground(config, catalog=[], presets={})
    try:
        toolbox = playground.toolbox_for({"enabled": ["crash", "get_location"]}, playground.visitor_id("v"))
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            crashed = toolbox.run(call("crash"), 1)
            after = toolbox.run(call("get_location"), 1)
        for result in (crashed, after):
            assert result.error == "tool_error" and UNAVAILABLE in result.content
            assert "crashing on purpose" not in result.content and "weather" not in result.content
            assert not [s for s in secrets_of(path) if s in result.content]
        assert "crashing on purpose" in caplog.text  # the details are the host's, in its log
    finally:
        playground.close()


def test_a_server_that_does_not_start_is_summarised(tmp_path, caplog):
    server = {"command": sys.executable, "args": ["-c", f"import sys; sys.exit('{tmp_path}/private/boot.py')"],
              "env": {"TOKEN": SECRET}}
    path = host_config(tmp_path, server=server)
    playground = Playground(AppConfig(hosted=True, tool_servers=load_mcp_config(path)), catalog=[], presets={})
    try:
        with caplog.at_level(logging.ERROR, logger=LOGGER):
            for attempt in (lambda: playground.offered_tools(), lambda: playground.toolbox_for({"enabled": ["x"]})):
                with pytest.raises(PlaygroundError) as excinfo:
                    attempt()
                assert str(excinfo.value) == UNAVAILABLE
            with pytest.raises(InvalidSettings) as excinfo:
                playground.toolbox_for({"code_interpreter": True})
        assert str(excinfo.value).endswith("; its own tools are unavailable right now")
        assert f"{tmp_path}/private/boot.py" in caplog.text  # the host reads why in the log
    finally:
        playground.close()


# -- outside hosted mode ------------------------------------------------------------------------
def test_outside_hosted_mode_the_hosts_tools_come_with_the_users_own(tmp_path):
    path = host_config(tmp_path, server={"command": sys.executable, "args": [WEATHER_SERVER]})
    config = AppConfig(tool_servers=load_mcp_config(path), allowed_tools=("get_weather",), code_interpreter=True)
    playground = Playground(config, catalog=[], presets={})
    try:
        # the allow-list narrows the servers' tools; the code interpreter has its own variable
        assert [spec.name for spec in playground.offered_tools()] == ["get_weather", "code_interpreter"]
        assert playground.toolbox_for(None) is None  # nothing picked: no tools
        toolbox = playground.toolbox_for({"code_interpreter": True, "max_rounds": 20})
        assert isinstance(toolbox, Toolbox) and toolbox.max_rounds == 20  # a local user's own choice
        assert [spec.name for spec in toolbox.specs()] == ["get_weather", "code_interpreter"]
        assert [s.name for s in playground.toolbox_for({"enabled": ["get_weather"]}).specs()] == ["get_weather"]
        with pytest.raises(PlaygroundError, match="no tool is named 'get_location'"):
            playground.toolbox_for({"enabled": ["get_location"]})  # not on the host's allow-list
    finally:
        playground.close()
