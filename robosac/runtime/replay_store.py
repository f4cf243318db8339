"""Replay transitions on disk as append-only chunk files, so a crash loses at most one flush interval.

Layout: ``DIR/chunk_000000.npz``, ``DIR/chunk_000001.npz``, ... Each chunk is an uncompressed
``.npz`` with one array per field, rows in env-step order: the replay fields as
:class:`robosac.sac.replay.Replay` stores them (``obs.state`` float32, ``obs.pixels`` uint8 —
images stay uint8 —, ``action``, ``reward``, ``next_obs.*``, ``terminated``) plus bookkeeping:
``step`` (int64, the global env-step index of the transition), ``episode`` (int64) and
``episode_end`` (bool: terminated or truncated). Every chunk is written atomically
(:func:`robosac.persist.atomic_write_bytes`: temp file, fsync, rename), so a chunk on disk is
always whole; one that is not (truncated, garbled, other shapes or dtypes) makes :meth:`load`
raise :class:`ReplayStoreError` naming the file — never a silent restart from scratch.

Memory: only the transitions not yet flushed are held (``flush_every`` rows at most); loading
streams chunk by chunk (:meth:`iter_chunks`, :meth:`restore`). With ``keep_last`` the oldest chunks
whose transitions can no longer be in a replay ring of that size are deleted after each flush.
"""

from __future__ import annotations

import io
import re
import time
import zipfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from robosac.persist import atomic_write_bytes

CHUNK_RE = re.compile(r"^chunk_(\d{6,})\.npz$")
BOOKKEEPING: dict[str, tuple[tuple[int, ...], np.dtype]] = {
    "step": ((), np.dtype(np.int64)),
    "episode": ((), np.dtype(np.int64)),
    "episode_end": ((), np.dtype(np.bool_)),
}


class ReplayStoreError(RuntimeError):
    """A chunk file is corrupt, truncated, out of order, or does not match this run's fields."""


