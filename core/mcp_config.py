"""The MCP servers of a configuration in the Qwen3 cards' (Qwen-Agent's) own format::

    {"mcpServers": {"time": {"command": "uvx", "args": ["mcp-server-time", "--local-timezone=Asia/Shanghai"]},
                    "fetch": {"command": "uvx", "args": ["mcp-server-fetch"], "env": {"KEY": "value"}},
                    "remote": {"url": "http://127.0.0.1:8000/mcp", "headers": {"Authorization": "Bearer ..."}}}}

Parsed strictly (one line says what is wrong); ``playground.tools.mcp_servers`` starts them.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from core.errors import PlaygroundError

_STDIO_KEYS = ("command", "args", "env", "cwd", "type")
_HTTP_KEYS = ("url", "headers", "type")
_HTTP_TYPES = ("streamable-http", "http")


class McpConfigError(PlaygroundError):
    """The MCP configuration is malformed."""



@dataclass(frozen=True)
class ServerConfig:
    """One server: either a stdio ``command`` (with its ``args``, ``cwd`` and the ``env`` it gets on
    top of ours) or a streamable HTTP ``url`` (with the ``headers`` every request carries)."""

    name: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.command is not None and self.url is not None:
            raise McpConfigError(f"the MCP server '{self.name}' has both a command and a url (give one)")
        if self.command is None and self.url is None:
            raise McpConfigError(f"the MCP server '{self.name}' has neither a command nor a url")

    @property
    def transport(self) -> Literal["stdio", "http"]:
        return "stdio" if self.url is None else "http"


# -- configuration ----------------------------------------------------------------------------

def parse_mcp_config(data: str | Mapping[str, Any]) -> dict[str, ServerConfig]:
    """The servers of a ``{"mcpServers": {...}}`` config (JSON text or already parsed), by name.

    Raises :class:`McpConfigError` with one line saying what is wrong.
    """
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as err:
            raise McpConfigError(f"the MCP config is not valid JSON: {err}") from None
    servers = data.get("mcpServers") if isinstance(data, Mapping) else None
    if servers is None:
        raise McpConfigError('the MCP config has no "mcpServers" (expected {"mcpServers": {"<name>": '
                             '{"command": "...", "args": [...]}}})')
    if not isinstance(servers, Mapping):
        raise McpConfigError('"mcpServers" must be an object mapping server names to their settings')
    return {name: _parse_server(name, entry) for name, entry in servers.items()}


def _parse_server(name: Any, entry: Any) -> ServerConfig:
    if not isinstance(name, str) or not name.strip():
        raise McpConfigError(f"MCP server names must be non-empty strings, not {name!r}")
    where = f"the MCP server '{name}'"
    if not isinstance(entry, Mapping):
        raise McpConfigError(f'{where} must be an object with a "command" and its "args", or a "url"')
    kind = entry.get("type")
    if kind is not None and kind not in ("stdio", *_HTTP_TYPES):
        raise McpConfigError(f'{where}: "type" {kind!r} is not supported (only "stdio" servers with a "command" '
                             'and "streamable-http" servers with a "url"; SSE servers are not)')
    if "command" in entry and "url" in entry:
        raise McpConfigError(f'{where} has both a "command" and a "url" (give one: a program run over stdio, '
                             "or a streamable HTTP endpoint)")
    if "url" in entry or kind in _HTTP_TYPES:
        return _parse_http_server(name, entry, where)
    if "command" not in entry:
        raise McpConfigError(f'{where} has no "command" (the program that starts it, e.g. "uvx" or "python") '
                             'or "url" (a streamable HTTP endpoint)')
    return _parse_stdio_server(name, entry, where)


def _check_keys(entry: Mapping[str, Any], known: tuple[str, ...], where: str) -> None:
    unknown = [key for key in entry if key not in known]
    if unknown:
        raise McpConfigError(f"{where} has an unknown setting {unknown[0]!r} (known: {', '.join(known)})")


def _parse_http_server(name: str, entry: Mapping[str, Any], where: str) -> ServerConfig:
    if entry.get("type", "streamable-http") not in _HTTP_TYPES:
        raise McpConfigError(f'{where}: a "url" server is reached over streamable HTTP, not "type": '
                             f"{entry['type']!r}")
    if "command" in entry:
        raise McpConfigError(f'{where}: a "command" server runs over stdio, not "type": {entry["type"]!r}')
    _check_keys(entry, _HTTP_KEYS, where)
    url = entry.get("url")
    if not isinstance(url, str) or not url.strip():
        raise McpConfigError(f'{where} has no "url" (its streamable HTTP endpoint, e.g. "http://127.0.0.1:8000/mcp")')
    if not _is_http_url(url):
        raise McpConfigError(f'{where}: "url" must be an http:// or https:// address, not {url!r}')
    headers = entry.get("headers", {})
    if not isinstance(headers, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                   for k, v in headers.items()):
        raise McpConfigError(f'{where}: "headers" must map header names to strings')
    return ServerConfig(name=name, url=url, headers=dict(headers))


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _parse_stdio_server(name: str, entry: Mapping[str, Any], where: str) -> ServerConfig:
    _check_keys(entry, _STDIO_KEYS, where)
    command = entry.get("command")
    if not isinstance(command, str) or not command.strip():
        raise McpConfigError(f'{where} has no "command" (the program that starts it, e.g. "uvx" or "python")')
    args = entry.get("args", [])
    if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args):
        raise McpConfigError(f'{where}: "args" must be a list of strings')
    env = entry.get("env", {})
    if not isinstance(env, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise McpConfigError(f'{where}: "env" must map variable names to strings')
    cwd = entry.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise McpConfigError(f'{where}: "cwd" must be a string')
    return ServerConfig(name=name, command=command, args=tuple(args), env=dict(env), cwd=cwd)


def load_mcp_config(path: str | os.PathLike[str]) -> dict[str, ServerConfig]:
    """:func:`parse_mcp_config` of a file; errors name the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise McpConfigError(f"cannot read the MCP config {path}: {getattr(err, 'strerror', None) or err}") from None
    try:
        return parse_mcp_config(text)
    except McpConfigError as err:
        raise McpConfigError(f"{path}: {err}") from None
