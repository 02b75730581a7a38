"""MCP servers (playground/tools/mcp_servers.py, playground/tools/sources.py): config, start-up,
calls, shutdown, over stdio and streamable HTTP, and each server's status after a connect.

Servers: the tests' own weather server (tests/mcp_weather_server.py, with and without its error-path
tools, over stdio or served over HTTP from a thread of this process) and the cards' third-party
mcp-server-time, run with this Python.
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

from conftest import free_port
from processes import ProcessMarker

from core.tools import ToolFailure, ToolSource
from mcp_weather_server import PNG_1X1, load_script, serve_http
from playground.tools.mcp_servers import (McpConfigError, McpServers, McpServerError, ServerConfig,
                                          load_mcp_config, parse_mcp_config)
from playground.tools.sources import ServerStatus, ToolSources

pytestmark = pytest.mark.timeout(120)

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
    ({"mcpServers": {"t": {}}},
     "the MCP server 't' has no \"command\" (the program that starts it, e.g. \"uvx\" or \"python\") or \"url\""),
    ({"mcpServers": {"t": {"command": "x", "url": "http://h/mcp"}}},
     "the MCP server 't' has both a \"command\" and a \"url\""),
    ({"mcpServers": {"t": {"type": "sse", "url": "http://h/sse"}}},
     "the MCP server 't': \"type\" 'sse' is not supported"),
    ({"mcpServers": {"t": {"type": "stdio", "url": "http://h/mcp"}}},
     "the MCP server 't': a \"url\" server is reached over streamable HTTP, not \"type\": 'stdio'"),
    ({"mcpServers": {"t": {"type": "http", "command": "x"}}},
     "the MCP server 't': a \"command\" server runs over stdio, not \"type\": 'http'"),
    ({"mcpServers": {"t": {"type": "streamable-http"}}}, "the MCP server 't' has no \"url\""),
    ({"mcpServers": {"t": {"url": ""}}}, "the MCP server 't' has no \"url\""),
    ({"mcpServers": {"t": {"url": 8000}}}, "the MCP server 't' has no \"url\""),
    ({"mcpServers": {"t": {"url": "ftp://h/mcp"}}},
     "the MCP server 't': \"url\" must be an http:// or https:// address, not 'ftp://h/mcp'"),
    ({"mcpServers": {"t": {"url": "localhost:8000/mcp"}}}, '"url" must be an http:// or https:// address'),
    ({"mcpServers": {"t": {"url": "http:///mcp"}}}, '"url" must be an http:// or https:// address'),
    ({"mcpServers": {"t": {"url": "http://h:port/mcp"}}}, '"url" must be an http:// or https:// address'),
    ({"mcpServers": {"t": {"url": "http://h/mcp", "headers": ["A: b"]}}},
     "the MCP server 't': \"headers\" must map header names to strings"),
    ({"mcpServers": {"t": {"url": "http://h/mcp", "headers": {"A": 1}}}}, '"headers" must map header names'),
    ({"mcpServers": {"t": {"url": "http://h/mcp", "args": []}}},
     "the MCP server 't' has an unknown setting 'args' (known: url, headers, type)"),
    ({"mcpServers": {"t": {"command": "x", "argz": []}}}, "the MCP server 't' has an unknown setting 'argz'"),
    ({"mcpServers": {"": {"command": "x"}}}, "MCP server names must be non-empty strings"),
])
def test_config_errors_say_what_is_wrong(data, message):
    with pytest.raises(McpConfigError) as info:
        parse_mcp_config(data)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kind", [None, "streamable-http", "http"])
def test_url_servers_parse(kind):
    entry = {"url": "https://example.com:8443/mcp", "headers": {"Authorization": "Bearer x"}}
    configs = parse_mcp_config({"mcpServers": {"remote": entry if kind is None else {**entry, "type": kind},
                                               "local": {"type": "stdio", "command": "x"}}})
    assert configs["remote"] == ServerConfig(name="remote", url="https://example.com:8443/mcp",
                                             headers={"Authorization": "Bearer x"})
    assert configs["remote"].transport == "http" and configs["remote"].command is None
    assert configs["local"].transport == "stdio"
    assert parse_mcp_config({"mcpServers": {"r": {"url": "http://127.0.0.1:8000/mcp"}}})["r"].headers == {}


def test_a_server_config_is_a_command_or_a_url():
    with pytest.raises(McpConfigError, match=r"^the MCP server 'x' has both a command and a url \(give one\)$"):
        ServerConfig(name="x", command="y", url="http://h/mcp")
    with pytest.raises(McpConfigError, match="^the MCP server 'x' has neither a command nor a url$"):
        ServerConfig(name="x")


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
    marker = ProcessMarker(tmp_path / "slow-started")
    cancel = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(source.call, "slow", {"seconds": 60, "marker": str(marker)}, cancel, 60)
        marker.wait()  # the server is inside the tool now
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


# -- streamable HTTP ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def http_server():
    """The weather server with its test tools, over streamable HTTP from a thread of this process."""
    server = serve_http(test_tools=True)
    yield server
    server.close()


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}/mcp"  # nothing listens there


def test_http_server_tools_calls_and_headers(http_server):
    config = {"url": http_server.url, "type": "streamable-http", "headers": {"X-Playground-Test": "header value"}}
    with McpServers(parse_mcp_config({"mcpServers": {"remote": config}})) as servers:
        source = servers["remote"]
        assert source.name == "mcp:remote" and source.running
        specs = source.tools()
        assert json.dumps([spec.to_openai() for spec in specs[:2]]) == json.dumps(SCRIPT.WEATHER_TOOLS)
        for city, report in SCRIPT.WEATHER_REPORTS.items():
            assert report in source.call("get_weather", {"city": city}, NEVER, 10).text
        failed = source.call("fail", {"message": "it broke"}, NEVER, 10)
        assert failed.is_error and "it broke" in failed.text
    assert {request.get("x-playground-test") for request in http_server.requests} >= {"header value"}
    with pytest.raises(ToolFailure, match="^the MCP server 'remote' is closed$"):
        source.call("get_location", {}, NEVER, 10)


def test_http_timeout_and_cancel(http_server, tmp_path):
    with McpServers(parse_mcp_config({"mcpServers": {"remote": {"url": http_server.url}}})) as servers:
        source = servers["remote"]
        with pytest.raises(TimeoutError, match="the MCP server 'remote' did not answer the call to slow within 0.5 s"):
            source.call("slow", {"seconds": 30}, NEVER, 0.5)
        marker = ProcessMarker(tmp_path / "slow-started")
        cancel = threading.Event()
        with ThreadPoolExecutor(1) as pool:
            call = pool.submit(source.call, "slow", {"seconds": 60, "marker": str(marker)}, cancel, 60)
            marker.wait()  # the server is inside the tool now
            cancel.set()
            cancelled_at = time.monotonic()
            with pytest.raises(ToolFailure, match="^cancelled$"):
                call.result(timeout=10)
            assert time.monotonic() - cancelled_at < 1.0
        assert source.call("get_location", {}, NEVER, 10).text == SCRIPT.USER_CITY


def test_http_server_that_cannot_be_reached_or_is_not_mcp(http_server):
    url = closed_port_url()
    with pytest.raises(McpServerError) as info:
        McpServers(parse_mcp_config({"mcpServers": {"weather": WEATHER, "gone": {"url": url}}}))
    assert str(info.value) == (f"the MCP server 'gone' did not start: cannot connect to {url}: "
                               "All connection attempts failed")
    wrong_path = http_server.url.removesuffix("/mcp") + "/nope"
    with pytest.raises(McpServerError) as info:
        McpServers(parse_mcp_config({"mcpServers": {"wrong": {"url": wrong_path}}}))
    assert str(info.value) == f"the MCP server 'wrong' did not start: {wrong_path} answered HTTP 404 Not Found"


# -- each server on its own: ToolSources.connect ------------------------------------------------

def pids_of(before: set[int]) -> set[int]:
    return descendants() - before


def test_connect_reports_each_server_and_reuses_the_running_ones(http_server):
    before = descendants()
    threads = threading.active_count()
    gone = closed_port_url()
    configs = parse_mcp_config({"mcpServers": {
        "weather": WEATHER, "remote": {"url": http_server.url}, "broken": {"command": "false"}, "gone": {"url": gone}}})
    sources = ToolSources()
    try:
        statuses = sources.connect(configs)
        assert [(s.name, s.state, s.transport) for s in statuses] == [
            ("weather", "ready", "stdio"), ("remote", "ready", "http"), ("broken", "failed", "stdio"),
            ("gone", "failed", "http")]
        weather, remote, broken, unreachable = statuses
        assert isinstance(weather, ServerStatus) and weather.error is None
        assert [spec.name for spec in weather.tools] == ["get_weather", "get_location"]
        assert [spec.name for spec in remote.tools][:2] == ["get_weather", "get_location"]
        assert {spec.source for spec in remote.tools} == {"mcp:remote"}
        assert broken.tools == () and broken.error == ("the MCP server 'broken' did not start: it exited (or closed "
                                                       "its output) before completing the MCP handshake")
        assert unreachable.error == (f"the MCP server 'gone' did not start: cannot connect to {gone}: "
                                     "All connection attempts failed")
        server_pids, sessions = pids_of(before), http_server.sessions
        assert len(server_pids) == 1  # the weather server; the broken one is gone
        # mcp() raises for the broken server, naming it, and leaves the others running
        with pytest.raises(McpServerError, match="^the MCP server 'broken' did not start: it exited"):
            sources.mcp(configs)
        working = {name: configs[name] for name in ("weather", "remote")}
        first = sources.mcp(working)
        assert [source.name for source in first] == ["mcp:weather", "mcp:remote"]
        # connecting again starts nothing new: same process, same HTTP session, same sources
        assert [s.state for s in sources.connect(configs)] == ["ready", "ready", "failed", "failed"]
        assert sources.mcp(working) == first
        assert pids_of(before) == server_pids and http_server.sessions == sessions
        assert first[0].call("get_location", {}, NEVER, 10).text == SCRIPT.USER_CITY
        # one server's settings change: only that one starts anew, next to the old one
        changed = parse_mcp_config({"mcpServers": {"weather": {**WEATHER, "env": {"A": "b"}},
                                                   "remote": {"url": http_server.url}}})
        again = sources.mcp(changed)
        assert again[1] is first[1] and again[0] is not first[0]
        assert len(pids_of(before)) == 2 and http_server.sessions == sessions
    finally:
        sources.close()
    assert descendants() - before == set()
    assert threading.active_count() == threads
    with pytest.raises(ToolFailure, match="is closed"):
        first[1].call("get_location", {}, NEVER, 10)


def test_a_failed_server_is_tried_again_on_the_next_connect():
    port = free_port()
    configs = parse_mcp_config({"mcpServers": {"later": {"url": f"http://127.0.0.1:{port}/mcp"}}})
    sources = ToolSources()
    server = None
    try:
        [status] = sources.connect(configs)
        assert status.state == "failed" and "cannot connect to" in status.error
        server = serve_http(port=port)
        [status] = sources.connect(configs)
        assert status.state == "ready" and status.error is None
        assert [spec.name for spec in status.tools] == ["get_weather", "get_location"]
    finally:
        sources.close()
        if server is not None:
            server.close()


def test_a_server_found_gone_is_started_again():
    before = descendants()
    configs = parse_mcp_config({"mcpServers": {"test": TEST_TOOLS}})
    sources = ToolSources()
    try:
        [source] = sources.mcp(configs)
        first_pid = pids_of(before)
        with pytest.raises(ToolFailure, match="the MCP server 'test' stopped"):
            source.call("crash", {}, NEVER, 10)
        assert not source.running
        [status] = sources.connect(configs)
        assert status.state == "ready"
        [restarted] = sources.mcp(configs)
        assert restarted is not source and restarted.running
        assert pids_of(before) - first_pid and len(pids_of(before)) == 1
        assert restarted.call("get_location", {}, NEVER, 10).text == SCRIPT.USER_CITY
    finally:
        sources.close()
    assert descendants() - before == set()


def test_an_http_server_that_went_away_is_connected_again():
    server = serve_http()
    port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    configs = parse_mcp_config({"mcpServers": {"remote": {"url": server.url}}})
    sources = ToolSources()
    try:
        [source] = sources.mcp(configs)
        server.close()
        with pytest.raises(ToolFailure, match=f"^the MCP server 'remote' closed the connection \\({server.url}\\)$"):
            source.call("get_location", {}, NEVER, 10)
        assert not source.running
        [status] = sources.connect(configs)
        assert status.state == "failed" and "cannot connect to" in status.error
        server = serve_http(port=port)
        [status] = sources.connect(configs)
        assert status.state == "ready" and len(server.sessions) == 1
        assert sources.mcp(configs)[0].call("get_location", {}, NEVER, 10).text == SCRIPT.USER_CITY
    finally:
        sources.close()
        server.close()


def test_two_chats_connecting_at_once_start_each_server_once(http_server):
    before = descendants()
    sessions = set(http_server.sessions)
    configs = parse_mcp_config({"mcpServers": {"weather": WEATHER, "remote": {"url": http_server.url}}})
    sources = ToolSources()
    together = threading.Barrier(2)

    def connect() -> list[ServerStatus]:
        together.wait()
        return sources.connect(configs)

    try:
        with ThreadPoolExecutor(2) as pool:
            one, two = (future.result(timeout=60) for future in [pool.submit(connect), pool.submit(connect)])
        assert one == two and [s.state for s in one] == ["ready", "ready"]
        assert len(pids_of(before)) == 1 and len(http_server.sessions - sessions) == 1
    finally:
        sources.close()
    assert descendants() - before == set()


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