class ReplayStore:
    """Append transitions one at a time; they reach disk in atomic chunks.

    ``fields`` maps a field name to (per-row shape, dtype); the bookkeeping fields ``step``,
    ``episode`` and ``episode_end`` are added. A flush happens when ``flush_every`` transitions
    are pending or ``flush_interval_s`` seconds have passed since the last one (checked on
    :meth:`append`), and on :meth:`flush` / :meth:`close`.
    """

    def __init__(
        self,
        directory: str | Path,
        fields: Mapping[str, tuple[tuple[int, ...], Any]],
        flush_every: int = 1000,
        flush_interval_s: float | None = 10.0,
        keep_last: int | None = None,
    ):
        if flush_every < 1:
            raise ValueError(f"flush_every must be >= 1, got {flush_every}")
        self.directory = Path(directory)
        self.fields: dict[str, tuple[tuple[int, ...], np.dtype]] = {
            name: (tuple(int(d) for d in shape), np.dtype(dtype)) for name, (shape, dtype) in fields.items()
        }
        clash = set(self.fields) & set(BOOKKEEPING)
        if clash:
            raise ValueError(f"field names reserved for bookkeeping: {sorted(clash)}")
        self.fields.update(BOOKKEEPING)
        self.flush_every, self.flush_interval_s, self.keep_last = flush_every, flush_interval_s, keep_last
        self._pending: list[dict[str, np.ndarray]] = []
        self._last_flush = time.monotonic()
        existing = self.chunk_paths()
        self._next_index = _chunk_index(existing[-1]) + 1 if existing else 0
        self._next_step: int | None = None  # known after restore()/iter_chunks() or the first append
        self._known: list[tuple[Path, int]] = []  # (chunk, rows) for chunks this process has seen, oldest first

    @classmethod
    def for_replay(cls, directory: str | Path, replay: Any, **kwargs: Any) -> "ReplayStore":
        """A store with the fields of ``replay.arrays`` (a :class:`robosac.sac.replay.Replay`)."""
        fields = {k: (v.shape[1:], v.dtype) for k, v in replay.arrays.items()}
        return cls(directory, fields, **kwargs)

    # ---- writing ------------------------------------------------------------------------------

    def append(self, row: Mapping[str, Any], step: int, episode: int, episode_end: bool) -> bool:
        """Queue one transition (``row`` holds every non-bookkeeping field); True if it flushed."""
        if self._next_step is not None and step != self._next_step:
            raise ValueError(f"replay store expected env step {self._next_step}, got {step}")
        entry = {}
        for name, (shape, dtype) in self.fields.items():
            if name in BOOKKEEPING:
                continue
            value = np.array(row[name], dtype=dtype, copy=True)
            if value.shape != shape:
                raise ValueError(f"replay store field {name!r}: shape {value.shape}, expected {shape}")
            entry[name] = value
        entry["step"], entry["episode"], entry["episode_end"] = np.int64(step), np.int64(episode), np.bool_(episode_end)
        self._pending.append(entry)
        self._next_step = step + 1
        due = len(self._pending) >= self.flush_every or (
            self.flush_interval_s is not None and time.monotonic() - self._last_flush >= self.flush_interval_s
        )
        return self.flush() is not None if due else False

    def flush(self) -> Path | None:
        """Write the pending transitions as the next chunk (atomically); returns its path, if any."""
        self._last_flush = time.monotonic()
        if not self._pending:
            return None
        arrays = {name: np.stack([e[name] for e in self._pending]) for name in self.fields}
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        path = self.directory / f"chunk_{self._next_index:06d}.npz"
        atomic_write_bytes(path, buf.getvalue())
        self._known.append((path, len(self._pending)))
        self._next_index += 1
        self._pending = []
        self._prune()
        return path

    def close(self) -> None:
        self.flush()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _prune(self) -> None:
        """Delete the oldest known chunks whose rows are all older than the last ``keep_last``."""
        if self.keep_last is None:
            return
        while len(self._known) > 1 and sum(n for _, n in self._known[1:]) >= self.keep_last:
            path, _ = self._known.pop(0)
            path.unlink(missing_ok=True)

    # ---- reading ------------------------------------------------------------------------------

    def chunk_paths(self) -> list[Path]:
        """Chunk files on disk, oldest first (temp files of an interrupted write are ignored)."""
        if not self.directory.is_dir():
            return []
        return sorted((p for p in self.directory.iterdir() if CHUNK_RE.match(p.name)), key=_chunk_index)

    def read_chunk(self, path: str | Path) -> dict[str, np.ndarray]:
        """One chunk, validated against this store's fields; :class:`ReplayStoreError` names the file."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
            raise ReplayStoreError(f"replay chunk {path} is corrupt or truncated: {type(exc).__name__}: {exc}") from exc
        if set(arrays) != set(self.fields):
            missing, extra = sorted(set(self.fields) - set(arrays)), sorted(set(arrays) - set(self.fields))
            raise ReplayStoreError(f"replay chunk {path} does not match this run: missing fields {missing}, unexpected {extra}")
        lengths = {len(a) if a.ndim else -1 for a in arrays.values()}
        if len(lengths) != 1 or lengths == {-1} or lengths == {0}:
            raise ReplayStoreError(f"replay chunk {path} is malformed: fields have row counts {sorted(lengths)}")
        for name, (shape, dtype) in self.fields.items():
            a = arrays[name]
            if a.dtype != dtype or a.shape[1:] != shape:
                raise ReplayStoreError(
                    f"replay chunk {path} does not match this run: field {name!r} is {a.dtype} {a.shape[1:]}, "
                    f"expected {dtype} {shape}"
                )
        if len(arrays["step"]) > 1 and not np.all(np.diff(arrays["step"]) == 1):
            raise ReplayStoreError(f"replay chunk {path} is malformed: its env steps are not consecutive")
        return arrays

    def iter_chunks(self) -> Iterator[tuple[Path, dict[str, np.ndarray]]]:
        """Validated chunks, oldest first; checks that env steps continue from chunk to chunk."""
        expected: int | None = None
        known: list[tuple[Path, int]] = []
        for path in self.chunk_paths():
            arrays = self.read_chunk(path)
            first = int(arrays["step"][0])
            if expected is not None and first != expected:
                raise ReplayStoreError(f"replay chunk {path} starts at env step {first}, expected {expected} (a chunk is missing?)")
            expected = int(arrays["step"][-1]) + 1
            known.append((path, len(arrays["step"])))
            yield path, arrays
        self._known = known
        if expected is not None and not self._pending:
            self._next_step = expected

    def load(self) -> list[dict[str, np.ndarray]]:
        """All chunks, oldest first, as dicts of arrays (prefer :meth:`restore` for big replays)."""
        return [arrays for _, arrays in self.iter_chunks()]

    def count(self) -> int:
        """Transitions on disk (reads and validates every chunk)."""
        return sum(len(arrays["step"]) for _, arrays in self.iter_chunks())

    def restore(self, replay: Any) -> dict[str, int]:
        """Refill ``replay`` (a :class:`robosac.sac.replay.Replay`) chunk by chunk from disk.

        Returns ``{"transitions", "next_step", "last_episode", "last_episode_end"}``
        (``next_step`` 0 and ``last_episode`` -1 for an empty store).
        """
        info = {"transitions": 0, "next_step": 0, "last_episode": -1, "last_episode_end": 1}
        for _, arrays in self.iter_chunks():
            replay.add_arrays({k: arrays[k] for k in replay.arrays})
            info["transitions"] += len(arrays["step"])
            info["next_step"] = int(arrays["step"][-1]) + 1
            info["last_episode"] = int(arrays["episode"][-1])
            info["last_episode_end"] = int(arrays["episode_end"][-1])
        return info


def _chunk_index(path: Path) -> int:
    match = CHUNK_RE.match(path.name)
    assert match is not None
    return int(match.group(1))
