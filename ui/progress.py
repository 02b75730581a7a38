"""Gradio's progress bar as the playground's ``progress(fraction, message)`` callback."""
from __future__ import annotations

from typing import Any

from core.events import ProgressFn


def gradio_progress(progress: Any) -> ProgressFn:
    """Adapt ``gr.Progress`` to the playground's ``progress(fraction, message)`` callback."""

    def report(fraction: float, message: str) -> None:
        try:
            progress(max(0.0, min(1.0, float(fraction))), desc=message)
        except Exception:  # progress is cosmetic: never let it break a load
            pass

    return report
