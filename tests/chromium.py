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
