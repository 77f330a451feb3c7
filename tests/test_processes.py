"""The /proc helpers that stop process trees and sample workers' memory."""

import os
import subprocess
import sys
import time

import pytest

from mnist_study.processes import alive, descendants

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_descendants_finds_grandchildren_and_alive_tells_the_living_from_the_dead():
    # sh starts a sleep of its own: a grandchild of this process.
    shell = subprocess.Popen(["sh", "-c", "sleep 30 & wait"])
    try:
        deadline = time.monotonic() + 10
        while not (below := descendants(shell.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(below) == 1 and alive(below[0])
        assert shell.pid in descendants(os.getpid())
        sleeper = below[0]
        os.kill(sleeper, 9)
        shell.wait(10)
        assert not alive(sleeper)  # reaped by sh, gone from /proc
        assert not alive(shell.pid)  # reaped by wait()
    finally:
        shell.kill()
        shell.wait()


def test_a_zombie_is_not_alive():
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while alive(child.pid) and time.monotonic() < deadline:  # exited, not reaped: a zombie
        time.sleep(0.05)
    assert not alive(child.pid)
    child.wait()


def test_an_unknown_process_has_no_descendants():
    assert descendants(2**22 + 12345) == []
    assert not alive(2**22 + 12345)
