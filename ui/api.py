"""API endpoints whose generation-setting parameters come from the settings schema.

``gr.api`` derives an endpoint's parameters from its function's signature; :func:`with_settings`
builds that signature from ``core.settings.SCHEMA`` (one parameter per setting, in the schema's
order, default None = the card's preset value for the model and mode), so the API, the UI's
sliders and the CLI's flags always agree.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

from core.errors import PlaygroundError
from core.settings import SCHEMA
from core.values import check_depth, strict_bool
from playground import Playground

_KIND = inspect.Parameter.POSITIONAL_OR_KEYWORD


def param(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    return inspect.Parameter(name, _KIND, default=default, annotation=annotation)


def with_settings(fn: Callable[..., Any], head: list[inspect.Parameter], tail: list[inspect.Parameter],
                  returns: Any, name: str, doc: str) -> Callable[..., Any]:
    """An endpoint taking ``head``, then every setting of the schema, then ``tail``; it calls
    ``fn(**head_and_tail, settings={name: value})``. A generator ``fn`` gives a streaming endpoint."""
    settings = [param(spec.name, spec.type | None, None) for spec in SCHEMA]
    signature = inspect.Signature([*head, *settings, *tail], return_annotation=returns)
    names = [spec.name for spec in SCHEMA]

    def split(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values = strict_values(signature, dict(bound.arguments))
        settings = {key: values.pop(key) for key in names}
        return {**values, "settings": settings}

    if inspect.isgeneratorfunction(fn):
        def endpoint(*args: Any, **kwargs: Any) -> Iterator[Any]:
            yield from fn(**split(args, kwargs))
    else:
        def endpoint(*args: Any, **kwargs: Any) -> Any:
            return fn(**split(args, kwargs))

    endpoint.__signature__ = signature  # type: ignore[attr-defined]
    endpoint.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()} | {"return": returns}
    endpoint.__name__ = endpoint.__qualname__ = name
    endpoint.__doc__ = doc
    return endpoint


def strict_values(signature: inspect.Signature, values: dict[str, Any]) -> dict[str, Any]:
    """An API call's values, parsed strictly before anything reads them (``core.values``): a
    ``bool`` parameter takes a JSON boolean only (``"false"`` is refused, not true), and no
    value is nested deeper than ``MAX_DEPTH``; ``gr.Error`` names the parameter."""
    try:
        for name, value in values.items():
            annotation = signature.parameters[name].annotation
            if annotation is bool:
                default = signature.parameters[name].default
                values[name] = strict_bool(value, name, default if isinstance(default, bool) else None)
            elif isinstance(value, (list, tuple, dict)):
                check_depth(value, name)
    except PlaygroundError as exc:
        raise gr.Error(str(exc)) from None
    return values


def visitor_of(playground: Playground, request: gr.Request | None) -> str | None:
    """An anonymous id of who sent a request (hosted mode's per-visitor limits and tool log):
    the client's address (the first forwarded one behind a proxy), else the browser session."""
    if request is None:
        return None
    headers = getattr(request, "headers", None) or {}
    raw = (headers.get("x-forwarded-for") or "").split(",")[0].strip() or \
        getattr(getattr(request, "client", None), "host", None) or request.session_hash or ""
    return playground.visitor_id(raw) if raw else None
