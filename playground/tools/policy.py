"""Hosted mode's tool policy: visitors are strangers, the tools and the machine are the host's.

- :class:`HostSource` shows one of the host's tool sources as visitors may see it: only the tools
  of the allow-list, and (hosted mode) failures summarised, their details (server commands, paths,
  stderr) going to the server's log only.
- :class:`HostedToolbox` wraps a chat's toolbox (``core.tools.Toolbox``): each visitor's calls are
  rate-limited (:class:`RateLimiter`, a sliding window held by the ``Playground``), results count
  against the size limits (each one, and one reply's together), and every call is logged (logger
  ``qwen3_playground.tools``) with the visitor's anonymous id, never the arguments or the result.
"""
from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Collection
from typing import Any

from core.tools import AnyCall, ToolCallError, ToolFailure, ToolOutput, ToolResult, ToolSource, ToolSpec
from core.tools import Toolbox as ToolboxProtocol

log = logging.getLogger("qwen3_playground.tools")

WINDOW_S = 60.0
UNAVAILABLE = "a tool server of this playground is unavailable"
_ANONYMOUS = re.compile(r"v-[0-9a-f]{10}")


def anonymous_id(raw: str, salt: bytes) -> str:
    """A visitor's id for limits and logs: ``v-`` and 10 hex digits of a keyed BLAKE2 hash of
    ``raw`` (a session hash, a client address), which cannot be recovered without ``salt``."""
    return "v-" + hashlib.blake2b(raw.encode("utf-8", "surrogatepass"), digest_size=5, key=salt[:64]).hexdigest()


def is_anonymous_id(value: str) -> bool:
    return bool(_ANONYMOUS.fullmatch(value))


class RateLimiter:
    """At most ``per_window`` calls per visitor in any ``window_s`` seconds (a sliding window).
    Thread-safe; ``clock`` is injectable (tests)."""

    def __init__(self, per_window: int, window_s: float = WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if per_window < 1:
            raise ValueError("per_window must be at least 1")
        self.per_window, self.window_s, self.clock = per_window, window_s, clock
        self._calls: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._sweep_at = 1024  # forget idle visitors once this many are held

    def take(self, visitor: str) -> float:
        """0.0 when ``visitor`` may make a call now (and it is counted), else the seconds to wait."""
        with self._lock:
            now = self.clock()
            if len(self._calls) >= self._sweep_at:
                self._sweep(now)
            calls = self._calls.setdefault(visitor, deque())
            while calls and calls[0] <= now - self.window_s:
                calls.popleft()
            if len(calls) >= self.per_window:
                return max(calls[0] + self.window_s - now, 0.001)
            calls.append(now)
            return 0.0

    def _sweep(self, now: float) -> None:
        self._calls = {v: c for v, c in self._calls.items() if c and c[-1] > now - self.window_s}
        self._sweep_at = max(1024, 2 * len(self._calls))


class HostSource:
    """A host's tool source narrowed to ``allowed`` (None: all its tools). With ``private_errors``
    (hosted mode) a failure reaches the model and the visitor as one plain line; the details are
    logged."""

    def __init__(self, source: ToolSource, allowed: Collection[str] | None = None, *,
                 private_errors: bool = False) -> None:
        self.source, self.name = source, source.name
        self.allowed = None if allowed is None else frozenset(allowed)
        self.private_errors = private_errors

    def tools(self) -> list[ToolSpec]:
        return [spec for spec in self.source.tools() if self.allowed is None or spec.name in self.allowed]

    def call(self, name: str, arguments: dict[str, Any], cancel: threading.Event, timeout: float) -> ToolOutput:
        if self.allowed is not None and name not in self.allowed:
            raise ToolFailure(f"the tool {name!r} is not offered here")
        if not self.private_errors:
            return self.source.call(name, arguments, cancel, timeout)
        try:
            return self.source.call(name, arguments, cancel, timeout)
        except TimeoutError:
            raise TimeoutError(name) from None
        except ToolFailure as exc:
            if cancel.is_set():
                raise ToolFailure("cancelled") from None
            log.warning("tool %s (%s) failed: %s", name, self.name, exc)
        except Exception as exc:  # a source's bug: its message may hold anything
            log.exception("tool %s (%s) raised %s", name, self.name, type(exc).__name__)
        raise ToolFailure(f"{UNAVAILABLE} (or the call failed); try again later")

    def close(self) -> None:
        pass  # the host's servers outlive a chat: the Playground closes them


class HostedToolbox:
    """A toolbox under hosted mode's rules (see the module docstring); one per reply, as
    ``Playground.toolbox_for`` makes them (``reply_chars`` is that reply's budget)."""

    def __init__(self, inner: ToolboxProtocol, *, visitor: str, limiter: RateLimiter, result_chars: int,
                 reply_chars: int) -> None:
        self.inner, self.visitor, self.limiter = inner, visitor, limiter
        self.result_chars, self.reply_chars = result_chars, reply_chars
        self._used = 0
        self._lock = threading.Lock()  # a comparison may run two replies on one toolbox

    @property
    def max_rounds(self) -> int:
        return self.inner.max_rounds

    @property
    def timeout_s(self) -> float | None:
        return getattr(self.inner, "timeout_s", None)

    def specs(self) -> list[ToolSpec]:
        return self.inner.specs()

    def run(self, call: AnyCall, round: int, stop: threading.Event | None = None) -> ToolResult:
        started = time.perf_counter()
        wait = 0.0 if isinstance(call, ToolCallError) else self.limiter.take(self.visitor)
        if wait:
            window = "minute" if self.limiter.window_s == 60 else f"{self.limiter.window_s:g} s"
            result = ToolResult(call.id, call.name, call.arguments,
                                f"Error: too many tool calls: this playground runs at most {self.limiter.per_window} "
                                f"per {window} for each visitor; wait {math.ceil(wait)} s before calling a tool again",
                                "rate_limited", round=round)
        else:
            result = self._limit_size(self.inner.run(call, round, stop))
        self._log(call, result, time.perf_counter() - started)
        return result

    def _limit_size(self, result: ToolResult) -> ToolResult:
        content, truncated = result.content, result.truncated
        if len(content) > self.result_chars:
            note = f"\n[result cut to this playground's limit of {self.result_chars:,} characters]"
            content = content[:self.result_chars - len(note)] + note if self.result_chars > len(note) * 2 \
                else content[:self.result_chars]
            truncated = True
        with self._lock:
            if self._used + len(content) > self.reply_chars:
                content, truncated = (f"[result withheld: {len(content):,} characters, and this reply's tool results "
                                      f"may not exceed {self.reply_chars:,} characters in all; answer with what "
                                      "you have]"), True
            else:
                self._used += len(content)
        if (content, truncated) == (result.content, result.truncated):
            return result
        return ToolResult(result.call_id, result.name, result.arguments, content, result.error, result.duration_s,
                          truncated, result.round)

    def _log(self, call: AnyCall, result: ToolResult, duration_s: float) -> None:
        offered = {spec.name for spec in self.specs()}
        # the model writes the name: only an offered one is logged (no forged log lines)
        tool = call.name if call.name in offered else "(not offered)"
        outcome = result.error or "ok"
        log.info("tool call: visitor=%s tool=%s round=%d outcome=%s duration=%.3fs result_chars=%d",
                 self.visitor, tool, result.round, outcome, duration_s, len(result.content),
                 extra={"visitor": self.visitor, "tool": tool, "round": result.round, "outcome": outcome,
                        "duration_s": duration_s, "result_chars": len(result.content)})
