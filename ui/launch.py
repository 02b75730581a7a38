"""``python app.py [ui] --host --port --share --model --hosted --max-models``: build the Blocks,
serve at once, load the start model in the background.

Start-up stays fast: nothing heavy (torch, transformers, llama.cpp) is imported before the UI is
up. The start model then loads in a background thread; pages opened meanwhile show its progress
(``ui.model_panel.make_page_start``), and a message sent meanwhile waits for the same load
(the pool loads each model once).
"""
from __future__ import annotations

import argparse
import os
import sys

# No usage statistics sent to Gradio's servers (set before gradio is imported); opt in with the variable.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from backends.pool import ModelPool
from core.config import AppConfig
from core.errors import PlaygroundError
from playground import Playground

DEFAULT_CONCURRENCY = 8  # requests served at once: local models queue per model, remote replies run together


def sharing(args: argparse.Namespace) -> tuple[bool, bool]:
    """(share a public link, that forces hosted mode): ``--share`` is a link for strangers, so it
    turns hosted mode on; only ``--share-with-local-access`` shares without it."""
    local_access = bool(getattr(args, "share_with_local_access", False))
    share = bool(getattr(args, "share", False)) or local_access
    return share, share and not local_access


def app_config(args: argparse.Namespace) -> AppConfig:
    """The environment's configuration (``QWEN3_PLAYGROUND_*``, hosted on Spaces), with the
    command line's flags on top (``--hosted``, or ``--share``: see :func:`sharing`)."""
    hosted = bool(getattr(args, "hosted", False)) or sharing(args)[1]
    return AppConfig.from_env(hosted=True if hosted else None,
                              max_models=getattr(args, "max_models", None),
                              default_model=getattr(args, "model", None))


def launch(args: argparse.Namespace, *, block: bool = True, pool: ModelPool | None = None):
    """Start the web UI as ``app.py ui`` asks; returns 0 when the server stops (or the Blocks
    when ``block`` is False, with the start model still loading: ``demo.playground.warmup``)."""
    from ui.blocks import build_app
    from ui.openai_routes import openai_routes
    from ui.request_limit import request_limit

    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    try:
        config = app_config(args)
    except PlaygroundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    playground = Playground(config, pool)
    start = playground.start_up()
    if start.note:
        log(start.note.replace("**", "").replace("`", "").replace("*", ""))
    if config.hosted:
        memory = playground.host_memory()
        switch = ("visitors may switch models (to those that fit)" if config.visitors_may_switch else
                  "only the host switches models (QWEN3_PLAYGROUND_VISITORS_SWITCH_MODELS)")
        log(f"hosted mode: catalog models only, messages up to {config.max_message_chars:,} characters, "
            f"at most {playground.pool.max_models} model(s) loaded at once; {switch}; "
            f"{memory.bytes / 10**9:.1f} GB for models ({memory.where})")
    share, _ = sharing(args)
    if share and not config.hosted:
        log("warning: --share-with-local-access: anyone with the public link can load this machine's local "
            "paths and any model, and use its remote server and tools")
    warmup = playground.warm_up(log)
    demo = build_app(playground)
    # the size limits (core.config) also bound Gradio's own uploads and queue; in hosted mode an
    # unexpected exception shows no text (gr.Error's worded messages still do)
    demo.queue(default_concurrency_limit=getattr(args, "concurrency", None) or DEFAULT_CONCURRENCY,
               max_size=config.queue_size)
    # the OpenAI-compatible API (/v1) on the same server, before Gradio's own routes (ui.openai_routes);
    # every request body capped before anything reads it (ui.request_limit)
    demo.launch(server_name=args.host, server_port=args.port, share=share, prevent_thread_lock=True,
                show_error=not config.hosted, max_file_size=config.max_upload_bytes,
                app_kwargs={"routes": openai_routes(playground),
                            "middleware": [request_limit(config.max_request_bytes)]})
    if config.openai_api_on:
        log(f"OpenAI-compatible API at {str(demo.local_url).rstrip('/')}/v1"
            + (" (Bearer key required)" if config.api_key else ""))
    warmup.start()  # the UI is up: now the model
    if not block:
        return demo
    demo.block_thread()
    return 0
