"""MCP servers over stdio (playground/tools/mcp_servers.py): config, start-up, calls, shutdown.

Servers: the tests' own weather server (tests/mcp_weather_server.py, with and without its error-path
tools) and the cards' third-party mcp-server-time, run with this Python.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import wait_for_file

from core.tools import ToolFailure, ToolSource
from mcp_weather_server import PNG_1X1, load_script
from playground.tools.mcp_servers import (McpConfigError, McpServers, McpServerError, ServerConfig,
                                          load_mcp_config, parse_mcp_config)

SCRIPT = load_script()  # tinymodels/script.py, without importing torch
WEATHER_SERVER = str(Path(__file__).with_name("mcp_weather_server.py"))
WEATHER = {"command": sys.executable, "args": [WEATHER_SERVER]}
TEST_TOOLS = {"command": sys.executable, "args": [WEATHER_SERVER, "--test-tools"],
              "env": {"MCP_TEST_CONFIG_VAR": "from the config"}}
TIME = {"command": sys.executable, "args": ["-m", "mcp_server_time", "--local-timezone=Asia/Shanghai"]}
NEVER = threading.Event()  # a cancel event nobody sets


def descendants() -> set[int]:
    """PIDs of this process's living descendants (zombies count: a child not reaped is a leak)."""
    try:
        import psutil
    except ImportError:  # /proc: follow the parent links
        parents = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
        found, frontier = set(), {os.getpid()}
        while frontier:
            frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
            found |= frontier
        return found
    return {child.pid for child in psutil.Process().children(recursive=True)}


@pytest.fixture(scope="module")
def servers():
    """weather (plain), test (weather + error-path tools) and time, started together once."""
    os.environ["MCP_TEST_PARENT_VAR"] = "from the parent"
    try:
        servers = McpServers(parse_mcp_config({"mcpServers": {"weather": WEATHER, "test": TEST_TOOLS, "time": TIME}}))
    finally:
        del os.environ["MCP_TEST_PARENT_VAR"]
    yield servers
    servers.close()


# -- configuration ----------------------------------------------------------------------------

CARD_CONFIG = {"mcpServers": {
    "time": {"command": "uvx", "args": ["mcp-server-time", "--local-timezone=Asia/Shanghai"]},
    "fetch": {"command": "uvx", "args": ["mcp-server-fetch"], "env": {"A": "b"}}}}


def test_the_cards_config_parses():
    configs = parse_mcp_config(json.dumps(CARD_CONFIG))
    assert list(configs) == ["time", "fetch"]
    assert configs["time"] == ServerConfig(name="time", command="uvx",
                                           args=("mcp-server-time", "--local-timezone=Asia/Shanghai"))
    assert configs["fetch"].env == {"A": "b"}
    assert parse_mcp_config(CARD_CONFIG) == configs


@pytest.mark.parametrize("data, message", [
    ("{not json", "the MCP config is not valid JSON: Expecting property name"),
    ("[]", 'the MCP config has no "mcpServers"'),
    ({"servers": {}}, 'the MCP config has no "mcpServers"'),
    ({"mcpServers": []}, '"mcpServers" must be an object mapping server names'),
    ({"mcpServers": {"t": "uvx"}}, "the MCP server 't' must be an object"),
    ({"mcpServers": {"t": {"args": ["x"]}}}, "the MCP server 't' has no \"command\""),
    ({"mcpServers": {"t": {"command": ""}}}, "the MCP server 't' has no \"command\""),
    ({"mcpServers": {"t": {"command": "x", "args": "a b"}}}, "the MCP server 't': \"args\" must be a list of strings"),
    ({"mcpServers": {"t": {"command": "x", "args": ["a", 1]}}}, '"args" must be a list of strings'),
    ({"mcpServers": {"t": {"command": "x", "env": {"A": 1}}}},
     "the MCP server 't': \"env\" must map variable names to strings"),
    ({"mcpServers": {"t": {"command": "x", "env": ["A=1"]}}}, '"env" must map variable names to strings'),
    ({"mcpServers": {"t": {"url": "http://localhost:8000/mcp"}}}, "streamable HTTP servers are not supported yet"),
    ({"mcpServers": {"t": {"type": "sse", "command": "x"}}}, "streamable HTTP servers are not supported yet"),
    ({"mcpServers": {"t": {"command": "x", "argz": []}}}, "the MCP server 't' has an unknown setting 'argz'"),
    ({"mcpServers": {"": {"command": "x"}}}, "MCP server names must be non-empty strings"),
])
def test_config_errors_say_what_is_wrong(data, message):
    with pytest.raises(McpConfigError) as info:
        parse_mcp_config(data)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_load_config_names_the_file(tmp_path):
    good = tmp_path / "mcp.json"
    good.write_text(json.dumps(CARD_CONFIG))
    assert list(load_mcp_config(good)) == ["time", "fetch"]
    bad = tmp_path / "bad.json"
    bad.write_text('{"mcpServers": {"t": {}}}')
    with pytest.raises(McpConfigError, match=f"^{bad}: the MCP server 't' has no"):
        load_mcp_config(bad)
    with pytest.raises(McpConfigError, match=f"cannot read the MCP config {tmp_path / 'missing.json'}: No such file"):
        load_mcp_config(tmp_path / "missing.json")


