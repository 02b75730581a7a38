"""The tests' own MCP server over stdio: the weather tools the tiny model was trained on.

It serves exactly ``tinymodels.script.WEATHER_TOOLS`` (name, description, and the parameters as
``inputSchema``, key order included: see ``verbatim_schemas``) with the SDK's low-level server and
answers from ``WEATHER_REPORTS`` / ``USER_CITY``. With ``--test-tools`` it also serves tools for
error paths:

- ``fail(message)``: the tool raises; the answer is an ``isError`` result;
- ``slow(seconds, marker)``: writes its PID to ``marker`` (when given: a file, or a test's
  ``processes.ProcessMarker`` pipe), then sleeps;
- ``huge(chars)``: returns ``chars`` characters of text;
- ``image()``: returns a text part and a small PNG image part;
- ``crash(marker)``: creates ``marker`` (when given), then the process says so on stderr and exits
  at once (code 7);
- ``getenv(name)``: the value of an environment variable in the server ("<unset>" if unset).

Run: ``python tests/mcp_weather_server.py [--test-tools] [--http PORT]``. Over streamable HTTP
(``--http``, or :func:`serve_http` in a thread of the tests' own process) it serves the same tools
at ``http://127.0.0.1:PORT/mcp``.
"""
from __future__ import annotations

import argparse
import base64
import importlib.util
import os
import socket
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import anyio  # noqa: E402
import mcp.types as types  # noqa: E402
from mcp.server.lowlevel import Server  # noqa: E402
from mcp.server.stdio import stdio_server  # noqa: E402


def load_script() -> Any:
    """``tinymodels/script.py`` loaded by path: importing the ``tinymodels`` package would import
    torch (seconds), and the server must start fast."""
    name = "_tinymodels_script"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "tinymodels" / "script.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the file runs
        spec.loader.exec_module(module)
    return sys.modules[name]


_script = load_script()
WEATHER_TOOLS, WEATHER_REPORTS, USER_CITY = _script.WEATHER_TOOLS, _script.WEATHER_REPORTS, _script.USER_CITY

# A 1x1 transparent PNG.
PNG_1X1 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")

TEST_TOOLS: list[dict[str, Any]] = [
    {"name": "fail", "description": "Always fails.",
     "inputSchema": {"type": "object", "properties": {"message": {"type": "string"}}}},
    {"name": "slow", "description": "Sleeps, after creating the marker file.",
     "inputSchema": {"type": "object", "properties": {"seconds": {"type": "number"}, "marker": {"type": "string"}},
                     "required": ["seconds"]}},
    {"name": "huge", "description": "Returns many characters.",
     "inputSchema": {"type": "object", "properties": {"chars": {"type": "integer"}}, "required": ["chars"]}},
    {"name": "image", "description": "Returns a text part and an image part.",
     "inputSchema": {"type": "object", "properties": {}}},
    {"name": "crash", "description": "The server process exits during the call.",
     "inputSchema": {"type": "object", "properties": {"marker": {"type": "string"}}}},
    {"name": "getenv", "description": "An environment variable of the server.",
     "inputSchema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}},
]


def tool_list(test_tools: bool) -> list[types.Tool]:
    tools = [types.Tool.model_validate({"name": t["function"]["name"], "description": t["function"]["description"],
                                        "inputSchema": t["function"]["parameters"]}) for t in WEATHER_TOOLS]
    if test_tools:
        tools += [types.Tool.model_validate(t) for t in TEST_TOOLS]
    return tools


def _text(text: str, is_error: bool = False) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=is_error)


def _touch(marker: str | None) -> None:
    if marker:
        Path(marker).write_text(str(os.getpid()))


async def answer(name: str, args: dict[str, Any], test_tools: bool) -> types.CallToolResult:
    if name == "get_weather":
        city = args.get("city")
        if city in WEATHER_REPORTS:
            return _text(WEATHER_REPORTS[city])  # verbatim: the tiny models are trained on these results
        return _text(f"no weather for {city}", is_error=True)
    if name == "get_location":
        return _text(USER_CITY)
    if test_tools:
        if name == "fail":
            raise RuntimeError(args.get("message") or "the fail tool failed")
        if name == "slow":
            _touch(args.get("marker"))
            await anyio.sleep(float(args["seconds"]))
            return _text(f"slept {args['seconds']} s")
        if name == "huge":
            return _text("x" * int(args["chars"]))
        if name == "image":
            return types.CallToolResult(content=[
                types.TextContent(type="text", text="a dot:"),
                types.ImageContent(type="image", data=base64.b64encode(PNG_1X1).decode(), mime_type="image/png")])
        if name == "crash":
            _touch(args.get("marker"))
            print("weather server: crashing on purpose", file=sys.stderr, flush=True)
            os._exit(7)
        if name == "getenv":
            return _text(os.environ.get(args["name"], "<unset>"))
    raise ValueError(f"unknown tool {name!r}")


