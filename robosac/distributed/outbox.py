"""The collector's outgoing transitions: bounded, drop-oldest, numbered, kept until the learner has
them on disk, so neither a dropped link nor a learner crash loses what the robot still holds.

Every row gets the next sequence number of this collector's stream when ``put`` (0, 1, 2, ...).
Rows stay in the box until the learner reports them durable (written to its replay chunks), not
merely received: a learner that dies before its flush asks for them again (it answers ``next_seq``
lower than what was sent, and the sender rewinds). ``put`` never blocks: past ``capacity`` the
oldest row goes, counted in ``dropped`` (never sent) or ``dropped_unconfirmed`` (sent, not yet
durable). The control loop calls ``put``; one sender thread calls ``batch`` and ``ack``.
"""

from __future__ import annotations

import threading
from collections import deque
from itertools import islice
from typing import Any

__all__ = ["Outbox"]


class Outbox:
    """Rows (dicts of numpy values) waiting to reach the learner's disk; thread-safe."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"outbox capacity: invalid value {capacity!r}; allowed: an integer >= 1 (rows)")
        self.capacity = int(capacity)
        self._rows: deque[dict[str, Any]] = deque()
        self._front = 0  # seq of _rows[0]
        self._next = 0  # seq the next put() gets
        self._cursor = 0  # next seq to send
        self._lock = threading.Lock()
        self.dropped = 0  # rows dropped before they were ever sent
        self.dropped_unconfirmed = 0  # rows dropped after sending, before the learner had them on disk
        self.max_held = 0

    def put(self, row: dict[str, Any]) -> None:
        """Queue one transition (drops the oldest row when full). Never blocks beyond a short lock."""
        with self._lock:
            self._rows.append(row)
            self._next += 1
            if len(self._rows) > self.capacity:
                self._rows.popleft()
                if self._front >= self._cursor:
                    self.dropped += 1
                else:
                    self.dropped_unconfirmed += 1
                self._front += 1
                self._cursor = max(self._cursor, self._front)
            self.max_held = max(self.max_held, len(self._rows))

    def batch(self, max_rows: int) -> tuple[int, int, list[dict[str, Any]]] | None:
        """(first_seq, oldest_held_seq, rows) of up to ``max_rows`` unsent rows, or None if none."""
        with self._lock:
            start = self._cursor - self._front
            rows = list(islice(self._rows, start, start + max_rows))
            return (self._cursor, self._front, rows) if rows else None

    def ack(self, next_seq: int, durable_seq: int) -> None:
        """The learner's answer: it expects ``next_seq`` next (may rewind the cursor: a restarted
        learner lost rows) and holds every row below ``durable_seq`` on disk (those are let go)."""
        with self._lock:
            while self._rows and self._front < durable_seq:
                self._rows.popleft()
                self._front += 1
            self._cursor = min(max(int(next_seq), self._front), self._next)

    def release(self, durable_seq: int) -> None:
        """Let go of rows below ``durable_seq`` (on the learner's disk); the send cursor is untouched."""
        with self._lock:
            while self._rows and self._front < durable_seq:
                self._rows.popleft()
                self._front += 1
            self._cursor = max(self._cursor, self._front)

    @property
    def unsent(self) -> int:
        """Rows produced but not yet received by the learner (as far as this box knows)."""
        with self._lock:
            return self._next - self._cursor

    @property
    def held(self) -> int:
        """Rows in the box (unsent + sent but not yet durable)."""
        with self._lock:
            return len(self._rows)

    @property
    def produced(self) -> int:
        return self._next
