"""Values from outside (API calls, form fields, imported files), parsed strictly.

JSON from a stranger can be anything: ``"false"`` where a bool belongs (``bool("false")`` is
True), or lists nested hundreds of levels deep (Python's recursive code, ``json.dumps`` included,
fails on them with a ``RecursionError``). These checks refuse such values with one clear line
that names the field, before anything else reads them.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.errors import InvalidSettings

MAX_DEPTH = 32  # nesting levels a value may have (a chat message with a tool call needs about 6)


def strict_bool(value: Any, name: str, default: bool | None = None) -> bool:
    """``value`` if it is a real bool; None (left out) is ``default`` when there is one.
    Anything else, ``"false"`` and ``0`` included, is refused (``InvalidSettings``)."""
    if value is None and default is not None:
        return default
    if isinstance(value, bool):
        return value
    raise InvalidSettings(f"{name} must be true or false (a JSON boolean), got {_shown(value)}")


def check_depth(value: Any, name: str, limit: int = MAX_DEPTH) -> None:
    """Refuse (``InvalidSettings``) lists and objects nested more than ``limit`` levels deep.
    Iterative: it never recurses itself, however deep the value."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children = list(item.values())
        elif isinstance(item, (list, tuple)):
            children = list(item)
        else:
            continue
        if depth > limit:
            raise InvalidSettings(f"{name} is nested too deeply (more than {limit} levels of lists or objects)")
        stack.extend((child, depth + 1) for child in children)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def strict_text(value: Any, name: str, default: str = "") -> str:
    """``value`` if it is a string; None (left out) is ``default``; anything else is refused."""
    if value is None:
        return default
    if isinstance(value, str):
        return value
    raise InvalidSettings(f"{name} must be text, got {type(value).__name__}")
