"""The fixtures' child processes die with the test run (tests/child_process.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from child_process import die_with_parent

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has died


def test_a_child_dies_when_its_parent_is_killed_outright():
    # A parent that starts a long sleep through die_with_parent, then is SIGKILLed (no fixture teardown runs).
    code = ("import subprocess, sys, time; from child_process import die_with_parent; "
            "p = subprocess.Popen(die_with_parent(['sleep', '120']), start_new_session=True); "
            "print(p.pid, flush=True); time.sleep(120)")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env, text=True)
    child = int(parent.stdout.readline())
    try:
        time.sleep(0.3)
        assert _alive(child)
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child), "the child outlived its killed parent"
    finally:
        if _alive(child):
            os.kill(child, 9)


def test_without_setpriv_the_command_runs_as_is(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert die_with_parent(["etcd", "--name", "x"]) == ["etcd", "--name", "x"]
