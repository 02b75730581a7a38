"""A comparison export read back (``/compare_import``, the Compare tab's upload), checked strictly.

The file is a stranger's JSON: every field a comparison keeps is checked for its type (``"false"``
is not a bool), nesting is bounded (``core.values``), each column's conversation holds OpenAI-style
messages, and everything the tab shows or exports must compute. Sizes are the configuration's
business (``AppConfig.check_upload``, ``Playground.check_comparison``).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from core.chat import ROLES
from core.compare import Comparison, EntryResult
from core.errors import PlaygroundError
from core.values import check_depth

_NUMBER = (int, float)
# what each field of an entry may be (None is allowed where listed)
_ENTRY_TYPES: dict[str, tuple[type, ...]] = {
    "label": (str,), "model": (str,), "backend": (str,), "yarn_factor": _NUMBER, "reasoning": (str,),
    "answer": (str,), "stats": (dict, type(None)), "info": (dict, type(None)), "load_s": (*_NUMBER, type(None)),
    "error": (str, type(None)), "stop_reason": (str, type(None)), "perplexity": (dict, type(None)),
    "history": (list,), "turns": (list,), "tool_calls": (list,), "steps": (list,), "budget_cut": (bool,),
    "drift": (dict, type(None)), "memory": (dict, type(None)), "published": (list, type(None)),
}
_TOP_TYPES: dict[str, tuple[type, ...]] = {
    "prompt": (str,), "settings": (dict,), "thinking": (bool,), "system_prompt": (str,), "created": (str,),
    "tools": (list, type(None)), "max_tool_rounds": (int, type(None)), "entries": (list,), "table": (list,),
}


class ComparisonFileError(PlaygroundError):
    """An imported comparison is unreadable or not a comparison export."""


def parse_comparison(data: bytes | str, max_entries: int) -> Comparison:
    """The comparison in an export file's ``data`` (its bytes or text), with 1 to ``max_entries``
    entries; raises :class:`ComparisonFileError` saying what is wrong."""
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ComparisonFileError("the file is not UTF-8 text") from None
    try:
        loaded = json.loads(data)
    except json.JSONDecodeError as exc:
        raise ComparisonFileError(f"the file is not valid JSON: {exc.msg} (line {exc.lineno})") from None
    except RecursionError:
        raise ComparisonFileError("the file is nested too deeply") from None
    try:
        check_depth(loaded, "the file")
    except PlaygroundError as exc:
        raise ComparisonFileError(str(exc)) from None
    if not isinstance(loaded, dict) or "prompt" not in loaded or not isinstance(loaded.get("entries"), list):
        raise ComparisonFileError("expected an object with a prompt and its entries")
    _check_types(loaded, _TOP_TYPES, "")
    if not 1 <= len(loaded["entries"]) <= max_entries:
        raise ComparisonFileError(f"a comparison has 1 to {max_entries} entries; this one has "
                                  f"{len(loaded['entries'])}")
    known = {f.name for f in fields(EntryResult)}
    for number, entry in enumerate(loaded["entries"], 1):
        where = f"entry {number}: "
        if not isinstance(entry, dict):
            raise ComparisonFileError(f"{where}not an object")
        unknown = sorted(set(entry) - known)
        if unknown:
            raise ComparisonFileError(f"{where}unknown field {unknown[0]!r}")
        _check_types(entry, _ENTRY_TYPES, where)
        _check_history(entry.get("history", []), where)
        for name in ("turns", "tool_calls", "steps"):
            if not all(isinstance(item, dict) for item in entry.get(name, [])):
                raise ComparisonFileError(f"{where}{name} must be a list of objects")
        entry.pop("published", None)  # a stranger's "published" figures are not shown: the importer looks them up
    if loaded.get("tools") is not None and not all(isinstance(name, str) for name in loaded["tools"]):
        raise ComparisonFileError("tools must be a list of tool names")
    try:
        comparison = Comparison.from_dict(loaded)
        comparison.to_markdown()  # every turn, table cell and figure the tab shows computes
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
        raise ComparisonFileError(f"a field has the wrong shape ({type(exc).__name__})") from None
    return comparison


def _check_types(data: Mapping[str, Any], types: Mapping[str, tuple[type, ...]], where: str) -> None:
    for name, allowed in types.items():
        if name in data and (not isinstance(data[name], allowed) or
                             (isinstance(data[name], bool) and bool not in allowed)):
            wanted = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in allowed if not (t is int and float in allowed))
            raise ComparisonFileError(f"{where}{name} must be {wanted}, got {type(data[name]).__name__}")


_TYPE_NAMES = {str: "text", bool: "true or false", int: "a whole number", float: "a number", dict: "an object",
               list: "a list", type(None): "null"}


def _check_history(history: list[Any], where: str) -> None:
    """A column's conversation: OpenAI-style messages with text content."""
    for index, message in enumerate(history, 1):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise ComparisonFileError(f"{where}history message {index} needs a role among {', '.join(ROLES)}")
        if not isinstance(message.get("content", ""), str):
            raise ComparisonFileError(f"{where}history message {index}: content must be text")
        calls = message.get("tool_calls")
        if calls is not None and not (isinstance(calls, list) and all(isinstance(c, dict) for c in calls)):
            raise ComparisonFileError(f"{where}history message {index}: tool_calls must be a list of objects")
