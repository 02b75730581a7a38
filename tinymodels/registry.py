"""Registry of the tiny-model formats (bf16, fp8, later gptq, moe, gguf ...).

A format is a writer ``fn(src, dst)`` that fills the empty folder ``dst``.  ``needs`` names the
format whose finished folder is passed as ``src`` (None for root formats such as the trained bf16
model, which get ``src=None``).  The cache layer (``tinymodels.cache``) builds dependencies first,
each in a temp folder renamed atomically into place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

Writer = Callable[[Optional[Path], Path], None]


@dataclass(frozen=True)
class FormatSpec:
    name: str
    writer: Writer
    needs: str | None = None
    description: str = ""


FORMATS: dict[str, FormatSpec] = {}


def register_format(name: str, *, needs: str | None = None, description: str = "") -> Callable[[Writer], Writer]:
    """Decorator: ``@register_format("fp8", needs="bf16") def write_fp8(src, dst): ...``."""

    def deco(fn: Writer) -> Writer:
        if name in FORMATS and FORMATS[name].writer is not fn:
            raise ValueError(f"tiny-model format {name!r} registered twice")
        FORMATS[name] = FormatSpec(name, fn, needs, description or (fn.__doc__ or "").strip().split("\n")[0])
        return fn

    return deco


def resolve(formats: tuple[str, ...] | list[str]) -> list[str]:
    """The requested formats plus their dependencies, dependencies first."""
    order: list[str] = []

    def visit(name: str, stack: tuple[str, ...]) -> None:
        if name in order:
            return
        if name not in FORMATS:
            raise KeyError(f"unknown tiny-model format {name!r}; known: {sorted(FORMATS)}")
        if name in stack:
            raise ValueError(f"format dependency cycle: {' -> '.join(stack + (name,))}")
        needs = FORMATS[name].needs
        if needs:
            visit(needs, stack + (name,))
        order.append(name)

    for f in formats:
        visit(f, ())
    return order
