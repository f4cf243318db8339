"""Child processes that end with the process that started them, however it ends.

A benchmark killed with `kill -9` (or by a session's time limit) once left its SB3 learner using
a core for hours, slowing everything after it. Linux's PR_SET_PDEATHSIG has the kernel send the
child a signal when its parent dies; elsewhere the children are plain subprocesses.

Caveat of PR_SET_PDEATHSIG: "parent" is the thread that started the child. Start tied children
from a thread that lives as long as the process (the main thread), or they end with the thread.
Not for the twin: the distributed collector leaves its twin running on purpose and stops it by
its recorded PID when the robot's next collector starts.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from typing import Any, Callable

__all__ = ["run_tied"]

_PR_SET_PDEATHSIG = 1


def _tie_to(parent_pid: int) -> Callable[[], None]:
    def tie() -> None:  # runs in the child, between fork and exec
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent_pid:  # the parent died before the tie was made
            os.kill(os.getpid(), signal.SIGTERM)
    return tie


def run_tied(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    """subprocess.run(cmd, capture_output=True, text=True, **kwargs) whose child gets SIGTERM
    when this process dies (Linux; a plain subprocess.run elsewhere)."""
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    if sys.platform == "linux":
        kwargs["preexec_fn"] = _tie_to(os.getpid())
    return subprocess.run(cmd, **kwargs)
