"""The speckle2self command line in a separate process, polled without blocking and without Qt.

Its stdout and stderr go to files in the run's own temporary folder (portable, no pipe to fill up, no reader
thread); `poll()` reads what was added since the last call and hands each `--progress json` line to a callback.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import speckle2self
from speckle2self.errors import EXIT_USER_ERROR, UserError

from .process_group import POLL_SECONDS, group_options, stop_group

ERROR_PREFIX = "speckle2self: error: "
STOP_SECONDS = 10
"""How long a terminated process may take to end before it is killed (and its folder to become removable)."""


class ProcessFailed(RuntimeError):
    """The process ended without a result and without a one-line error of its own (a crash or a kill);
    `log` holds what it wrote on stderr."""

    def __init__(self, message: str, log: str):
        super().__init__(message)
        self.log = log


def python_command(python: str | None = None) -> list[str]:
    """The command that runs the speckle2self package: `python` (Slicer's PythonSlicer inside Slicer) or this
    interpreter, `-m speckle2self`."""
    return [python or sys.executable, "-m", "speckle2self"]


def _environment() -> dict[str, str]:
    """This environment with the folder of the speckle2self package in use first on PYTHONPATH, so that the
    child runs the same code (inside Slicer the package lies in the module's folder, not in site-packages)."""
    package_parent = str(Path(speckle2self.__file__).resolve().parents[1])
    paths = [package_parent, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "PYTHONIOENCODING": "utf-8"}


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"ended with exit status {code}"


class CliProcess:
    """One `speckle2self` command running in `folder` (a temporary folder the process owns and removes).

    `poll()` is what a GUI timer calls; `cancel()` stops the process and every process it started (the real
    interpreter behind a launcher). A failed or cancelled process leaves nothing: its folder is removed. After a
    success the caller reads its results there, then calls `close()`.
    """

    def __init__(self, arguments: list[str], folder: Path, on_line: Callable[[dict], None],
                 command: list[str] | None = None):
        self.folder = Path(folder)
        self._on_line = on_line
        self._pending = b""
        self._stdout_path, self._stderr_path = self.folder / "stdout.log", self.folder / "stderr.log"
        with open(self._stdout_path, "wb") as stdout, open(self._stderr_path, "wb") as stderr:
            self.process = subprocess.Popen([*(command or python_command()), *arguments], stdout=stdout,
                                            stderr=stderr, stdin=subprocess.DEVNULL, cwd=self.folder,
                                            env=_environment(), **group_options())
        self._reader = open(self._stdout_path, "rb")

    def poll(self) -> bool:
        """Pass new progress lines to the callback; True while the process runs, False once it succeeded.
        A failed process raises UserError (the command's own one-line error) or ProcessFailed."""
        code = self.process.poll()
        self._read()  # after poll(): an ended process has written all it will
        if code is None:
            return True
        if code != 0:
            error = self._failure(code)
            self.cancel()  # a launcher that died may leave its child
            raise error
        return False

    def cancel(self) -> None:
        """Stop the process and the processes it started, if any still runs, and remove the folder."""
        stop_group(self.process, STOP_SECONDS)
        self.close()

    def close(self) -> None:
        """Remove the folder with everything in it (the process must have ended). Windows may keep a killed
        process's files open for a moment, so removing is retried for a while."""
        if not self._reader.closed:
            self._reader.close()
        deadline = time.monotonic() + STOP_SECONDS
        while True:
            shutil.rmtree(self.folder, ignore_errors=True)
            if not self.folder.exists() or time.monotonic() > deadline:
                return
            time.sleep(POLL_SECONDS)

    def _read(self) -> None:
        lines = (self._pending + self._reader.read()).split(b"\n")
        self._pending = lines.pop()  # an unfinished line waits for its end
        for line in lines:
            if line.startswith(b"{"):
                self._on_line(json.loads(line))

    def _failure(self, code: int) -> Exception:
        log = self._stderr_path.read_text(encoding="utf-8", errors="replace")
        last = next((line for line in reversed(log.splitlines()) if line.strip()), "")
        if code == EXIT_USER_ERROR and last.startswith(ERROR_PREFIX):
            return UserError(last[len(ERROR_PREFIX):])
        detail = f": {last.strip()}" if last else ""
        return ProcessFailed(f"The speckle2self process {_describe_exit(code)}{detail}", log)
