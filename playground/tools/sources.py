"""The playground's tool sources: MCP servers started once per server configuration, shut down at exit.

Servers are kept one by one, by name and settings: two chats whose configurations share a server
share its process or HTTP session (starting one takes a second or more), and a server that does
not start keeps none of the others from running. :meth:`ToolSources.connect` reports each server's
state (for a UI's "Connect" button), :meth:`ToolSources.mcp` gives the sources of a configuration
whose servers all run. A server that failed, was closed or was found gone is started again by the
next request for it. :meth:`ToolSources.close` stops them all (``McpServers`` also stops its
servers at interpreter exit).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from core.tools import ToolSpec
from playground.tools.mcp_servers import (DEFAULT_START_TIMEOUT_S, McpServerError, McpServers, McpServerSource,
                                          ServerConfig)


@dataclass(frozen=True)
class ServerStatus:
    """One configured server after a connect: ``"ready"`` with its tools, or ``"failed"`` and why."""

    name: str
    state: Literal["ready", "failed"]
    transport: Literal["stdio", "http"]
    tools: tuple[ToolSpec, ...] = ()
    error: str | None = None


_Key = tuple[str, str]  # a server's name and its settings as JSON


def _key(config: ServerConfig) -> _Key:
    return config.name, json.dumps(dataclasses.asdict(config), sort_keys=True, default=dict)


class ToolSources:
    def __init__(self, *, start_timeout: float = DEFAULT_START_TIMEOUT_S) -> None:
        self._start_timeout = start_timeout
        self._lock = threading.Lock()
        self._servers: McpServers | None = None  # one loop thread for every server, made when first needed
        # Each server starting or running; a failed start is dropped, so the next request retries it.
        self._started: dict[_Key, concurrent.futures.Future[McpServerSource]] = {}

    def connect(self, configs: Mapping[str, ServerConfig]) -> list[ServerStatus]:
        """Start ``configs``' servers that do not run yet (concurrently, each on its own) and report
        every server's state, in the config's order."""
        statuses = []
        for name, outcome in self._outcomes(configs).items():
            transport = configs[name].transport
            if isinstance(outcome, McpServerError):
                statuses.append(ServerStatus(name, "failed", transport, error=str(outcome)))
            else:
                statuses.append(ServerStatus(name, "ready", transport, tools=tuple(outcome.tools())))
        return statuses

    def mcp(self, configs: Mapping[str, ServerConfig]) -> list[McpServerSource]:
        """The sources of ``configs``' servers, starting the ones that do not run yet (raises the
        ``McpServerError``, naming the server, of the first one that does not start)."""
        sources = []
        for outcome in self._outcomes(configs).values():
            if isinstance(outcome, McpServerError):
                raise outcome
            sources.append(outcome)
        return sources

    def _outcomes(self, configs: Mapping[str, ServerConfig]) -> dict[str, McpServerSource | McpServerError]:
        mine: dict[str, ServerConfig] = {}  # the servers this call starts
        waits: dict[str, concurrent.futures.Future[McpServerSource]] = {}
        stale: list[McpServerSource] = []
        with self._lock:  # one start per server, even when two chats ask at once
            if self._servers is None:
                self._servers = McpServers(start_timeout=self._start_timeout)
            servers = self._servers
            for name, config in configs.items():
                key = _key(config)
                future = self._started.get(key)
                if future is not None and future.done() and not future.result().running:
                    stale.append(future.result())  # (a start that failed is never kept)
                    future = None
                if future is None:
                    future = self._started[key] = concurrent.futures.Future()
                    mine[name] = config
                waits[name] = future
        for source in stale:
            source.close()  # a server found gone: let its task end before starting it again
        if mine:
            self._start(servers, mine, {name: waits[name] for name in mine})
        outcomes: dict[str, McpServerSource | McpServerError] = {}
        for name, future in waits.items():
            error = future.exception()  # waits for a start another call made
            outcomes[name] = error if isinstance(error, McpServerError) else future.result()
        return outcomes

    def _start(self, servers: McpServers, configs: dict[str, ServerConfig],
               futures: dict[str, concurrent.futures.Future[McpServerSource]]) -> None:
        outcomes: dict[str, McpServerSource | McpServerError] = {}
        try:
            outcomes = servers.start(configs)
        except McpServerError as err:  # closed meanwhile
            outcomes = dict.fromkeys(configs, err)
        finally:  # whatever happened, no other call waits forever
            with self._lock:
                for name, config in configs.items():
                    outcome = outcomes.get(name)
                    if isinstance(outcome, McpServerSource):
                        futures[name].set_result(outcome)
                        continue
                    if self._started.get(_key(config)) is futures[name]:
                        del self._started[_key(config)]
                    futures[name].set_exception(outcome if isinstance(outcome, McpServerError)
                                                else McpServerError(f"the MCP server '{name}' did not start"))

    def close(self) -> None:
        """Stop every server (sources handed out stop working); a later request starts them again."""
        with self._lock:
            servers, self._servers, self._started = self._servers, None, {}
        if servers is not None:
            servers.close()
