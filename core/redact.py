"""What a stranger may read of an error (hosted mode): no server paths, no URLs, no host names.

An error's own line is written for the host (``str(err)``: which file, which server). In hosted
mode visitors get :func:`public_text`: the error's ``public`` line when it has one (written without
the host's details), with any path or URL still in it replaced, and never the text of an
unexpected exception (it can hold anything).
"""
from __future__ import annotations

import re
from collections.abc import Iterable

from core.errors import PlaygroundError

PATH = "<path>"
URL = "<url>"
_TAIL = r"[^\s'\"`<>()\[\]{}]*[^\s'\"`<>()\[\]{}.,;:!?]"  # not a sentence's closing punctuation
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://" + _TAIL)
# an absolute, home or dot-relative path; not a repo id ("Qwen/Qwen3-4B"), "tokens/s", a closing
# tag ("</think>") or the soft switches ("/think", "/no_think")
_PATH = re.compile(r"(?<![\w.:/~<>-])(?:~|\.\.?)?/(?!(?:no_)?think\b)" + _TAIL)


def redact(text: str, hide: Iterable[str] = ()) -> str:
    """``text`` with every URL, path and string of ``hide`` (the host's server URL, its host
    name...) replaced by a placeholder."""
    for secret in sorted((h for h in hide if h), key=len, reverse=True):
        text = text.replace(secret, URL)
    return _PATH.sub(PATH, _URL.sub(URL, text))


def public_text(error: BaseException, hide: Iterable[str] = ()) -> str:
    """The line a stranger is shown for ``error``."""
    if not isinstance(error, PlaygroundError):
        return f"unexpected error ({type(error).__name__}); the host's log has the details"
    return redact(getattr(error, "public", None) or str(error), hide)
