"""Shared set-up of the real-browser tests: Debian's Chromium driven by Playwright, offline.

Never ``playwright install``: install the browser with ``apt-get install -y chromium``. Every
request that does not go to 127.0.0.1 is aborted and recorded (the ``outside`` fixture in
conftest fails the test if anything tried). Screenshots go to ``artifacts/`` (gitignored).
"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

requires_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="real-browser tests need Debian's Chromium at /usr/bin/chromium: apt-get install -y chromium "
           "(never `playwright install`)",
)


def offline_context(browser, outside: list[str], **kwargs):
    """A browser context in which anything not served by 127.0.0.1 is aborted and recorded."""
    kwargs.setdefault("viewport", {"width": 1400, "height": 1000})
    context = browser.new_context(accept_downloads=True, **kwargs)

    def guard(route):
        url = route.request.url
        if url.startswith(("data:", "blob:")) or urlparse(url).hostname == "127.0.0.1":
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    context.route("**/*", guard)
    return context


def wait_pumping(page, event, what: str, timeout_s: float = 30) -> None:
    """Wait for a server-side ``threading.Event`` while Playwright keeps serving the page.

    The page's requests go through the route handler of ``offline_context``, which Playwright's
    sync API runs on this thread, only while this thread is inside a Playwright call: a plain
    ``event.wait()`` here would hold back the very request (a Regenerate, a Stop) that sets it.
    So the page itself asks (a function exposed to it) and Playwright's own condition wait
    serves the page's requests until the answer is yes.
    """
    exposed = page.__dict__.setdefault("_qwen3_events", {})
    name = exposed.get(id(event))
    if name is None:
        name = exposed[id(event)] = f"__qwen3ServerEvent{len(exposed)}"
        page.expose_function(name, event.is_set)
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(f"() => window.{name}()", timeout=timeout_s * 1000, polling=20)
    except PlaywrightTimeout:
        raise AssertionError(f"timed out waiting for {what}") from None
