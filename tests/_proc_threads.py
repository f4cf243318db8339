"""Test helpers: what the kernel says about a process's threads and its descendants (Linux /proc)."""

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


def descendants(pid: int) -> dict[int, int]:
    """Every live process below ``pid`` (children, their children, ...): {pid: parent pid}."""
    parent: dict[int, int] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                parent[int(p.name)] = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):  # ended while being read
                continue
    out: dict[int, int] = {}
    todo = [pid]
    while todo:
        up = todo.pop()
        for child, ppid in parent.items():
            if ppid == up:
                out[child] = up
                todo.append(child)
    return out
