"""Test helper: what the kernel says about each thread of a process (Linux /proc)."""

from __future__ import annotations

import os
from pathlib import Path


def threads(pid: int) -> list[dict]:
    """Scheduling policy, SCHED_FIFO priority, niceness and child pids of each live thread of a process.

    Threads that end between the listing and the query (an MJPEG request's worker, a Ray worker's
    helper) are left out rather than failing the read.
    """
    out = []
    for t in os.listdir(f"/proc/{pid}/task"):
        tid = int(t)
        try:
            out.append({"tid": tid, "policy": os.sched_getscheduler(tid), "priority": os.sched_getparam(tid).sched_priority,
                        "nice": os.getpriority(os.PRIO_PROCESS, tid),
                        "children": [int(c) for c in Path(f"/proc/{pid}/task/{t}/children").read_text().split()]})
        except (ProcessLookupError, FileNotFoundError):
            continue
    return out
