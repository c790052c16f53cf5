"""A process started in a group of its own and stopped together with every process it started.

In an installed Slicer, PythonSlicer is a launcher (CTKAppLauncher) that runs the real interpreter as its child and
passes no signal on, so stopping the launcher alone would leave the work running. The process therefore gets a group
of its own (POSIX: a new session; Windows: a new process group) and stopping it stops the group (POSIX: SIGTERM,
then SIGKILL for what is left) or, on Windows, the process tree (taskkill /T).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

WINDOWS = sys.platform == "win32"
POLL_SECONDS = 0.02


def group_options() -> dict:
    """Popen keyword arguments that start the process in a group of its own (on Windows without a console
    window)."""
    if WINDOWS:
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW}
    return {"start_new_session": True}


def stop_group(process: subprocess.Popen, seconds: float) -> None:
    """Stop `process` (started with `group_options`) and every process it started: asked to end, killed when
    they have not ended after `seconds`. Returns once none of them runs (or, should a killed one hang in the
    kernel, `seconds` after the kill)."""
    if WINDOWS:
        _stop_tree(process, seconds)
        return
    group = process.pid  # a new session's leader: its id is the group's
    _signal_group(group, signal.SIGTERM)
    if not _ended(process, group, seconds):
        _signal_group(group, signal.SIGKILL)
        _ended(process, group, seconds)


def _stop_tree(process: subprocess.Popen, seconds: float) -> None:
    """Windows: kill the tree while its root runs (taskkill finds the children through it), then reap the root."""
    if process.poll() is None:
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, creationflags=subprocess.CREATE_NO_WINDOW)
    try:
        process.wait(seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _signal_group(group: int, number: int) -> None:
    try:
        os.killpg(group, number)
    except ProcessLookupError:  # none of them is left
        pass


def _ended(process: subprocess.Popen, group: int, seconds: float) -> bool:
    """Wait until `process` has ended (and is reaped) and no process of its group runs; False after `seconds`."""
    deadline = time.monotonic() + seconds
    while process.poll() is None or group_runs(group):
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True


def group_runs(group: int) -> bool:
    """Whether a process of process group `group` runs. An ended process that nobody has reaped yet (a zombie, as
    an init that does not reap adopted children leaves) does not count: it holds no resources but its entry."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    processes = Path("/proc")
    if not processes.is_dir():  # macOS: launchd reaps adopted children, so the signal's answer holds
        return True
    for stat in processes.glob("[0-9]*/stat"):
        try:
            state, _, process_group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError, ValueError):  # ended while being read
            continue
        if int(process_group) == group and state not in ("Z", "X"):
            return True
    return False
