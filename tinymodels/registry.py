"""Registry of the tiny-model formats (bf16, fp8, later gptq, moe, gguf ...).

A format is a writer ``fn(src, dst)`` that fills the empty folder ``dst``.  ``needs`` names the
format whose finished folder is passed as ``src`` (None for root formats such as the trained bf16
model, which get ``src=None``).  The cache layer (``tinymodels.cache``) builds dependencies first,
each in a temp folder renamed atomically into place.  ``on_request`` formats (e.g. the
random-weight 0.6B-shaped models of ``tinymodels.random_size``, gigabytes each) are built only when
named, never by default (:func:`default_formats`).
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
    on_request: bool = False  # built only when named (big or slow), never by default


FORMATS: dict[str, FormatSpec] = {}


def register_format(name: str, *, needs: str | None = None, description: str = "",
                    on_request: bool = False) -> Callable[[Writer], Writer]:
    """Decorator: ``@register_format("fp8", needs="bf16") def write_fp8(src, dst): ...``."""

    def deco(fn: Writer) -> Writer:
        if name in FORMATS and FORMATS[name].writer is not fn:
            raise ValueError(f"tiny-model format {name!r} registered twice")
        FORMATS[name] = FormatSpec(name, fn, needs, description or (fn.__doc__ or "").strip().split("\n")[0],
                                   on_request)
        return fn

    return deco


def default_formats() -> list[str]:
    """Every registered format except the on-request ones, sorted (what ``build-tiny`` builds)."""
    return sorted(name for name, spec in FORMATS.items() if not spec.on_request)


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
