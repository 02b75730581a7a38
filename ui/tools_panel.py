"""The Tools panel: MCP servers from the cards' ``mcpServers`` config, the tools they offer (each
with an on/off box), the code interpreter, the round limit and "ask before each call".

What the panel asks for is one ``ToolSelection`` (``selection``, a ``gr.State`` holding its JSON
data): the chat and the Compare tab both read it, and ``Playground.toolbox_for`` applies the
configuration's rules to it (hosted mode: the host's tools only).
"""
from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from core.errors import PlaygroundError
from core.mcp_config import parse_mcp_config
from core.tools import DEFAULT_MAX_ROUNDS, MAX_ROUNDS_LIMIT, ToolSpec
from playground import Playground
from playground.tools.code_interpreter import NAME as CODE_INTERPRETER
from playground.tools.selection import MAX_CONFIG_CHARS, ToolSelection
from ui.formatting import fenced

NOT_CONNECTED = "Not connected. Paste a config (the cards' `mcpServers` format) and press **Connect**."


@dataclass
class ToolsPanel:
    config: gr.Code
    upload: gr.UploadButton
    connect: gr.Button
    status: gr.Markdown
    tools: gr.CheckboxGroup
    details: gr.Markdown
    code_interpreter: gr.Checkbox
    max_rounds: gr.Slider
    approve_each: gr.Checkbox
    known: gr.State  # the tool names Connect found (empty: not connected)
    selection: gr.State  # ToolSelection.to_dict(): what chat and compare use


def build_tools_panel(playground: Playground) -> ToolsPanel:
    hosted = playground.config.hosted
    with gr.Accordion("Tools", open=False, elem_id="tools-panel"):
        config = gr.Code(value="", language="json", label="MCP servers (mcpServers config)", lines=6,
                         elem_id="mcp-config", interactive=not hosted, visible=not hosted)
        with gr.Row():
            upload = gr.UploadButton("Load config file", size="sm", file_types=[".json"], type="filepath",
                                     elem_id="mcp-upload", visible=not hosted)
            connect = gr.Button("Show this playground's tools" if hosted else "Connect", size="sm",
                                variant="primary", elem_id="mcp-connect")
        status = gr.Markdown("This playground's host chooses its tools; press the button to list them." if hosted
                             else NOT_CONNECTED, elem_id="mcp-status")
        tools = gr.CheckboxGroup(choices=[], value=[], label="Tools offered to the model", elem_id="tool-list")
        with gr.Accordion("Tool descriptions and schemas", open=False):
            details = gr.Markdown("", elem_id="tool-details")
        code_interpreter = gr.Checkbox(False, label="Code interpreter (runs Python on this machine)",
                                       elem_id="code-interpreter", visible=not hosted, interactive=not hosted)
        max_rounds = gr.Slider(1, MAX_ROUNDS_LIMIT, value=DEFAULT_MAX_ROUNDS, step=1, label="Round limit",
                               info="rounds of tool calls per reply", elem_id="max-tool-rounds")
        approve_each = gr.Checkbox(False, label="Ask before each call (Run / Skip)", elem_id="approve-each")
        known = gr.State([])
        selection = gr.State(None)
    return ToolsPanel(config, upload, connect, status, tools, details, code_interpreter, max_rounds, approve_each,
                      known, selection)


def selection_of(config: str, enabled: Sequence[str] | None, code_interpreter: bool, max_rounds: float,
                 approve_each: bool, known: Sequence[str]) -> dict[str, Any] | None:
    """The panel's values as ``ToolSelection`` data (None: no tools asked for)."""
    names = list(enabled or []) if known else None  # not connected: every tool of the config
    if code_interpreter and names is not None:
        names.append(CODE_INTERPRETER)
    if not (config or "").strip() and not code_interpreter and not names:
        return None
    return ToolSelection(config or "", tuple(names) if names is not None else None, bool(code_interpreter),
                         int(max_rounds), bool(approve_each)).to_dict()


