"""MCP servers over stdio or streamable HTTP, configured as in the Qwen3 cards, as tool sources.

The configuration is the cards' (Qwen-Agent's) own format::

    {"mcpServers": {"time": {"command": "uvx", "args": ["mcp-server-time", "--local-timezone=Asia/Shanghai"]},
                    "fetch": {"command": "uvx", "args": ["mcp-server-fetch"], "env": {"KEY": "value"}},
                    "remote": {"url": "https://example.com/mcp", "headers": {"Authorization": "Bearer ..."}}}}

A ``"command"`` server is a program run over stdio; a ``"url"`` server (``"type"`` absent,
``"streamable-http"`` or ``"http"``) is reached over streamable HTTP. (Qwen-Agent itself takes a
``"url"`` without a ``"type"`` for an SSE server; SSE is not supported here.)

:class:`McpServers` starts the configured servers once and offers one :class:`McpServerSource`
(a ``core.tools.ToolSource`` named ``"mcp:<server>"``) per server: all or none from its
constructor, or each on its own with :meth:`McpServers.start`.

Threading: the official ``mcp`` SDK is async (anyio). One background daemon thread runs one
asyncio event loop; each server lives in its own task on that loop, which enters its transport
(``stdio_client``, or an HTTP client and ``streamable_http_client``) and ``ClientSession``
contexts, lists the tools, then waits for a stop signal and exits the contexts (anyio requires a
context to be exited by the task that entered it). A
:meth:`McpServerSource.call` made from any thread submits ``session.call_tool`` to the loop
(``asyncio.run_coroutine_threadsafe``) and waits for it, watching its ``cancel`` event and its
timeout; on either the submitted call is cancelled. Cancelling raises :class:`ToolFailure`
("cancelled"), a timeout raises ``TimeoutError``.

Shutting down (``close()``, idempotent, also run at interpreter exit and once neither the
:class:`McpServers` nor any of its sources is referenced): every task exits its contexts, where
the SDK closes a stdio server's stdin, waits up to 2 s, then terminates its process group (an HTTP
session is ended with a DELETE request); then the loop stops and the thread ends.

A server's stderr goes to a temporary file (gone once closed), never to the app's console; its last
lines are quoted when the server fails to start or stops during a call. Servers get the app's
environment plus their ``env`` (the SDK alone would pass only HOME, LOGNAME, PATH, SHELL, TERM and
USER, which breaks ``uvx``/``npx`` behind proxies or with custom caches; a configured server is a
program the user chose to run, with the user's rights, like any command they type). The ``mcp``
package is imported only when a server starts (it takes about a second).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from typing import IO, Any

from core.errors import PlaygroundError
from core.mcp_config import McpConfigError, ServerConfig, load_mcp_config, parse_mcp_config  # noqa: F401
from core.tools import ToolFailure, ToolOutput, ToolSpec

DEFAULT_START_TIMEOUT_S = 30.0
_POLL_S = 0.05  # how often a waiting call looks at its cancel event
_STOP_TIMEOUT_S = 10.0  # the SDK's own shutdown takes at most about 6.5 s per server

# The SDK logs a traceback for every line a server prints to stdout that is not JSON-RPC. With no
# logging configured, Python's last-resort handler would print it on the console; an app that
# configures logging still gets the records (they propagate).
logging.getLogger("mcp").addHandler(logging.NullHandler())


class McpServerError(PlaygroundError):
    """An MCP server did not start."""


# -- one server's connection, on the loop -----------------------------------------------------

class _Connection:
    """One server's asyncio side: :meth:`run` is its task on the loop thread."""

    def __init__(self, config: ServerConfig, loop: asyncio.AbstractEventLoop, start_timeout: float) -> None:
        self.config = config
        self.loop = loop
        self.start_timeout = start_timeout
        self.stderr: IO[bytes] | None = (tempfile.TemporaryFile(prefix=f"mcp-{config.name}-stderr-")
                                         if config.url is None else None)
        self.http_error: str | None = None  # the first HTTP error status an HTTP server answered
        self.ready: concurrent.futures.Future[list[Any]] = concurrent.futures.Future()
        self.stop = asyncio.Event()  # binds to the loop at its first use there
        self.finished: concurrent.futures.Future[None] = concurrent.futures.Future()  # contexts exited
        self.session: Any = None
        self.closed = False  # a stop was asked for
        self.gone: str | None = None  # why calls can no longer reach the server
        self._starting: Any = None  # the anyio cancel scope of the start, once the process runs
        self.started = False  # run() was submitted to the loop

    async def run(self) -> None:
        import anyio
        from mcp import ClientSession
        from mcp.types import Implementation

        client = Implementation(name="qwen3-playground", version="1")
        try:
            if self.stop.is_set():
                raise RuntimeError("stopped before it started")
            async with contextlib.AsyncExitStack() as transport:
                read, write = await self._open(transport)
                async with ClientSession(read, write, client_info=client) as session:
                    with anyio.fail_after(self.start_timeout), anyio.CancelScope() as starting:
                        self._starting = starting
                        if self.stop.is_set():
                            starting.cancel()
                        await session.initialize()
                        tools = await _list_tools(session)
                    self._starting = None
                    if starting.cancel_called:
                        raise RuntimeError("stopped while it was starting")
                    self.session = session
                    self.ready.set_result(tools)
                    await self.stop.wait()
        except BaseException as err:  # noqa: BLE001 - reported through ready / gone
            if not self.ready.done():
                self.ready.set_exception(_leaf(err))
            if not isinstance(err, Exception):
                raise
        finally:
            self.session = None
            self.gone = self.gone or f"the MCP server '{self.config.name}' has stopped"
            self.finished.set_result(None)

    async def _open(self, stack: contextlib.AsyncExitStack) -> tuple[Any, Any]:
        """Enter the server's transport on ``stack``; its read and write streams."""
        if self.config.url is not None:
            from mcp.client.streamable_http import streamable_http_client
            from mcp.shared._httpx_utils import create_mcp_http_client

            # The SDK's client, with its timeouts (30 s, reads 300 s); nothing connects before
            # the handshake's first request.
            http = create_mcp_http_client(headers=dict(self.config.headers))
            http.event_hooks = {"response": [self._note_http_error]}
            await stack.enter_async_context(http)
            return await stack.enter_async_context(streamable_http_client(self.config.url, http_client=http))
        from mcp import StdioServerParameters
        from mcp.client.stdio import stdio_client

        params = StdioServerParameters(command=self.config.command or "", args=list(self.config.args),
                                       env={**os.environ, **self.config.env}, cwd=self.config.cwd)
        return await stack.enter_async_context(stdio_client(params, errlog=self.stderr))  # type: ignore[arg-type]

    async def _note_http_error(self, response: Any) -> None:
        # The SDK turns an HTTP error status into a generic JSON-RPC error; keep the status to name it.
        if response.status_code >= 400 and self.http_error is None:
            self.http_error = f"HTTP {response.status_code} {response.reason_phrase}".strip()

    def request_stop(self) -> None:
        """Ask the task to exit its contexts (cancelling a handshake still under way)."""
        self.closed = True
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._stop_now)

    def _stop_now(self) -> None:
        self.stop.set()
        if self._starting is not None:
            # An anyio cancellation, which the SDK's shielded process shutdown withstands (a
            # native Task.cancel() can break through the shield and leave the process running).
            self._starting.cancel()

    def stderr_tail(self, lines: int = 5, limit: int = 600) -> str:
        """The last lines of the server's stderr, on one line ('' if none)."""
        if self.stderr is None:
            return ""
        try:
            size = os.fstat(self.stderr.fileno()).st_size
            data = os.pread(self.stderr.fileno(), 16_384, max(0, size - 16_384))
        except (OSError, ValueError):
            return ""
        kept = [line.strip() for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
        text = " | ".join(kept[-lines:])
        return text if len(text) <= limit else "..." + text[-limit:]


async def _list_tools(session: Any) -> list[Any]:
    from mcp.types import PaginatedRequestParams

    capabilities = session.server_capabilities
    if capabilities is not None and capabilities.tools is None:
        return []  # the server offers no tools (only prompts or resources)
    tools: list[Any] = []
    cursor = None
    for _ in range(1000):
        result = await session.list_tools(params=PaginatedRequestParams(cursor=cursor) if cursor else None)
        tools.extend(result.tools)
        cursor = result.next_cursor
        if not cursor:
            break
    return tools


def _leaf(err: BaseException) -> BaseException:
    """The first real exception inside (nested) exception groups."""
    while isinstance(err, BaseExceptionGroup) and err.exceptions:
        err = err.exceptions[0]
    return err


def _shutdown(loop: asyncio.AbstractEventLoop, thread: threading.Thread, connections: list[_Connection]) -> None:
    """Stop every server, then the loop and its thread (the finalizer: references no McpServers)."""
    if threading.current_thread() is thread:  # cannot wait for the loop from inside it
        for connection in connections:
            connection.request_stop()
        return
    _stop_connections(connections)
    if not loop.is_closed():
        loop.call_soon_threadsafe(loop.stop)
        thread.join(_STOP_TIMEOUT_S)
        if not thread.is_alive():
            loop.close()
    for connection in connections:
        if connection.stderr is not None:
            connection.stderr.close()


def _stop_connections(connections: list[_Connection]) -> None:
    for connection in connections:
        connection.request_stop()
    started = [c.finished for c in connections if c.started]
    concurrent.futures.wait(started, timeout=_STOP_TIMEOUT_S)


# -- the public side --------------------------------------------------------------------------

class McpServerSource:
    """One running MCP server as a ``ToolSource``; made by :class:`McpServers`."""

    def __init__(self, lifetime: _Lifetime, connection: _Connection, tools: list[Any]) -> None:
        self._lifetime = lifetime  # the servers run while this source is in use
        self._connection = connection
        self.server_name = connection.config.name
        self.name = f"mcp:{self.server_name}"
        self._tools = [ToolSpec(name=tool.name, description=tool.description, parameters=tool.input_schema,
                                source=self.name) for tool in tools]

    def tools(self) -> list[ToolSpec]:
        return list(self._tools)

    @property
    def running(self) -> bool:
        """False once closed, or once a call found the server gone."""
        connection = self._connection
        return not connection.closed and connection.gone is None and connection.session is not None

    def call(self, name: str, arguments: dict[str, Any], cancel: threading.Event, timeout: float) -> ToolOutput:
        """Call tool ``name``. Raises ``TimeoutError`` after ``timeout`` seconds, :class:`ToolFailure`
        ("cancelled") within about 50 ms of ``cancel`` being set, and :class:`ToolFailure` when the
        server answers with a protocol error or is gone; a tool's own error is ``is_error``."""
        connection = self._connection
        where = f"the MCP server '{self.server_name}'"
        if connection.closed:
            raise ToolFailure(f"{where} is closed")
        if connection.gone or connection.session is None:
            raise ToolFailure(connection.gone or f"{where} is not running")
        if cancel.is_set():
            raise ToolFailure("cancelled")
        future = asyncio.run_coroutine_threadsafe(connection.session.call_tool(name, arguments),
                                                  connection.loop)
        deadline = time.monotonic() + timeout
        while not future.done():
            concurrent.futures.wait([future], timeout=max(0.0, min(_POLL_S, deadline - time.monotonic())))
            if future.done():
                break
            if cancel.is_set():
                future.cancel()
                raise ToolFailure("cancelled")
            if time.monotonic() >= deadline:
                future.cancel()
                raise TimeoutError(f"{where} did not answer the call to {name} within {timeout:g} s")
        try:
            result = future.result()
        except Exception as err:  # noqa: BLE001 - every failure becomes a ToolFailure
            raise ToolFailure(self._failure(err)) from err
        return result_output(result)

    def _failure(self, err: BaseException) -> str:
        from mcp.shared.exceptions import MCPError
        from mcp.types import CONNECTION_CLOSED

        where = f"the MCP server '{self.server_name}'"
        err = _leaf(err)
        if self._connection.closed:
            return f"{where} was closed during the call"
        if isinstance(err, MCPError) and err.code == CONNECTION_CLOSED:
            tail = self._connection.stderr_tail()
            url = self._connection.config.url
            self._connection.gone = (f"{where} stopped (its process exited or closed the connection)" if url is None
                                     else f"{where} closed the connection ({url})")
            self._connection.gone += f"; its stderr ends with: {tail}" if tail else ""
            return self._connection.gone
        if isinstance(err, MCPError):
            return f"{where} answered with an error: {err.message}"
        return f"{where} failed: {type(err).__name__}: {err}"

    def close(self) -> None:
        """Stop this server (the others keep running); idempotent."""
        _stop_connections([self._connection])
        if self._connection.stderr is not None:
            self._connection.stderr.close()

    def __repr__(self) -> str:
        return f"<McpServerSource {self.name}: {len(self._tools)} tools>"


class _Lifetime:
    """Held by :class:`McpServers` and its sources: the servers stop when it is freed."""


class McpServers:
    """Starts MCP servers (each once) and holds them until :meth:`close`.

    The constructor starts ``configs`` together, all or none: it raises :class:`McpServerError`
    naming the first server that did not start (the ones that did are shut down again).
    :meth:`start` adds servers one by one, so that one that fails does not keep the others from
    running. ``start_timeout`` bounds each server's start and MCP handshake.
    """

    def __init__(self, configs: Mapping[str, ServerConfig] | None = None, *,
                 start_timeout: float = DEFAULT_START_TIMEOUT_S) -> None:
        configs = dict(configs or {})
        for config in configs.values():
            _check_command(config)
        self._start_timeout = start_timeout
        self._lock = threading.Lock()  # start() against close()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="mcp-servers", daemon=True)
        self._thread.start()
        self._connections: list[_Connection] = []  # every server started, until it is forgotten
        # Runs once: on close(), when neither this object nor a source is referenced any more, or at
        # interpreter exit. (A lifetime token, not self: sources hold it, and no cycle forms.)
        self._lifetime = _Lifetime()
        self._finalizer = weakref.finalize(self._lifetime, _shutdown, self._loop, self._thread, self._connections)
        connections = self._launch(configs.values())
        concurrent.futures.wait([c.ready for c in connections], timeout=start_timeout + 5.0,
                                return_when=concurrent.futures.FIRST_EXCEPTION)
        failed = (next((c for c in connections if c.ready.done() and c.ready.exception() is not None), None)
                  or next((c for c in connections if not c.ready.done()), None))
        if failed is not None:
            _stop_connections(connections)  # every process gone, so the stderr files are complete
            message = _start_failure(failed, start_timeout)
            self._finalizer()
            raise McpServerError(message)
        self._sources = {c.config.name: self._source(c) for c in connections}

    @property
    def sources(self) -> list[McpServerSource]:
        """One tool source per server of the constructor's config, in its order."""
        return list(self._sources.values())

    def __getitem__(self, server_name: str) -> McpServerSource:
        return self._sources[server_name]

    def start(self, configs: Mapping[str, ServerConfig]) -> dict[str, McpServerSource | McpServerError]:
        """Start more servers, concurrently and each on its own; by name, in ``configs``' order, the
        source of each that started or the :class:`McpServerError` of each that did not (and is
        stopped again). The running servers are not touched; these ones stop with them on
        :meth:`close` (or each with its source's ``close()``). Raises :class:`McpServerError` once
        closed."""
        outcomes: dict[str, McpServerSource | McpServerError] = {}
        launch: dict[str, ServerConfig] = {}
        for name, config in configs.items():
            try:
                _check_command(config)
            except McpServerError as err:
                outcomes[name] = err
            else:
                launch[name] = config
        connections = dict(zip(launch, self._launch(launch.values())))
        concurrent.futures.wait([c.ready for c in connections.values()], timeout=self._start_timeout + 5.0)
        failed = [c for c in connections.values() if not c.ready.done() or c.ready.exception() is not None]
        _stop_connections(failed)
        for name, connection in connections.items():
            if connection in failed:
                outcomes[name] = McpServerError(_start_failure(connection, self._start_timeout))
                self._forget(connection)
            else:
                outcomes[name] = self._source(connection)
        return {name: outcomes[name] for name in configs}

    def _launch(self, configs: Iterable[ServerConfig]) -> list[_Connection]:
        with self._lock:
            if not self._finalizer.alive:
                raise McpServerError("the MCP servers are closed")
            connections = [_Connection(config, self._loop, self._start_timeout) for config in configs]
            self._connections.extend(connections)
            for connection in connections:
                asyncio.run_coroutine_threadsafe(connection.run(), self._loop)
                connection.started = True
        return connections

    def _source(self, connection: _Connection) -> McpServerSource:
        return McpServerSource(self._lifetime, connection, connection.ready.result())

    def _forget(self, connection: _Connection) -> None:
        """Let go of a server that did not start (and is stopped): no file stays open for it."""
        with self._lock:
            if connection in self._connections:
                self._connections.remove(connection)
        if connection.stderr is not None:
            connection.stderr.close()

    def close(self) -> None:
        """Stop every server and the loop thread; idempotent."""
        with self._lock:
            self._finalizer()

    def __enter__(self) -> McpServers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_command(config: ServerConfig) -> None:
    """Fail early, with advice, when the command cannot be found."""
    if config.command is None:
        return  # an HTTP server
    path = {**os.environ, **config.env}.get("PATH")
    if os.sep in config.command:
        found = os.access(config.command, os.X_OK)
    else:
        found = shutil.which(config.command, path=path) is not None
    if found:
        return
    where = f"the MCP server '{config.name}' did not start"
    if os.path.basename(config.command) == "uvx":
        package = next((arg for arg in config.args if not arg.startswith("-")), "<package>")
        rest = list(config.args[config.args.index(package) + 1:]) if package in config.args else []
        module = re.split(r"[@=<>\[ ]", package)[0].replace("-", "_")
        suggestion = json.dumps({"command": "python", "args": ["-m", module, *rest]})[1:-1]
        raise McpServerError(f"{where}: 'uvx' is not on PATH (it comes with uv); install uv, or pip install "
                             f"{package} and run it with Python: {suggestion}")
    if os.path.isfile(config.command):
        raise McpServerError(f"{where}: the command {config.command!r} is not executable")
    raise McpServerError(f"{where}: the command {config.command!r} was not found"
                         + ("" if os.sep in config.command else " on PATH"))


def _start_failure(connection: _Connection, start_timeout: float) -> str:
    from mcp.shared.exceptions import MCPError
    from mcp.types import CONNECTION_CLOSED

    where = f"the MCP server '{connection.config.name}' did not start"
    error = connection.ready.exception() if connection.ready.done() else TimeoutError()
    if connection.config.url is not None:
        return f"{where}: {_http_start_failure(connection, error, start_timeout)}"
    if isinstance(error, TimeoutError):
        why = f"it did not complete the MCP handshake within {start_timeout:g} s"
    elif isinstance(error, MCPError) and error.code == CONNECTION_CLOSED:
        why = "it exited (or closed its output) before completing the MCP handshake"
    elif isinstance(error, OSError):
        why = f"cannot run {connection.config.command!r}: {error.strerror or error}"
    else:
        why = f"{type(error).__name__}: {error}"
    tail = connection.stderr_tail()
    return f"{where}: {why}" + (f"; its stderr ends with: {tail}" if tail else "")


def _http_start_failure(connection: _Connection, error: BaseException | None, start_timeout: float) -> str:
    import httpx2
    from mcp.shared.exceptions import MCPError

    url = connection.config.url
    if isinstance(error, httpx2.TransportError):
        return f"cannot connect to {url}: {error or type(error).__name__}"
    if isinstance(error, TimeoutError):
        return f"{url} did not complete the MCP handshake within {start_timeout:g} s"
    if connection.http_error is not None:
        return f"{url} answered {connection.http_error}"
    if isinstance(error, MCPError):
        return f"{url} answered the MCP handshake with an error: {error.message}"
    return f"{url}: {type(error).__name__}: {error}"


# -- results ----------------------------------------------------------------------------------

def result_output(result: Any) -> ToolOutput:
    """A ``CallToolResult`` as text: text parts joined with newlines, other parts as placeholders;
    structured content as JSON when there is no content at all."""
    parts = [_content_text(block) for block in result.content]
    if not parts and result.structured_content is not None:
        parts = [json.dumps(result.structured_content, ensure_ascii=False)]
    return ToolOutput(text="\n".join(parts), is_error=bool(result.is_error))


def _content_text(block: Any) -> str:
    kind = getattr(block, "type", None)
    if kind == "text":
        return block.text
    if kind in ("image", "audio"):
        return f"[{block.mime_type} content, {_b64_size(block.data):,} bytes]"
    if kind == "resource":
        resource = block.resource
        if getattr(resource, "text", None) is not None:
            return resource.text
        return f"[{resource.mime_type or 'binary'} resource {resource.uri}, {_b64_size(resource.blob):,} bytes]"
    if kind == "resource_link":
        return f"[resource link: {block.uri}]"
    return f"[{kind} content]"


def _b64_size(data: str) -> int:
    data = data.strip()
    return len(data) * 3 // 4 - len(data) + len(data.rstrip("="))