def build_server(test_tools: bool) -> Server:
    async def on_list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tool_list(test_tools))

    async def on_call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        try:
            return await answer(params.name, params.arguments or {}, test_tools)
        except Exception as err:  # a tool's failure is reported in the result, as the spec asks
            return _text(f"{type(err).__name__}: {err}", is_error=True)

    server = Server("weather", version="1.0", on_list_tools=on_list_tools, on_call_tool=on_call_tool)
    schemas = {tool.name: tool.input_schema for tool in tool_list(test_tools)}

    async def verbatim_schemas(ctx: Any, call_next: Any) -> Any:
        # The SDK re-shapes every result through the protocol's models, which puts an
        # inputSchema's keys in the model's order ($schema, properties, required, type, others):
        # put each schema back as written, key order included (docs/library-notes.md, "mcp 2.3").
        result = await call_next(ctx)
        if ctx.method == "tools/list" and isinstance(result, dict):
            result = {**result, "tools": [{**tool, "inputSchema": schemas[tool["name"]]} for tool in result["tools"]]}
        return result

    server.middleware.append(verbatim_schemas)
    return server


async def main(test_tools: bool) -> None:
    server = build_server(test_tools)
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


# -- streamable HTTP ------------------------------------------------------------------------------

@dataclass
class HttpServer:
    """The server running over streamable HTTP in a thread of this process (see :func:`serve_http`).

    ``requests`` holds the headers of every HTTP request it received (names lower-cased), in order.
    """

    url: str
    uvicorn_server: Any
    thread: threading.Thread
    requests: list[dict[str, str]] = field(default_factory=list)

    @property
    def sessions(self) -> set[str]:
        """The MCP sessions clients opened (one per connecting client)."""
        return {headers["mcp-session-id"] for headers in self.requests if "mcp-session-id" in headers}

    def close(self) -> None:
        server = self.uvicorn_server
        # A client's open session (its GET event stream) would hold a graceful shutdown forever;
        # cutting it short makes uvicorn log the cancelled requests.
        server.force_exit = bool(server.server_state.connections)
        server.should_exit = True
        self.thread.join(10)
        assert not self.thread.is_alive(), "the HTTP MCP server did not stop"


def http_app(test_tools: bool, record: list[dict[str, str]] | None = None) -> Any:
    """The ASGI app serving the tools at ``/mcp``; each request's headers go to ``record``."""
    app = build_server(test_tools).streamable_http_app()
    if record is None:
        return app

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            record.append({k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]})
        await app(scope, receive, send)

    return recording


def serve_http(test_tools: bool = False, port: int = 0) -> HttpServer:
    """Serve over streamable HTTP on 127.0.0.1:``port`` (0: a free one) from a daemon thread;
    returns at once.

    The socket listens before this returns, so a client may connect at once (it waits in the
    backlog until uvicorn accepts it). Stop it with ``close()``.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)
    requests: list[dict[str, str]] = []
    server = uvicorn.Server(uvicorn.Config(http_app(test_tools, requests), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="mcp-weather-http", daemon=True)
    thread.start()
    return HttpServer(url=f"http://127.0.0.1:{sock.getsockname()[1]}/mcp", uvicorn_server=server, thread=thread,
                      requests=requests)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test-tools", action="store_true", help="also serve the error-path test tools")
    parser.add_argument("--http", type=int, metavar="PORT", help="serve over streamable HTTP on 127.0.0.1:PORT")
    options = parser.parse_args()
    if options.http is None:
        anyio.run(main, options.test_tools)
    else:
        import uvicorn

        uvicorn.run(http_app(options.test_tools), host="127.0.0.1", port=options.http, log_level="warning")
