"""What a chat asks for in tools: the ``ToolSelection`` a UI panel, an API call or the CLI builds.

It is plain data (it lives in a session's state, is sent by API clients and goes into a
comparison's export); :meth:`Playground.toolbox_for` turns it into a toolbox under the
configuration's rules (hosted mode: the host's servers and allow-list only).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from core.errors import InvalidSettings
from core.tools import DEFAULT_MAX_ROUNDS, MAX_ROUNDS_LIMIT

MAX_CONFIG_CHARS = 64_000  # an mcpServers config longer than this is refused unread


@dataclass(frozen=True)
class ToolSelection:
    """``mcp_config``: the ``{"mcpServers": ...}`` JSON text ("" = no servers of the visitor's own);
    ``enabled``: the tool names offered (None = every tool of the servers; () = none);
    ``code_interpreter``: offer the code interpreter; ``max_rounds``: the tool loop's round limit;
    ``approve_each``: pause before each call until the user runs or skips it (UI only)."""

    mcp_config: str = ""
    enabled: tuple[str, ...] | None = None
    code_interpreter: bool = False
    max_rounds: int = DEFAULT_MAX_ROUNDS
    approve_each: bool = False

    @property
    def empty(self) -> bool:
        """Nothing asked for: the chat runs without tools (unless the host offers some)."""
        return not self.mcp_config.strip() and not self.code_interpreter and not self.enabled

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["enabled"] = None if self.enabled is None else list(self.enabled)
        return data

    @classmethod
    def from_value(cls, value: Any) -> ToolSelection:
        """A selection from JSON data (a dict, its JSON text, None = no tools); raises
        ``InvalidSettings`` saying what is wrong. Types are strict: ``"false"`` is not a bool."""
        if value is None or value == "":
            return cls()
        if isinstance(value, ToolSelection):
            return value
        if isinstance(value, str):
            if len(value) > MAX_CONFIG_CHARS * 2:
                raise InvalidSettings("the tool selection is too long")
            try:
                value = json.loads(value)
            except (json.JSONDecodeError, RecursionError):
                raise InvalidSettings("the tool selection is not valid JSON") from None
        if not isinstance(value, Mapping):
            raise InvalidSettings("the tool selection must be an object")
        unknown = sorted(set(value) - {f.name for f in fields(cls)})
        if unknown:
            raise InvalidSettings(f"the tool selection has an unknown key {unknown[0]!r}")
        config = value.get("mcp_config") or ""
        if isinstance(config, Mapping):
            config = json.dumps(config)
        if not isinstance(config, str):
            raise InvalidSettings("tools: mcp_config must be the mcpServers JSON (text or object)")
        if len(config) > MAX_CONFIG_CHARS:
            raise InvalidSettings(f"tools: the MCP config is over {MAX_CONFIG_CHARS:,} characters")
        enabled = value.get("enabled")
        if enabled is not None:
            if isinstance(enabled, str) or not isinstance(enabled, (list, tuple)) or \
                    not all(isinstance(name, str) for name in enabled):
                raise InvalidSettings("tools: enabled must be a list of tool names")
            enabled = tuple(dict.fromkeys(enabled))
        flags = {}
        for key in ("code_interpreter", "approve_each"):
            flag = value.get(key, False)
            if not isinstance(flag, bool):
                raise InvalidSettings(f"tools: {key} must be true or false, got {flag!r}")
            flags[key] = flag
        rounds = value.get("max_rounds", DEFAULT_MAX_ROUNDS)
        if isinstance(rounds, float) and rounds.is_integer():
            rounds = int(rounds)
        if isinstance(rounds, bool) or not isinstance(rounds, int) or not 1 <= rounds <= MAX_ROUNDS_LIMIT:
            raise InvalidSettings(f"tools: max_rounds must be a whole number from 1 to {MAX_ROUNDS_LIMIT}")
        return cls(config, enabled, flags["code_interpreter"], rounds, flags["approve_each"])
