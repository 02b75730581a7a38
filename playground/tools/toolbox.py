"""The toolbox of a chat request: tool sources put together, every call checked and run.

:class:`Toolbox` offers the tools of its sources (MCP servers, the code interpreter, Python
functions) under unique names, and turns each call the model makes into the
:class:`~core.tools.ToolResult` it reads next, whatever happens: a call that did not parse, an
unknown tool, arguments that break the tool's JSON schema, a tool that fails, runs past its time
limit or is stopped, a result over the size cap. A source runs in a worker thread, so that Stop
and the time limit hold even for a tool that ignores its ``cancel`` event.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

import jsonschema

from core.errors import PlaygroundError
from core.tools import (DEFAULT_MAX_ROUNDS, DEFAULT_RESULT_CHARS, DEFAULT_TOOL_TIMEOUT_S, MAX_ROUNDS_LIMIT, AnyCall,
                        ErrorKind, ToolCallError, ToolFailure, ToolOutput, ToolResult, ToolSource, ToolSpec,
                        truncate_result)

_POLL_S = 0.05  # how often a waiting call looks at Stop
_GRACE_S = 2.0  # a source past its time limit gets this long to notice its cancel event


class Toolbox:
    """See the module docstring. ``enabled``: the tool names offered (None: all of them)."""

    def __init__(self, sources: Sequence[ToolSource], *, enabled: Collection[str] | None = None,
                 max_rounds: int = DEFAULT_MAX_ROUNDS, timeout_s: float = DEFAULT_TOOL_TIMEOUT_S,
                 result_chars: int = DEFAULT_RESULT_CHARS) -> None:
        if not 1 <= max_rounds <= MAX_ROUNDS_LIMIT:
            raise PlaygroundError(f"the tool round limit must be between 1 and {MAX_ROUNDS_LIMIT}, got {max_rounds}")
        if timeout_s <= 0:
            raise PlaygroundError(f"the tool time limit must be positive, got {timeout_s}")
        self.max_rounds, self.timeout_s, self.result_chars = max_rounds, timeout_s, result_chars
        self._tools: dict[str, tuple[ToolSpec, ToolSource]] = {}
        for source in sources:
            for spec in source.tools():
                if enabled is not None and spec.name not in enabled:
                    continue
                if spec.name in self._tools:
                    raise PlaygroundError(f"two tools are named {spec.name!r} ({self._tools[spec.name][0].source} "
                                          f"and {spec.source}): turn one of them off")
                token = spec.markup_in_schema()
                if token:
                    raise PlaygroundError(f"the tool {spec.name!r} ({spec.source}) is refused: its description or "
                                          f"schema contains {token}, which the model reads as markup")
                self._tools[spec.name] = (spec, source)
        unknown = sorted(set(enabled or ()) - set(self._tools))
        if unknown:
            raise PlaygroundError(f"no tool is named {', '.join(map(repr, unknown))}")

    def specs(self) -> list[ToolSpec]:
        return [spec for spec, _ in self._tools.values()]

    def run(self, call: AnyCall, round: int, stop: threading.Event | None = None) -> ToolResult:
        started = time.perf_counter()

        def result(content: str, error: ErrorKind | None = None, truncated: bool = False) -> ToolResult:
            return ToolResult(call.id, call.name, None if isinstance(call, ToolCallError) else call.arguments,
                              content, error, time.perf_counter() - started, truncated, round)

        if isinstance(call, ToolCallError):
            return result(f"Error: {call.message}", "invalid_call")
        if call.name not in self._tools:
            return result(f"Error: there is no tool named {call.name!r}; the tools are "
                          f"{', '.join(self._tools) or 'none'}", "unknown_tool")
        spec, source = self._tools[call.name]
        problem = argument_problem(spec, call.arguments)
        if problem:
            return result(f"Error: bad arguments for {call.name}: {problem}", "bad_arguments")
        try:
            output = self._call(source, spec.name, call.arguments, stop)
        except TimeoutError:
            return result(f"Error: {call.name} did not finish within {self.timeout_s:g} s", "timeout")
        except _Stopped:
            return result(f"Error: {call.name} was stopped by the user", "cancelled")
        except ToolFailure as exc:
            return result(f"Error: {call.name} failed: {exc}", "tool_error")
        content, truncated = truncate_result(output.text, self.result_chars)
        return result(content, "tool_error" if output.is_error else None, truncated)

    def _call(self, source: ToolSource, name: str, arguments: dict[str, Any],
              stop: threading.Event | None) -> ToolOutput:
        """``source.call`` in a worker thread, given up at Stop or past the time limit."""
        cancel, done = threading.Event(), threading.Event()
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["output"] = source.call(name, arguments, cancel, self.timeout_s)
            except BaseException as exc:  # handed to the waiting thread
                box["error"] = exc
            finally:
                done.set()

        threading.Thread(target=work, name=f"tool-{name}", daemon=True).start()
        deadline = time.monotonic() + self.timeout_s + _GRACE_S
        while not done.wait(_POLL_S):
            if stop is not None and stop.is_set():
                cancel.set()
                raise _Stopped
            if time.monotonic() > deadline:
                cancel.set()
                raise TimeoutError
        error = box.get("error")
        if isinstance(error, (TimeoutError, ToolFailure)):
            raise error
        if error is not None:  # a source's bug: the model reads what happened
            raise ToolFailure(f"{type(error).__name__}: {error}")
        return box["output"]


class _Stopped(Exception):
    pass


def argument_problem(spec: ToolSpec, arguments: dict[str, Any]) -> str | None:
    """Why ``arguments`` break the tool's JSON schema (one line), or None."""
    try:
        validator = jsonschema.validators.validator_for(spec.parameters)(spec.parameters)
        error = jsonschema.exceptions.best_match(validator.iter_errors(arguments))
    except jsonschema.exceptions.SchemaError:
        return None  # a tool with a broken schema: let the tool judge its arguments
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{where}: {error.message}" if where else error.message


class FunctionTools:
    """Python functions as a tool source (tests, embedding): each returns the result text."""

    def __init__(self, name: str, functions: Sequence[tuple[dict[str, Any], Callable[..., str]]]) -> None:
        self.name = name
        self._functions = {schema["function"]["name"]: (schema, fn) for schema, fn in functions}

    def tools(self) -> list[ToolSpec]:
        return [ToolSpec(schema["function"]["name"], schema["function"].get("description"),
                         schema["function"].get("parameters", {"type": "object", "properties": {}}), self.name)
                for schema, _ in self._functions.values()]

    def call(self, name: str, arguments: dict[str, Any], cancel: threading.Event, timeout: float) -> ToolOutput:
        try:
            return ToolOutput(str(self._functions[name][1](**arguments)))
        except Exception as exc:
            raise ToolFailure(f"{type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        pass
