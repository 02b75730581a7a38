"""The cards' second example server, mcp-server-fetch, over stdio through McpServers, offline.

A page and a robots.txt are served on 127.0.0.1 from a thread. The fetch server refuses private and
loopback addresses unless started with ``--allow-private-ips``, and reads robots.txt before every
page unless started with ``--ignore-robots-txt``. It runs with an empty ``PATH``: with ``node`` on
it, readabilipy (which turns the page into Markdown) runs ``npm install`` into its own package
directory on the first page, which needs the network; without, it extracts in Python.
"""
from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from playground.tools.mcp_servers import McpServers, parse_mcp_config

pytestmark = pytest.mark.timeout(120)

PAGE = """<!DOCTYPE html>
<html><head><title>Harbour guide</title></head>
<body><article>
<h1>Tide tables for Saint-Malo</h1>
<p>High tide is at 06:42 and the range is 11 metres, one of the largest in Europe.</p>
<ul><li>Low tide: 12:55</li><li>High tide: 19:03</li></ul>
</article></body></html>
"""
ROBOTS = "User-agent: *\nDisallow: /private\n"
NEVER = threading.Event()


class Site:
    """The page at /tides, robots.txt, and the User-Agent of every request, in order."""

    def __init__(self) -> None:
        self.user_agents: list[str] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                site.user_agents.append(self.headers.get("User-Agent", ""))
                body, kind = (ROBOTS, "text/plain") if self.path == "/robots.txt" else (PAGE, "text/html")
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", f"{kind}; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="fetch-test-site", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    served = Site()
    yield served
    served.close()


@pytest.fixture(scope="module")
def fetch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[McpServers]:
    """"local": may fetch loopback addresses; "default": as the cards start it."""
    no_node = str(tmp_path_factory.mktemp("empty-path"))
    env = {"PATH": no_node, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    config = {"mcpServers": {
        "local": {"command": sys.executable, "args": ["-m", "mcp_server_fetch", "--allow-private-ips"], "env": env},
        "default": {"command": sys.executable, "args": ["-m", "mcp_server_fetch"], "env": env}}}
    with McpServers(parse_mcp_config(config)) as servers:
        yield servers


def test_fetch_tool(fetch):
    [spec] = fetch["local"].tools()
    assert spec.name == "fetch" and spec.source == "mcp:local"
    assert spec.parameters["required"] == ["url"]
    assert set(spec.parameters["properties"]) == {"url", "max_length", "start_index", "raw"}


def test_a_page_arrives_as_markdown(fetch, site):
    url = f"{site.url}/tides"
    output = fetch["local"].call("fetch", {"url": url}, NEVER, 60)
    assert not output.is_error, output.text
    assert output.text.startswith(f"Contents of {url}:\n")
    assert "# Tide tables for Saint-Malo" in output.text
    assert "High tide is at 06:42 and the range is 11 metres" in output.text
    assert "* Low tide: 12:55\n* High tide: 19:03" in output.text
    assert "<p>" not in output.text and "<h1>" not in output.text
    # robots.txt first, then the page, as an "autonomous" agent
    assert site.user_agents[-2:] == [site.user_agents[-1]] * 2
    assert site.user_agents[-1].startswith("ModelContextProtocol/1.0 (Autonomous;")


def test_robots_txt_is_obeyed(fetch, site):
    output = fetch["local"].call("fetch", {"url": f"{site.url}/private/page"}, NEVER, 60)
    assert output.is_error
    assert "specifies that autonomous fetching of this page is not allowed" in output.text


def test_loopback_is_refused_by_default(fetch, site):
    output = fetch["default"].call("fetch", {"url": f"{site.url}/tides"}, NEVER, 60)
    assert output.is_error
    assert "127.0.0.1 resolves to 127.0.0.1, which is not a public address" in output.text
    assert "--allow-private-ips" in output.text
