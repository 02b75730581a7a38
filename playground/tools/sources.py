"""The playground's tool sources: MCP servers started once per configuration, shut down at exit.

Two chats with the same ``mcpServers`` configuration share its servers (starting one takes a
second or more); a different configuration starts its own. :meth:`ToolSources.close` stops them
all (``McpServers`` also stops its servers at interpreter exit).
"""
from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Mapping

from playground.tools.mcp_servers import McpServers, McpServerSource, ServerConfig


class ToolSources:
    def __init__(self) -> None:
        self._servers: dict[str, McpServers] = {}
        self._lock = threading.Lock()

    def mcp(self, configs: Mapping[str, ServerConfig]) -> list[McpServerSource]:
        """The sources of ``configs``' servers, starting them the first time (raises a
        ``PlaygroundError`` naming a server that does not start)."""
        key = json.dumps({name: dataclasses.asdict(config) for name, config in configs.items()},
                         sort_keys=True, default=dict)
        with self._lock:  # one start per configuration, even when two chats ask at once
            servers = self._servers.get(key)
            if servers is None:
                servers = self._servers[key] = McpServers(configs)
        return servers.sources

    def close(self) -> None:
        with self._lock:
            servers, self._servers = list(self._servers.values()), {}
        for each in servers:
            each.close()
