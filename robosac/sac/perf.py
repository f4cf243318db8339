"""Process settings that make a CPU learner faster; called by learner entry points, not on import."""

from __future__ import annotations

import ctypes
import ctypes.util

import torch

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Stop glibc handing large freed blocks back to the OS.

    Every update allocates tens of MB of short-lived tensors (image batches, activations); by
    default glibc serves each from fresh mmap'd pages and unmaps them on free, so every update pays
    thousands of page faults (~30% of a pixel update on our 2-core CPU, BENCHMARKS.md). Returns
    False where the C library is not glibc (nothing changed).
    """
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(_M_MMAP_THRESHOLD, 1 << 30) == 1  # serve blocks up to 1 GiB from the heap
    ok &= mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1  # keep up to 1 GiB of freed heap
    return bool(ok)


def flush_denormals() -> bool:
    """Treat denormal floats as zero on this thread and the threads it starts later.

    In real training many gradients are tiny, so Adam's squared-gradient average falls into the
    denormal range, where x86 arithmetic is ~100x slower: the fused Adam step took 0.63 ms of a
    4.4 ms Pendulum update instead of 0.11 ms (BENCHMARKS.md). Values below 1e-38 carry nothing a
    learner needs; a 4 000-step Pendulum run ended with the same eval return to the last digit. Returns False
    where the CPU has no such mode (nothing changed).
    """
    return bool(torch.set_flush_denormal(True))


def tune_learner_process() -> dict[str, bool]:
    """Both settings above, for a process (or thread) about to run SAC updates; what took effect."""
    return {"keep_freed_memory": keep_freed_memory(), "flush_denormals": flush_denormals()}
