"""The browser UI (Gradio Blocks). Only wires Gradio components to the core and the backends'
interface: no model library is imported here."""
from __future__ import annotations


def build_app(*args, **kwargs):
    """See :func:`ui.blocks.build_app` (imported lazily: importing ``ui`` stays cheap)."""
    from ui.blocks import build_app as _build_app

    return _build_app(*args, **kwargs)