def tool_details(specs: Sequence[ToolSpec]) -> str:
    """Each tool's description and JSON schema, for reading."""
    parts = []
    for spec in specs:
        parts.append(f"**{spec.name}** · *{spec.source}*\n\n{spec.description or '(no description)'}\n\n"
                     + fenced(json.dumps(spec.parameters, ensure_ascii=False, indent=2), "json"))
    return "\n\n".join(parts)


def _status_line(status: Any) -> str:
    if status.state == "ready":
        return f"**{status.name}** ({status.transport}): ready, {len(status.tools)} tool(s)"
    return f"**{status.name}** ({status.transport}): **failed**: {status.error}"


def make_connect(playground: Playground):
    def connect(config: str) -> Iterator[tuple[Any, ...]]:
        """Start the config's servers (each on its own: one failing does not stop the others) and
        list their tools; in hosted mode, list the host's tools."""
        specs: list[ToolSpec] = []
        lines: list[str] = []
        if playground.config.hosted:
            try:
                specs = list(playground.offered_tools())
            except PlaygroundError as exc:
                lines.append(f"**Unavailable**: {exc}")
            lines.insert(0, f"This playground offers {len(specs)} tool(s)." if specs else "")
        else:
            try:
                configs = parse_mcp_config(config) if (config or "").strip() else {}
            except PlaygroundError as exc:
                gr.Warning(str(exc))
                yield f"**Not connected**: {exc}", gr.CheckboxGroup(choices=[], value=[]), "", []
                return
            if configs:
                yield ("\n\n".join(f"**{name}**: starting…" for name in configs), gr.skip(), gr.skip(),
                       gr.skip())
                for status in playground.tool_sources.connect(configs):
                    lines.append(_status_line(status))
                    specs += list(status.tools) if status.state == "ready" else []
            if not configs:
                lines.append("No servers in the config.")
        names = [spec.name for spec in specs]
        choices = [(f"{spec.name} — {(spec.description or '').splitlines()[0][:60] if spec.description else ''}"
                    .rstrip(" —"), spec.name) for spec in specs]
        yield ("\n\n".join(line for line in lines if line), gr.CheckboxGroup(choices=choices, value=names),
               tool_details(specs), names)

    return connect


def read_config_file(path: str | None) -> str:
    """An uploaded ``mcpServers`` file's text (checked: size, UTF-8, JSON with servers)."""
    if not path:
        raise gr.Error("Choose a config file (.json).")
    data = Path(path).read_bytes()
    if len(data) > MAX_CONFIG_CHARS:
        raise gr.Error(f"the config file is {len(data):,} bytes; at most {MAX_CONFIG_CHARS:,}")
    try:
        text = data.decode("utf-8-sig")
        parse_mcp_config(text)
    except UnicodeDecodeError:
        raise gr.Error("the config file is not UTF-8 text") from None
    except PlaygroundError as exc:
        raise gr.Error(str(exc)) from None
    return text


def wire_tools_panel(playground: Playground, panel: ToolsPanel) -> None:
    inputs = [panel.config, panel.tools, panel.code_interpreter, panel.max_rounds, panel.approve_each, panel.known]
    quiet = dict(api_visibility="private", show_progress="hidden")
    connected = panel.connect.click(make_connect(playground), [panel.config],
                                    [panel.status, panel.tools, panel.details, panel.known], api_visibility="private",
                                    show_progress_on=[panel.status])
    connected.then(selection_of, inputs, [panel.selection], queue=False, **quiet)
    panel.upload.upload(read_config_file, [panel.upload], [panel.config], queue=False, **quiet).then(
        _not_connected, None, [panel.status, panel.tools, panel.details, panel.known], queue=False, **quiet).then(
        selection_of, inputs, [panel.selection], queue=False, **quiet)
    panel.config.input(_not_connected, None, [panel.status, panel.tools, panel.details, panel.known],
                       queue=False, **quiet).then(selection_of, inputs, [panel.selection], queue=False, **quiet)
    for control in (panel.tools, panel.code_interpreter, panel.max_rounds, panel.approve_each):
        control.change(selection_of, inputs, [panel.selection], queue=False, **quiet)


def _not_connected() -> tuple[Any, ...]:
    return NOT_CONNECTED, gr.CheckboxGroup(choices=[], value=[]), "", []
