"""No silent skips (tests/conftest.py): a skipped test fails unless ``ALLOWED_SKIPS`` lists it with
its reason; a whole module skipped at import is a collection error. Every test has a time limit
(pytest.ini). Checked on a throwaway test folder run by pytest in a subprocess, with this
conftest."""
from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ALLOWED_SKIPS

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(120)

SKIPPING = '''
import pytest

def test_skipped_inside():
    pytest.skip("no GPU here")

@pytest.mark.skipif(True, reason="chromium is missing")
def test_skipped_by_mark():
    pass

def test_listed():
    pytest.skip("a listed reason")

@pytest.mark.xfail(reason="a known bug", strict=True)
def test_expected_failure():
    assert False

def test_passes():
    pass
'''


def run_pytest(folder: Path, allowed: dict[str, str], *files: str) -> subprocess.CompletedProcess:
    conftest = (ROOT / "tests" / "conftest.py").read_text(encoding="utf-8")
    listed = "ALLOWED_SKIPS: dict[str, str] = {}"
    assert listed in conftest
    (folder / "conftest.py").write_text(conftest.replace(listed, f"ALLOWED_SKIPS: dict[str, str] = {allowed!r}"),
                                        encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-c", "/dev/null",
                           "--rootdir", str(folder), *files], cwd=folder, capture_output=True, text=True, timeout=90)


def test_an_unlisted_skip_fails_a_listed_one_is_a_skip(tmp_path):
    (tmp_path / "test_some.py").write_text(SKIPPING, encoding="utf-8")
    done = run_pytest(tmp_path, {"test_some.py::test_listed": "stands in for a listed reason"}, "test_some.py")
    out = done.stdout
    assert done.returncode == 1, out
    # a skip inside the test fails it; a skip mark fails its set-up (an error); xfail is left alone
    assert "1 failed, 1 passed, 1 skipped, 1 xfailed, 1 error" in out, out
    assert "test_some.py::test_skipped_inside was skipped (Skipped: no GPU here), and it is not on the allow-list" \
        in out, out
    assert "test_some.py::test_skipped_by_mark was skipped (Skipped: chromium is missing)" in out, out
    assert "SKIPPED [1] test_some.py:12: a listed reason" in out, out


def test_a_module_skipped_at_import_is_a_collection_error(tmp_path):
    (tmp_path / "test_mod.py").write_text("import pytest\npytest.importorskip('no_such_package_here')\n\n"
                                          "def test_a():\n    pass\n", encoding="utf-8")
    done = run_pytest(tmp_path, {}, "test_mod.py")
    assert done.returncode != 0 and "ERROR collecting test_mod.py" in done.stdout, done.stdout
    assert "could not import 'no_such_package_here'" in done.stdout and "allow-list" in done.stdout, done.stdout
    listed = run_pytest(tmp_path, {"test_mod.py": "stands in for a listed module"}, "test_mod.py")
    assert listed.returncode == 5 and "1 skipped" in listed.stdout, listed.stdout  # 5: no test ran


def test_the_allow_list_is_short_and_says_why():
    assert len(ALLOWED_SKIPS) <= 3 and all(reason.strip() for reason in ALLOWED_SKIPS.values())


def test_every_test_has_a_time_limit(tmp_path):
    ini = configparser.ConfigParser()
    ini.read(ROOT / "pytest.ini")
    assert 0 < int(ini["pytest"]["timeout"]) <= 600
    assert ini["pytest"]["timeout_method"] in ("signal", "thread")
    # the same settings with a 1 s limit: a test that hangs fails, and the next one still runs
    ini["pytest"]["timeout"] = "1"
    with (tmp_path / "pytest.ini").open("w") as file:
        ini.write(file)
    (tmp_path / "test_hang.py").write_text("import threading\n\ndef test_hangs():\n    threading.Event().wait()\n\n"
                                           "def test_after():\n    pass\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c",
                           str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path), "test_hang.py"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stdout.startswith("F."), done.stdout[-2000:]  # failed, then passed
    assert "Failed: Timeout (>1.0s) from pytest-timeout" in done.stdout, done.stdout[-2000:]
