"""Crash-safe file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import io
import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory, fsync, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_checkpoint(obj: dict[str, Any], path: str | os.PathLike) -> None:
    """``torch.save`` ``obj`` atomically; it must hold only tensors and plain Python values."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt, or not one of ours."""


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no pickled code runs); clear error if corrupt."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {path}") from None
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"checkpoint {path} is corrupt or not a robosac checkpoint: {exc}") from exc
    if not isinstance(obj, dict) or "agent" not in obj:
        raise CheckpointError(f"checkpoint {path} is not a robosac checkpoint (no 'agent' entry)")
    return obj


class JsonLines:
    """An append-only JSON-lines log (a run's metrics.jsonl), one object per line, line-buffered.

    Reopening drops a last line without its newline (a write cut short by kill -9), so lines
    appended after a resume never merge into a broken one."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if self.path.exists():
            data = self.path.read_bytes()
            if data and not data.endswith(b"\n"):
                with self.path.open("r+b") as f:
                    f.truncate(data.rfind(b"\n") + 1)
        self._file = self.path.open("a", buffering=1)

    def write(self, kind: str, **values: Any) -> None:
        self._file.write(json.dumps({"kind": kind, "time": time.time(), **values}) + "\n")

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def capture_rng_state(numpy_generators: Mapping[str, np.random.Generator]) -> dict[str, Any]:
    """Python ``random``, the given numpy generators and torch's CPU RNG, as ``weights_only``-safe values.

    numpy's bit-generator state holds 128-bit integers, so it is kept as a JSON string; Python's
    Mersenne-Twister state as plain lists of ints; torch's as its uint8 tensor.
    """
    version, internal, gauss_next = random.getstate()
    return {
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
        "numpy": {name: json.dumps(gen.bit_generator.state) for name, gen in numpy_generators.items()},
        "torch": torch.get_rng_state(),
    }


def restore_rng_state(state: Mapping[str, Any], numpy_generators: Mapping[str, np.random.Generator]) -> None:
    """Inverse of :func:`capture_rng_state`; raises CheckpointError if a generator is missing or foreign."""
    try:
        py = state["python"]
        random.setstate((int(py["version"]), tuple(int(x) for x in py["state"]), py["gauss_next"]))
        for name, gen in numpy_generators.items():
            gen.bit_generator.state = json.loads(state["numpy"][name])
        torch.set_rng_state(state["torch"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint RNG state is missing or unusable: {type(exc).__name__}: {exc}") from exc
