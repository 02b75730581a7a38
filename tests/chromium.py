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
    """
    import time

    deadline = time.monotonic() + timeout_s
    while not event.is_set():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        page.wait_for_timeout(20)  # serves the page's pending requests meanwhile
