"""Shared test set-up: one torch thread, no telemetry, and an in-process web app.

Fixtures here are generic so that other test files can reuse them:
- ``free_port()`` (a function): a free TCP port on 127.0.0.1;
- ``launch_in_process(demo)`` (a function): start a ``gr.Blocks`` on 127.0.0.1 in this process
  and return its URL;
- ``tiny_bf16`` (session): the path of the tiny demo model, built once;
- ``ui_server`` (session): the playground UI running in-process on a free port, started on
  tiny-bf16, as an object with ``url``, ``demo`` and ``pool`` (the shared ModelPool).
"""
from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Before torch / gradio are imported anywhere: the machine has 2 busy cores, and no phoning home.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ARTIFACTS = ROOT / "artifacts"  # gitignored: screenshots and other test output

# -- no silent skips ---------------------------------------------------------------------------
# A skipped test is a failure (``python -m pytest``, the README's command, is what CI runs)
# unless its node id matches a pattern here (fnmatch), with the reason it may skip. Keep it short:
# a missing package or browser is an install to fix, not a test to skip.
ALLOWED_SKIPS: dict[str, str] = {}


def allowed_skip(nodeid: str) -> str | None:
    """The reason ``nodeid`` may be skipped, or None."""
    import fnmatch

    return next((why for pattern, why in ALLOWED_SKIPS.items() if fnmatch.fnmatchcase(nodeid, pattern)), None)


def _skip_reason(report: Any) -> str:
    longrepr = report.longrepr
    return str(longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else longrepr)


def _fail_unlisted_skip(report: Any) -> None:
    if report.skipped and not hasattr(report, "wasxfail") and allowed_skip(report.nodeid) is None:
        report.outcome = "failed"
        report.longrepr = (f"{report.nodeid} was skipped ({_skip_reason(report)}), and it is not on the "
                           "allow-list (ALLOWED_SKIPS in tests/conftest.py): in CI a skip is a failure")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any):
    outcome = yield
    _fail_unlisted_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: Any):
    """A whole module skipped (``importorskip`` at its top): a collection error, unless listed."""
    outcome = yield
    _fail_unlisted_skip(outcome.get_result())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def join_threads(matches: Any, timeout: float) -> list[Any]:
    """Wait (``Thread.join``, within one ``timeout``) for the threads whose name ``matches``;
    return those still alive."""
    import threading
    import time

    deadline = time.monotonic() + timeout
    threads = [t for t in threading.enumerate() if matches(t.name)]
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [t for t in threads if t.is_alive()]


def launch_in_process(demo: Any, concurrency: int = 4) -> str:
    """Serve ``demo`` (a gr.Blocks) on 127.0.0.1:<free port> without blocking; return its URL."""
    from core.config import AppConfig
    from ui.request_limit import request_limit

    port = free_port()
    demo.queue(default_concurrency_limit=concurrency)
    config = getattr(getattr(demo, "playground", None), "config", None) or AppConfig()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                show_error=True, app_kwargs={"middleware": [request_limit(config.max_request_bytes)]})  # as ui.launch
    return f"http://127.0.0.1:{port}"


def build_test_app(pool: Any = None, start_model: str | None = "tiny-bf16", config: Any = None) -> Any:
    """The playground's Blocks on ``pool`` (a new one if None), starting on ``start_model``."""
    from backends.pool import ModelPool
    from core.config import AppConfig
    from playground import Playground
    from ui.blocks import build_app

    config = config or AppConfig()
    playground = Playground(config, pool or ModelPool(max_models=config.max_models))
    playground.start_up(start_model)
    return build_app(playground)


def ask(backend: Any, messages: list[dict], settings: Any, *, thinking: bool = True, system_prompt: str | None = None,
        stop: Any = None):
    """``backend.stream_chat`` for ``messages`` under the same rules as the playground's requests."""
    from core.request import ChatRequest

    request = ChatRequest.build(backend.spec, backend.options, messages, settings, thinking, system_prompt)
    return backend.stream_chat(request, stop)


@pytest.fixture(scope="session")
def tiny_bf16() -> Path:
    import tinymodels

    return tinymodels.model_path("bf16")


@dataclass
class UIServer:
    url: str
    demo: Any
    pool: Any

    def backend(self, model: str = "tiny-bf16", yarn_factor: float = 1.0):
        """The backend the pool holds for (model, yarn_factor), or None."""
        return self.demo.playground.peek(model, yarn_factor)


@pytest.fixture(scope="session")
def ui_server(tiny_bf16) -> UIServer:
    import torch

    torch.set_num_threads(1)
    from backends.pool import ModelPool

    pool = ModelPool(max_models=3)
    demo = build_test_app(pool, "tiny-bf16")
    url = launch_in_process(demo)
    try:
        yield UIServer(url, demo, pool)
    finally:
        demo.close()
        pool.unload_all()


@pytest.fixture()
def browser():
    """Debian's headless Chromium through Playwright (see tests/chromium.py)."""
    from chromium import CHROMIUM, CHROMIUM_ARGS

    playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture()
def outside():
    """URLs the page tried to reach outside 127.0.0.1 (must stay empty)."""
    tried: list[str] = []
    yield tried
    assert tried == [], f"the page tried to reach outside 127.0.0.1: {tried}"
