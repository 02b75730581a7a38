"""The built-in code_interpreter tool (playground/tools/code_interpreter.py): output, limits, cleanup."""
from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from processes import ProcessMarker, processes_gone

from core.tools import ToolFailure, ToolSource
from playground.tools.code_interpreter import CodeInterpreter

NEVER = threading.Event()  # a cancel event nobody sets


def run(code: str, timeout: float = 20, **limits):
    return CodeInterpreter(**limits).call("code_interpreter", {"code": code}, NEVER, timeout)


def all_gone(pids: ProcessMarker, timeout: float = 5.0) -> bool:
    """Whether every process the code recorded in ``pids`` is gone within ``timeout`` s."""
    recorded = [int(pid) for pid in pids.wait().split()]
    assert len(recorded) == 2, recorded
    return processes_gone(recorded, timeout)


# Writes the PIDs of the code's process and of a child it starts (same process group) to PIDS
# (a ProcessMarker's pipe: the test waits on it).
SPAWN_AND_RECORD = """\
import os, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
with open(PIDS, "w") as file:
    file.write(f"{os.getpid()} {child.pid}")
"""


def test_the_spec():
    interpreter = CodeInterpreter()
    assert isinstance(interpreter, ToolSource) and interpreter.name == "code_interpreter"
    [spec] = interpreter.tools()
    assert spec.to_openai()["function"]["name"] == "code_interpreter" and spec.source == "code_interpreter"
    assert spec.parameters["required"] == ["code"]
    assert spec.parameters["properties"]["code"]["type"] == "string"
    assert "print" in spec.description
    with pytest.raises(ToolFailure, match="no tool 'python'"):
        interpreter.call("python", {"code": "print(1)"}, NEVER, 10)
    with pytest.raises(ToolFailure, match='needs "code"'):
        interpreter.call("code_interpreter", {"source": "print(1)"}, NEVER, 10)


def test_prints_come_back():
    output = run("import sys\nprint(6 * 7)\nprint('to stderr', file=sys.stderr)\nprint('é ✓')")
    assert output.text == "42\nto stderr\né ✓" and not output.is_error
    assert run("x = 1").text == "(no output: print() the results you want to see)"


def test_each_call_runs_in_a_fresh_folder_removed_afterwards():
    code = ("import json, os\nprint(json.dumps([os.getcwd(), sorted(os.listdir('.'))]))\n"
            "open('left.txt', 'w').write('x')")
    first_dir, first_files = json.loads(run(code).text)
    second_dir, second_files = json.loads(run(code).text)
    assert first_files == second_files == ["main.py"]  # nothing left over from the first call
    assert first_dir != second_dir
    assert not os.path.exists(first_dir) and not os.path.exists(second_dir)


def test_errors_and_exit_codes():
    failed = run("print('partial')\n1 / 0")
    assert failed.is_error
    assert failed.text.startswith('partial\nTraceback (most recent call last):\n  File "main.py", line 2, in <module>')
    assert failed.text.endswith("ZeroDivisionError: division by zero\nexit code 1")
    assert "<string>" not in failed.text  # the launcher's frame is hidden
    exited = run("import sys\nprint('bye')\nsys.exit(3)")
    assert exited.text == "bye\nexit code 3" and exited.is_error
    syntax = run("def f(:")
    assert syntax.is_error and "SyntaxError" in syntax.text and 'File "main.py", line 1' in syntax.text


def test_the_environment_is_not_inherited(monkeypatch):
    monkeypatch.setenv("PLAYGROUND_TEST_SECRET", "s3cr3t")
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    names = json.loads(run("import json, os\nprint(json.dumps(sorted(os.environ)))").text)
    assert "PLAYGROUND_TEST_SECRET" not in names and "HF_TOKEN" not in names
    assert set(names) <= {"PATH", "HOME", "TMPDIR", "LANG", "MPLBACKEND", "OMP_NUM_THREADS",
                          "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "LC_CTYPE"}


def test_memory_limit():
    output = run("data = bytearray(512 * 2**20)\nprint('allocated')", memory_mb=256)
    assert output.is_error
    assert "MemoryError" in output.text and output.text.endswith("exit code 1") and "allocated" not in output.text
    assert run("data = bytearray(64 * 2**20)\nprint('allocated')", memory_mb=256).text == "allocated"


def test_cpu_time_limit():
    started = time.monotonic()
    output = run("while True:\n    pass", timeout=30, cpu_seconds=1)
    assert output.is_error and output.text == "stopped: the CPU time limit (1 s) was exceeded"
    assert time.monotonic() - started < 10


def test_output_is_capped_and_a_flood_does_not_block():
    output = run("print('x' * 5000)", max_output_chars=1000)
    assert output.text == "x" * 1000 + "\n[output truncated: 5,001 bytes in all, the first 1,000 characters shown]"
    flood = run("import sys\nfor _ in range(200):\n    sys.stdout.write('y' * 50_000)\nprint('end', file=sys.stderr)")
    assert flood.text.startswith("y" * 20_000) and "10,000,004 bytes in all" in flood.text and not flood.is_error


def test_timeout_kills_the_loop_and_its_process_group(tmp_path):
    pids = ProcessMarker(tmp_path / "pids")
    code = f"PIDS = {str(pids)!r}\n" + SPAWN_AND_RECORD + "while True:\n    pass\n"
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="^the code ran longer than 2 s and was stopped$"):
        run(code, timeout=2)
    assert time.monotonic() - started < 5
    assert pids.wait(timeout=0)  # the code did run before the timeout
    assert all_gone(pids)


def test_background_processes_do_not_outlive_the_call(tmp_path):
    pids = ProcessMarker(tmp_path / "pids")
    output = run(f"PIDS = {str(pids)!r}\n" + SPAWN_AND_RECORD + "print('done')")
    assert output.text == "done"
    assert all_gone(pids)


def test_cancel_stops_the_code_at_once(tmp_path):
    pids = ProcessMarker(tmp_path / "pids")
    code = f"PIDS = {str(pids)!r}\n" + SPAWN_AND_RECORD + "import time\ntime.sleep(120)\n"
    cancel = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(CodeInterpreter().call, "code_interpreter", {"code": code}, cancel, 120)
        pids.wait()  # the code is running
        cancel.set()
        cancelled_at = time.monotonic()
        with pytest.raises(ToolFailure, match="^cancelled$"):
            call.result(timeout=10)
        assert time.monotonic() - cancelled_at < 1.0
    assert all_gone(pids)
