"""Exported files (chats, comparisons) on the server's disk: one folder per app, bounded.

Each export gets its own subfolder (its files keep their readable names) inside the app's one
folder. Before every export, exports older than ``max_age_s`` are deleted, and the oldest beyond
``max_exports``: a public app cannot fill the disk by exporting in a loop. The files are only
needed until Gradio has copied them into its own cache (as the export's event returns), so a short
life is enough.
"""
from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path

DEFAULT_MAX_AGE_S = 600.0
DEFAULT_MAX_EXPORTS = 32


class ExportFolder:
    """The app's export folder (created on first use, under the system's temporary folder)."""

    def __init__(self, max_age_s: float = DEFAULT_MAX_AGE_S, max_exports: int = DEFAULT_MAX_EXPORTS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age_s = max_age_s
        self.max_exports = max(1, max_exports)
        self._clock = clock
        self._root: Path | None = None
        self._exports: deque[tuple[float, Path]] = deque()  # (written at, subfolder), oldest first
        self._lock = threading.Lock()

    @property
    def root(self) -> Path:
        with self._lock:
            return self._ensure_root()

    def _ensure_root(self) -> Path:
        if self._root is None or not self._root.is_dir():
            self._root = Path(tempfile.mkdtemp(prefix="qwen3-playground-exports-"))
            self._exports.clear()
        return self._root

    def write(self, files: Mapping[str, str]) -> list[Path]:
        """Write one export (file name -> text) into a new subfolder; returns the files' paths."""
        with self._lock:
            root = self._ensure_root()
            now = self._clock()
            while self._exports and (now - self._exports[0][0] > self.max_age_s
                                     or len(self._exports) >= self.max_exports):
                shutil.rmtree(self._exports.popleft()[1], ignore_errors=True)
            folder = Path(tempfile.mkdtemp(dir=root))
            self._exports.append((now, folder))
        paths = []
        for name, text in files.items():
            path = folder / Path(name).name
            path.write_text(text, encoding="utf-8")
            paths.append(path)
        return paths

    def count(self) -> int:
        """Exports on disk now."""
        with self._lock:
            return len(self._exports)

    def close(self) -> None:
        """Delete the folder and everything in it."""
        with self._lock:
            if self._root is not None:
                shutil.rmtree(self._root, ignore_errors=True)
            self._root = None
            self._exports.clear()
