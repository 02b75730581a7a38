"""Ask before each call: the tool loop waits here until the user runs or skips a call.

One :class:`ReplyControl` per reply in progress: its ``stop`` event ends the generation and any
tool call; :meth:`ReplyControl.wait` blocks the loop's thread until :meth:`ReplyControl.decide`
(the Run / Skip buttons, from another request's thread), Stop, or the time limit (a call left
unanswered is skipped: a reply waiting on nobody holds its model).
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from core.tools import ToolCall

APPROVAL_TIMEOUT_S = 300.0


class ReplyControl:
    def __init__(self, timeout_s: float = APPROVAL_TIMEOUT_S) -> None:
        self.stop = threading.Event()
        self.timeout_s = timeout_s
        self._changed = threading.Condition()
        self._waiting: str | None = None  # the call id waiting for a decision
        self._decision: bool | None = None

    @property
    def waiting_for(self) -> str | None:
        with self._changed:
            return self._waiting

    def next_waiting(self, timeout: float | None = None) -> str | None:
        """Block until a call waits for the user's decision; its id (None after ``timeout``)."""
        with self._changed:
            self._changed.wait_for(lambda: self._waiting is not None, timeout)
            return self._waiting

    def wait(self, call: ToolCall) -> bool:
        """Block until the user decides on ``call`` (True: run it). False when skipped, at Stop,
        or after ``timeout_s``."""
        with self._changed:
            self._waiting, self._decision = call.id, None
            self._changed.notify_all()  # a waiting call is news (next_waiting)
            self._changed.wait_for(lambda: self._decision is not None or self.stop.is_set(), self.timeout_s)
            decision = bool(self._decision) and not self.stop.is_set()
            self._waiting, self._decision = None, None
            return decision

    def decide(self, call_id: str, run: bool) -> bool:
        """Run (True) or skip the call ``call_id``; False if no such call is waiting."""
        with self._changed:
            if self._waiting != call_id:
                return False
            self._decision = run
            self._changed.notify_all()
            return True

    def request_stop(self) -> None:
        """Stop: the generation, a running tool and a waiting call all end."""
        with self._changed:
            self.stop.set()
            self._changed.notify_all()


class LiveReplies:
    """The replies in progress by key (a browser session): Stop and Run / Skip find theirs here.
    One per app, not global; an entry lives as long as its reply."""

    def __init__(self) -> None:
        self._controls: dict[str, ReplyControl] = {}
        self._lock = threading.Lock()

    @contextmanager
    def start(self, key: str | None) -> Iterator[ReplyControl]:
        control = ReplyControl()
        if key is None:  # no session (a direct call): nothing can reach it, Stop closes the stream
            yield control
            return
        with self._lock:
            previous = self._controls.get(key)
            self._controls[key] = control
        if previous is not None:  # a new reply of the same session ends the old one
            previous.request_stop()
        try:
            yield control
        finally:
            with self._lock:
                if self._controls.get(key) is control:
                    del self._controls[key]

    def get(self, key: str | None) -> ReplyControl | None:
        with self._lock:
            return self._controls.get(key) if key is not None else None
