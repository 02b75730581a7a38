"""The built-in ``code_interpreter`` tool (Qwen-Agent's name): runs Python code, returns its output.

Every call runs the code in a new process: ``python -I -u`` (isolated mode: no ``PYTHON*``
variables, no user site-packages, unbuffered so stdout and stderr interleave as written) in a fresh
temporary folder that is its working directory and is removed afterwards. Limits: wall time (the
call's ``timeout``), address space (``RLIMIT_AS``, 1 GiB by default), CPU time (the timeout plus
one second by default), size of files written (``RLIMIT_FSIZE``), and the output kept (20,000
characters of stdout and stderr together by default; the rest is cut, and the result says so). The
environment is minimal (``PATH``, ``LANG``, ``HOME`` and ``TMPDIR`` set to the folder, one thread for
the numeric libraries): the app's variables, tokens included, are not passed on. The process starts
a new session, so on timeout or cancel its whole process group is killed (and once the code ends,
whatever it left running in the background is killed too).

The limits are set by the child itself before it runs the code (a short launcher given with
``-c``), not by ``preexec_fn``, which is unsafe in a threaded program like the app.

This is NOT a security sandbox: the code runs with the app's user rights, can read that user's
files and reach the network. The tool is therefore off unless turned on, and the hosted mode never
turns it on (the caller enforces both).
"""
from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from core.tools import ToolFailure, ToolOutput, ToolSpec

NAME = "code_interpreter"
DEFAULT_MEMORY_MB = 1024  # `import torch` alone needs about 1 GiB of address space (512 MiB is not enough)
DEFAULT_OUTPUT_CHARS = 20_000
DEFAULT_FILE_MB = 64
_POLL_S = 0.05  # how often a running call looks at its cancel event

SPEC = ToolSpec(
    name=NAME,
    description=("Run Python 3 code and return what it printed (stdout and stderr, and the traceback when it "
                 "fails). Each call starts a fresh process in an empty folder: nothing is kept between calls. "
                 "print() every result you want to see."),
    parameters={"type": "object",
                "properties": {"code": {"type": "string", "description": "The Python code to run."}},
                "required": ["code"]},
    source=NAME,
)

# Runs in the child: set the limits, then run main.py as __main__, hiding this launcher's frame
# from tracebacks. argv: main.py, address-space bytes, CPU seconds, file-size bytes (0: no limit).
_LAUNCHER = """\
import resource, sys, traceback, types
_path, _limits = sys.argv[1], ((resource.RLIMIT_AS, int(sys.argv[2])), (resource.RLIMIT_CPU, int(sys.argv[3])),
                               (resource.RLIMIT_FSIZE, int(sys.argv[4])))
for _limit, _value in _limits:
    if _value > 0:  # CPU: SIGXCPU at the soft limit; at the hard one (soft + 1 s), SIGKILL
        resource.setrlimit(_limit, (_value, _value + (_limit == resource.RLIMIT_CPU)))
sys.excepthook = lambda kind, value, tb: traceback.print_exception(kind, value, tb.tb_next if tb else tb)
sys.argv = [_path]
with open(_path, encoding="utf-8") as _file:
    _code = compile(_file.read(), _path, "exec")
_main = types.ModuleType("__main__")
_main.__file__ = _path
sys.modules["__main__"] = _main
exec(_code, _main.__dict__)
"""