# -- the weather server ------------------------------------------------------------------------

def test_weather_server_lists_exactly_the_trained_schemas(servers):
    source = servers["weather"]
    assert isinstance(source, ToolSource) and source.name == "mcp:weather"
    specs = source.tools()
    assert {spec.source for spec in specs} == {"mcp:weather"}
    # json.dumps: key order counts too, since the chat template renders the schemas as they are
    assert json.dumps([spec.to_openai() for spec in specs]) == json.dumps(SCRIPT.WEATHER_TOOLS)
    assert [spec.name for spec in servers["test"].tools()][:2] == ["get_weather", "get_location"]
    assert [source.name for source in servers.sources] == ["mcp:weather", "mcp:test", "mcp:time"]


def test_weather_calls(servers):
    source = servers["weather"]
    for city, report in SCRIPT.WEATHER_REPORTS.items():
        output = source.call("get_weather", {"city": city}, NEVER, 10)
        assert report in output.text and not output.is_error
    assert source.call("get_location", {}, NEVER, 10).text == SCRIPT.USER_CITY
    unknown = source.call("get_weather", {"city": "Atlantis"}, NEVER, 10)
    assert unknown.is_error and unknown.text == "no weather for Atlantis"


def test_error_results_and_content_kinds(servers):
    source = servers["test"]
    failed = source.call("fail", {"message": "it broke"}, NEVER, 10)
    assert failed.is_error and "it broke" in failed.text
    image = source.call("image", {}, NEVER, 10)
    assert image.text == f"a dot:\n[image/png content, {len(PNG_1X1)} bytes]" and not image.is_error
    assert len(source.call("huge", {"chars": 200_000}, NEVER, 10).text) == 200_000


def test_environment_is_the_parents_plus_the_configs(servers):
    source = servers["test"]
    assert source.call("getenv", {"name": "MCP_TEST_PARENT_VAR"}, NEVER, 10).text == "from the parent"
    assert source.call("getenv", {"name": "MCP_TEST_CONFIG_VAR"}, NEVER, 10).text == "from the config"


def test_timeout_then_the_server_still_answers(servers):
    source = servers["test"]
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="the MCP server 'test' did not answer the call to slow within 0.5 s"):
        source.call("slow", {"seconds": 30}, NEVER, 0.5)
    assert time.monotonic() - started < 2.0
    assert source.call("get_location", {}, NEVER, 10).text == SCRIPT.USER_CITY


def test_cancel_during_a_call_returns_at_once(servers, tmp_path):
    source = servers["test"]
    marker = tmp_path / "slow-started"
    cancel = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(source.call, "slow", {"seconds": 60, "marker": str(marker)}, cancel, 60)
        wait_for_file(marker)  # the server is inside the tool now
        cancel.set()
        cancelled_at = time.monotonic()
        with pytest.raises(ToolFailure, match="^cancelled$"):
            call.result(timeout=10)
        assert time.monotonic() - cancelled_at < 1.0
    with pytest.raises(ToolFailure, match="^cancelled$"):  # already set: no call at all
        source.call("get_location", {}, cancel, 10)
    assert source.call("get_location", {}, NEVER, 10).text == SCRIPT.USER_CITY


def test_unknown_tool_of_a_third_party_server_is_a_failure(servers):
    with pytest.raises(ToolFailure, match="the MCP server 'time' answered with an error: Unknown tool: nope"):
        servers["time"].call("nope", {}, NEVER, 10)


# -- the cards' third-party server ------------------------------------------------------------

