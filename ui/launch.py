"""``python app.py [ui] --host --port --share --model``: build the Blocks, preload, serve."""
from __future__ import annotations

import argparse
import os
import sys

# No usage statistics sent to Gradio's servers (set before gradio is imported); opt in with the variable.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from backends.base import LoadOptions
from backends.pool import ModelPool
from core.catalog import load_catalog, resolve_model
from core.errors import PlaygroundError
from ui.context import TINY_MODEL, TINY_NOTE, StartModel, choose_start_model

DEFAULT_CONCURRENCY = 4  # chats wait for their model's generation lock; loads run alongside


def preload(pool: ModelPool, start: StartModel, log=print) -> StartModel:
    """Load the start model before serving; if it fails, start on the tiny model and say why."""

    def progress(fraction: float, message: str) -> None:
        log(f"[{fraction:4.0%}] {message}")

    try:
        pool.get(resolve_model(start.ref), LoadOptions(), progress)
        return start
    except PlaygroundError as exc:
        if start.ref == TINY_MODEL:
            raise
        log(f"could not load {start.ref}: {exc}; starting on {TINY_MODEL}")
        note = TINY_NOTE.format(name=TINY_MODEL, reason=f"`{start.ref}` could not be loaded: {exc}.")
        fallback = StartModel(TINY_MODEL, note)
        pool.get(resolve_model(TINY_MODEL), LoadOptions(), progress)
        return fallback


def launch(args: argparse.Namespace, *, block: bool = True):
    """Start the web UI as ``app.py ui`` asks; returns 0 when the server stops (or the Blocks
    when ``block`` is False)."""
    from ui.blocks import build_app

    pool = ModelPool(max_models=getattr(args, "max_models", None) or 1)
    start = choose_start_model(getattr(args, "model", None), load_catalog())
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    if start.note:
        log(start.note.replace("**", "").replace("`", "").replace("*", ""))
    try:
        start = preload(pool, start, log)
    except PlaygroundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    demo = build_app(pool, start=start)
    demo.queue(default_concurrency_limit=getattr(args, "concurrency", None) or DEFAULT_CONCURRENCY)
    demo.launch(server_name=args.host, server_port=args.port, share=bool(args.share),
                prevent_thread_lock=not block, show_error=True)
    return 0 if block else demo
