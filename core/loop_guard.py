"""The loop guard: notice, while a reply streams, that it repeats itself, so it can be stopped.

Quantized Qwen3 models sometimes fall into a loop ("reasoning never ends"): the same span over
and over until max_new_tokens. :class:`LoopGuard` is fed the reply's text deltas (reasoning and
answer alike, in order) and reports a loop once the last characters are one span of ``p``
characters repeated back to back, exactly:

- ``p`` (the period) is between ``min_period_chars`` and ``max_period_chars``;
- the periodic tail is at least ``min_repeats`` periods **and** at least ``min_loop_chars``
  characters long (so a short span needs many repeats: " la" 80 times, 240 characters; a
  400-character paragraph 8 times).

Normal text never repeats exactly for that long: numbered lists and tables differ in their
numbers and cells, code repeats a line a few times, not dozens. The check runs once
``check_every_chars`` new characters have arrived, on a bounded window (the longest tail it can
need), and first compares a short suffix, so it costs little per delta. Library-free.
"""
from __future__ import annotations

from dataclasses import dataclass

MIN_PERIOD_CHARS = 1  # a run of one character ("!!!!", newlines) is a loop too, once long enough
MAX_PERIOD_CHARS = 400  # a repeated paragraph
MIN_REPEATS = 8
MIN_LOOP_CHARS = 240  # " la" x 80, "Let me think again. " x 12
CHECK_EVERY_CHARS = 16
_PROBE_CHARS = 24  # the suffix compared first: most periods are rejected by it


@dataclass(frozen=True)
class Loop:
    """A repetition found: ``period_chars`` long, repeated ``repeats`` times at the end."""

    period_chars: int
    repeats: int
    span: str  # one period, as it last appeared


class LoopGuard:
    """A streaming repetition detector (see the module docstring); one per generation."""

    def __init__(self, min_period_chars: int = MIN_PERIOD_CHARS, max_period_chars: int = MAX_PERIOD_CHARS,
                 min_repeats: int = MIN_REPEATS, min_loop_chars: int = MIN_LOOP_CHARS,
                 check_every_chars: int = CHECK_EVERY_CHARS, window_chars: int | None = None) -> None:
        if not 1 <= min_period_chars <= max_period_chars:
            raise ValueError("need 1 <= min_period_chars <= max_period_chars")
        if min_repeats < 2:
            raise ValueError("min_repeats must be at least 2")
        self.min_period, self.max_period = min_period_chars, max_period_chars
        self.min_repeats, self.min_loop_chars = min_repeats, min_loop_chars
        self.check_every = max(1, check_every_chars)
        needed = max(min_loop_chars, min_repeats * max_period_chars)
        self.window_chars = max(window_chars or 0, needed + max_period_chars)
        self._text = ""
        self._unchecked = 0
        self.fed_chars = 0  # every character fed so far
        self.loop: Loop | None = None

    @property
    def looping(self) -> bool:
        return self.loop is not None

    def feed(self, text: str) -> bool:
        """Take the next delta; True once the reply loops (and from then on)."""
        if self.loop is not None or not text:
            return self.loop is not None
        self.fed_chars += len(text)
        self._text += text
        if len(self._text) > 2 * self.window_chars:  # trimmed now and then, not at every delta
            self._text = self._text[-self.window_chars:]
        self._unchecked += len(text)
        if self._unchecked >= self.check_every:
            self._unchecked = 0
            self.loop = self.check()
        return self.loop is not None

    def check(self) -> Loop | None:
        """The shortest period the tail of the text repeats with, now (None: no loop)."""
        text = self._text[-self.window_chars:]
        n = len(text)
        if n < self.min_loop_chars:
            return None
        probe = min(_PROBE_CHARS, n)
        tail = text[-probe:]
        for p in range(self.min_period, min(self.max_period, n // self.min_repeats) + 1):
            need = max(self.min_loop_chars, self.min_repeats * p)
            if need > n:
                break  # longer periods need even more text
            if text[-probe - p:n - p] != tail:
                continue
            if text[n - need:n - p] == text[n - need + p:]:  # the last `need` characters have period p
                return Loop(p, self._extent(text, p) // p, text[-p:])
        return None

    @staticmethod
    def _extent(text: str, p: int) -> int:
        """How many characters at the end of ``text`` have period ``p``."""
        i = len(text) - p - 1
        while i >= 0 and text[i] == text[i + p]:
            i -= 1
        return len(text) - 1 - i