def test_mcp_server_time(servers):
    source = servers["time"]
    assert json.dumps([spec.to_openai() for spec in source.tools()]) == json.dumps(SCRIPT.TIME_TOOLS)
    output = source.call("convert_time", {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"},
                         NEVER, 10)
    assert "21:00" in output.text and not output.is_error


# -- start-up failures and shutdown -----------------------------------------------------------

@pytest.mark.parametrize("bad, start_timeout, why", [
    ({"command": "no-such-mcp-server-command"}, 30, "the command 'no-such-mcp-server-command' was not found on PATH"),
    ({"command": "/no/such/dir/server"}, 30, "the command '/no/such/dir/server' was not found"),
    ({"command": sys.executable, "args": ["-c", "import sys; print('no config here', file=sys.stderr); sys.exit(3)"]},
     30, "it exited (or closed its output) before completing the MCP handshake; its stderr ends with: no config here"),
    # reads stdin and never answers; it exits when its stdin closes, so the shutdown is quick
    ({"command": sys.executable, "args": ["-c", "import sys; sys.stdin.read()"]},
     1, "it did not complete the MCP handshake within 1 s"),
], ids=["not-on-path", "no-such-file", "exits-at-once", "never-answers"])
def test_a_server_that_does_not_start_is_named_and_nothing_is_left(bad, start_timeout, why):
    before = descendants()
    threads = threading.active_count()
    configs = parse_mcp_config({"mcpServers": {"weather": WEATHER, "bad": bad}})
    with pytest.raises(McpServerError) as info:
        McpServers(configs, start_timeout=start_timeout)
    assert str(info.value) == f"the MCP server 'bad' did not start: {why}"
    assert descendants() - before == set()  # the weather server that did start was stopped
    assert threading.active_count() == threads


def test_missing_uvx_suggests_python(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no uvx here, even on a machine that has it
    with pytest.raises(McpServerError) as info:
        McpServers(parse_mcp_config(CARD_CONFIG))
    message = str(info.value)
    assert message.startswith("the MCP server 'time' did not start: 'uvx' is not on PATH")
    assert '"command": "python", "args": ["-m", "mcp_server_time", "--local-timezone=Asia/Shanghai"]' in message


def test_a_server_that_dies_mid_call_and_close(tmp_path):
    before = descendants()
    threads = threading.active_count()
    servers = McpServers(parse_mcp_config({"mcpServers": {"test": TEST_TOOLS, "weather": WEATHER}}))
    assert len(descendants() - before) == 2
    test, weather = servers["test"], servers["weather"]
    with pytest.raises(ToolFailure) as info:
        test.call("crash", {}, NEVER, 10)
    assert str(info.value) == ("the MCP server 'test' stopped (its process exited or closed the connection); its "
                               "stderr ends with: weather server: crashing on purpose")
    with pytest.raises(ToolFailure, match="the MCP server 'test' stopped"):
        test.call("get_location", {}, NEVER, 10)
    assert weather.call("get_location", {}, NEVER, 10).text == SCRIPT.USER_CITY  # the other one is fine
    weather.close()  # one source: that server only
    with pytest.raises(ToolFailure, match="^the MCP server 'weather' is closed$"):
        weather.call("get_location", {}, NEVER, 10)
    servers.close()
    servers.close()  # idempotent
    assert descendants() - before == set()
    assert threading.active_count() == threads


def test_close_at_interpreter_exit(tmp_path):
    """A program that never calls close() leaves no server behind when it exits."""
    pid_file = tmp_path / "pid"
    config = json.dumps({"mcpServers": {"weather": WEATHER}})
    program = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent.parent)!r})\n"
               "import os, threading\n"
               "from playground.tools.mcp_servers import McpServers, parse_mcp_config\n"
               f"servers = McpServers(parse_mcp_config({config!r}))\n"
               "print(servers['weather'].call('get_location', {}, threading.Event(), 10).text)\n"
               "children = [int(p) for p in os.listdir('/proc') if p.isdigit()\n"
               "            and open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split()[1] == str(os.getpid())]\n"
               f"open({str(pid_file)!r}, 'w').write(' '.join(map(str, children)))\n")
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == SCRIPT.USER_CITY and done.stderr == ""
    pids = [int(pid) for pid in pid_file.read_text().split()]
    assert pids  # the server was its child
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or " Z " in Path(f"/proc/{pid}/stat").read_text()
