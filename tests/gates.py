"""Holding a tiny model mid-reply for as long as a test needs, instead of pacing it with sleeps."""
from __future__ import annotations

import threading


class ForwardGate:
    """Wraps a model's ``forward``: ``computed`` is set at every pass; once armed, the
    ``after``-th pass sets ``reached`` and waits for ``release``: the reply is certainly still
    streaming while the test acts (Stop, a reload), whatever the machine's load."""

    def __init__(self) -> None:
        self.after = 0
        self.calls = 0
        self.computed = threading.Event()
        self.reached = threading.Event()
        self.release = threading.Event()

    def arm(self, after: int) -> None:
        self.after, self.calls = after, 0
        self.reached.clear()
        self.release.clear()

    def forward(self, forward):
        def gated(*args, **kwargs):
            self.computed.set()
            self.calls += 1
            if self.after and self.calls == self.after:
                self.reached.set()
                assert self.release.wait(60), "the test never released the model"
            return forward(*args, **kwargs)
        return gated