class CodeInterpreter:
    """The ``code_interpreter`` tool source (see the module docstring for what a call does)."""

    name = NAME

    def __init__(self, *, memory_mb: int = DEFAULT_MEMORY_MB, cpu_seconds: int | None = None,
                 max_output_chars: int = DEFAULT_OUTPUT_CHARS, file_mb: int = DEFAULT_FILE_MB,
                 python: str = sys.executable) -> None:
        """``cpu_seconds`` None: the call's timeout plus one second; ``memory_mb`` / ``file_mb`` 0:
        no limit."""
        self.memory_mb = memory_mb
        self.cpu_seconds = cpu_seconds
        self.max_output_chars = max_output_chars
        self.file_mb = file_mb
        self.python = python

    def tools(self) -> list[ToolSpec]:
        return [SPEC]

    def close(self) -> None:
        """Nothing to release: every call cleans up after itself."""

    def call(self, name: str, arguments: dict[str, Any], cancel: threading.Event, timeout: float) -> ToolOutput:
        """Run ``arguments["code"]``. A non-zero exit is an ``is_error`` output ending with the exit
        code; raises ``TimeoutError`` after ``timeout`` seconds and :class:`ToolFailure`
        ("cancelled") within about 50 ms of ``cancel`` being set, the process group killed."""
        if name != NAME:
            raise ToolFailure(f"the code interpreter has no tool {name!r}")
        code = arguments.get("code")
        if not isinstance(code, str):
            raise ToolFailure('the code_interpreter tool needs "code", a string of Python code')
        if cancel.is_set():
            raise ToolFailure("cancelled")
        folder = tempfile.mkdtemp(prefix="code-interpreter-")
        try:
            with open(os.path.join(folder, "main.py"), "w", encoding="utf-8") as file:
                file.write(code)
            return self._run(folder, cancel, timeout)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _run(self, folder: str, cancel: threading.Event, timeout: float) -> ToolOutput:
        cpu = self.cpu_seconds if self.cpu_seconds is not None else math.ceil(timeout) + 1
        command = [self.python, "-I", "-u", "-X", "utf8", "-c", _LAUNCHER, "main.py",
                   str(self.memory_mb * 2**20), str(cpu), str(self.file_mb * 2**20)]
        try:
            process = subprocess.Popen(command, cwd=folder, env=_environment(folder), stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as err:
            raise ToolFailure(f"cannot start Python ({self.python}): {err.strerror or err}") from None
        output = _Output(self.max_output_chars)
        reader = threading.Thread(target=output.read_all, args=(process.stdout,), daemon=True)
        reader.start()
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    process.wait(max(0.0, min(_POLL_S, deadline - time.monotonic())))
                    break
                except subprocess.TimeoutExpired:
                    pass
                if cancel.is_set():
                    raise ToolFailure("cancelled")
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"the code ran longer than {timeout:g} s and was stopped")
        finally:
            _kill_group(process)  # also what the code left running in the background
            reader.join(5.0)  # still reading: a process that left the group holds the pipe; let it be
            if not reader.is_alive():
                process.stdout.close()  # type: ignore[union-attr]
        text = output.text().rstrip("\n")
        status = process.returncode
        if status == 0:
            return ToolOutput(text or "(no output: print() the results you want to see)")
        why = _signal_reason(-status, cpu) if status < 0 else f"exit code {status}"
        return ToolOutput(f"{text}\n{why}" if text else why, is_error=True)


class _Output:
    """Collects the child's combined output, keeping the first ``limit`` characters (and draining
    the rest, so that the child never blocks on a full pipe)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.kept = bytearray()
        self.total = 0

    def read_all(self, stream: Any) -> None:
        keep = self.limit * 4 + 4  # UTF-8: at most 4 bytes per character
        for chunk in iter(lambda: stream.read1(65536), b""):
            self.total += len(chunk)
            if len(self.kept) < keep:
                self.kept += chunk[:keep - len(self.kept)]

    def text(self) -> str:
        text = self.kept.decode("utf-8", "replace")
        if len(text) <= self.limit and self.total == len(self.kept):
            return text
        return (text[:self.limit]
                + f"\n[output truncated: {self.total:,} bytes in all, the first {self.limit:,} characters shown]")


def _environment(folder: str) -> dict[str, str]:
    """A minimal environment: nothing of the app's but PATH."""
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": folder, "TMPDIR": folder, "LANG": "C.UTF-8",
           "MPLBACKEND": "Agg"}
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = "1"  # numeric libraries reserve memory per thread: with many, the memory limit bites
    return env


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def _signal_reason(number: int, cpu_seconds: int) -> str:
    if number == signal.SIGXCPU:
        return f"stopped: the CPU time limit ({cpu_seconds} s) was exceeded"
    if number == signal.SIGXFSZ:
        return "stopped: a file grew past the file size limit"
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    return f"killed by {name}"
