"""Waiting on other processes, shared by the tests (no pytest needed: ``openai_loopback`` runs alone too).

- :func:`wait_until_serving`: a server process is up (its URL answers). No event crosses the
  process boundary there, so this is the one bounded poll: on the URL, with a deadline, failing
  at once if the process exits.
- :class:`ProcessMarker`: a named pipe another process writes to when it gets somewhere; waiting
  on it blocks until it has written (``select``: no polling), and returns what it wrote.
- :func:`processes_gone`: processes have exited (``pidfd``: the kernel says so; no polling).
"""
from __future__ import annotations

import os
import select
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

POLL_S = 0.1  # between two tries of a URL while its server comes up


def wait_until_serving(url: str, process: subprocess.Popen | None = None, timeout: float = 60.0,
                       log: Path | None = None, any_status: bool = False, what: str = "the server") -> None:
    """Return once ``url`` answers 200 (any HTTP status with ``any_status``: e.g. a 401 without a
    key means it is up). RuntimeError, with the end of ``log``, if ``process`` exits first or
    ``timeout`` s pass; the caller stops the process."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode}:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError:
            if any_status:
                return
        except OSError:  # not listening yet (URLError is an OSError)
            pass
        if time.monotonic() >= deadline:
            raise RuntimeError(f"{what} did not answer {url} within {timeout:g} s:\n{_tail(log)}")
        time.sleep(POLL_S)


def _tail(log: Path | None, chars: int = 3000) -> str:
    try:
        return log.read_text(errors="replace")[-chars:] if log else ""
    except OSError:
        return ""


class ProcessMarker:
    """A named pipe at ``path``: hand the path to another process, which opens it and writes (a
    plain ``open(path, "w").write(...)``) when it gets somewhere; :meth:`wait` blocks until it
    has written and closed it, and returns the text. The read end is open from the start, so the
    writer never blocks, and what it wrote waits in the pipe if nobody waits yet."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        os.mkfifo(self.path)
        self._fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        self._text: str | None = None

    def wait(self, timeout: float = 20.0) -> str:
        """What the other process wrote; AssertionError if it has not within ``timeout`` s."""
        if self._text is None:
            chunks: list[bytes] = []
            deadline = time.monotonic() + timeout
            while True:
                ready, _, _ = select.select([self._fd], [], [], max(0.0, deadline - time.monotonic()))
                assert ready, f"nothing was written to {self.path} within {timeout:g} s"
                chunk = os.read(self._fd, 65536)
                if not chunk:  # the writer closed it
                    break
                chunks.append(chunk)
            self._text = b"".join(chunks).decode()
            self.close()
        return self._text

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()

    def __str__(self) -> str:
        return str(self.path)


def processes_gone(pids: list[int], timeout: float = 5.0) -> bool:
    """Whether every process in ``pids`` has exited within ``timeout`` s (a zombie waiting to be
    reaped counts as gone; SIGKILL is delivered asynchronously, so a killed process may run for
    a moment). Waits on pidfds, which the kernel makes readable as each process exits."""
    fds = []
    try:
        for pid in pids:
            try:
                fds.append(os.pidfd_open(pid))
            except ProcessLookupError:  # exited and reaped already
                pass
        deadline = time.monotonic() + timeout
        pending = set(fds)
        while pending:
            ready, _, _ = select.select(list(pending), [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return False
            pending -= set(ready)
        return True
    finally:
        for fd in fds:
            os.close(fd)
