"""Run a console script in a child process, slowed down per image read, and SIGKILL it at a chosen moment.

The child imports ``backbone.images`` first and wraps ``read_image`` with a sleep, so the modules imported
after it (the data sets of every training command) read slowly: the test can see a checkpoint appear and
kill the process before it finishes, without timing luck.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable


def lines(path: Path) -> int:
    """Number of lines in ``path`` (0 when it does not exist yet)."""
    return len(path.read_text().splitlines()) if path.exists() else 0

REPO = Path(__file__).resolve().parents[2]

_SLOW_MAIN = """
import os, sys, time
import backbone.images as images
_read, _delay, _log = images.read_image, float(sys.argv[1]), os.environ.get("FAULTS_READ_LOG")
def slow_read(*args, **kwargs):
    time.sleep(_delay)
    if _log:  # one line per image read, for the test to watch progress
        with open(_log, "a") as f:
            f.write(str(args[0]) + "\\n")
    return _read(*args, **kwargs)
images.read_image = slow_read
from {module} import main
sys.exit(main(sys.argv[2:]))
"""


def start_slowed(module: str, argv: list[str], *, delay: float, read_log: Path | None = None) -> subprocess.Popen:
    """Start ``module.main(argv)`` (``backbone.cli`` or ``detect.cli``) in a child, ``delay`` s per image read;
    with ``read_log``, the child appends each image path it reads to that file."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "GOINGDEEPER_OFFLINE": "1"}
    if read_log is not None:
        env["FAULTS_READ_LOG"] = str(read_log)
    return subprocess.Popen([sys.executable, "-c", _SLOW_MAIN.format(module=module), str(delay), *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], *, timeout: float = 240,
              poll: float = 0.02) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` is true. Fails if it exits first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the process ended (code {proc.returncode}) before it could be killed:\n{err[-2000:]}")
        try:
            if ready():
                proc.send_signal(signal.SIGKILL)
                proc.communicate(timeout=60)
                assert proc.returncode == -signal.SIGKILL
                return
        except (OSError, EOFError, RuntimeError):  # a file being replaced while we look: look again
            pass
        time.sleep(poll)
    proc.kill()
    proc.communicate()
    raise AssertionError(f"condition not reached within {timeout} s")
