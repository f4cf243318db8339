"""Shared memory between the collector (main process) and the learner process.

``SharedReplay``: a fixed-capacity ring of transitions, one array per field, in a single
``multiprocessing.shared_memory`` segment. One writer (the collector) and one reader (the learner).
``add`` never blocks: it writes the row, then publishes it by bumping a shared counter; the reader
only samples rows below the counter (leaving out the slot the writer fills next; so at most
capacity - 1 rows are sampled once full), and re-draws any row the writer may have started to overwrite
while it was copying (checked against the counter read *after* the copy), so it never returns a
half-written row. ``sample`` returns exactly what :meth:`robosac.sac.replay.Replay.sample` returns.

``WeightStore``: versioned actor weights (encoder + actor, what ``SAC.act`` needs) in a double
buffer, each slot guarded by a sequence counter (a seqlock). The learner writes the slot not
currently published, then flips the "latest" header; the collector's :meth:`WeightStore.latest`
reads one integer when nothing is new, and otherwise copies the slot and checks its sequence number
did not move (retrying if the learner published twice during the copy). Neither side ever waits
for the other. A learner killed mid-copy leaves its slot's counter odd; the next writer steps it to
the next odd value, never to an even one, so the slot cannot read as complete while it is written.

Both segments describe their own layout in a JSON header, so the child only needs the name:
``SharedReplay.attach(name)`` / ``WeightStore.attach(name)``. The creator owns the segment and
unlinks it on ``close()``; attached handles only unmap.

Memory ordering: the counters are aligned 8-byte numpy stores, atomic on x86-64 and AArch64; the
write-then-publish order relies on the interpreter not reordering them (each store is a separate
C call), which holds on x86's TSO. On weakly ordered CPUs the seqlock's re-check still catches torn
weight copies; a replay row could in principle be read a few nanoseconds early.
"""

from __future__ import annotations

import json
import time
from multiprocessing import shared_memory
from typing import Any, Mapping

import numpy as np
import torch

from robosac.sac.replay import _nest, canonical_obs, n_step_gather
from robosac.sac.spaces import ObsSpec

_MAGIC_REPLAY = 0x5245504C  # "REPL"
_MAGIC_WEIGHTS = 0x57475453  # "WGTS"
_HDR = 16  # magic (int64) + JSON length (int64)
_ALIGN = 64


def _release(shm: shared_memory.SharedMemory, owner: bool) -> bool:
    """Unmap a segment and, if we created it, unlink it; returns the new owner flag (False)."""
    try:
        shm.close()
    except BufferError:  # a caller still holds a view; the mapping goes with the process
        pass
    if owner:
        try:
            shm.unlink()
        except FileNotFoundError:
            pass
    return False


def _align(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


def _write_layout(buf: memoryview, magic: int, layout: dict) -> int:
    blob = json.dumps(layout).encode()
    hdr = np.ndarray((2,), np.int64, buffer=buf)
    hdr[0], hdr[1] = magic, len(blob)
    buf[_HDR : _HDR + len(blob)] = blob
    return _align(_HDR + len(blob))


def _read_layout(buf: memoryview, magic: int, what: str) -> tuple[dict, int]:
    hdr = np.ndarray((2,), np.int64, buffer=buf)
    if int(hdr[0]) != magic:
        raise ValueError(f"shared memory segment is not a {what}")
    n = int(hdr[1])
    return json.loads(bytes(buf[_HDR : _HDR + n])), _align(_HDR + n)


# ---- replay ---------------------------------------------------------------------------------------


class SharedReplay:
    """Ring buffer of transitions in shared memory; one writer (``add``), one reader (``sample``)."""

    def __init__(self, shm: shared_memory.SharedMemory, layout: dict, base: int, owner: bool, spec: ObsSpec | None):
        self.shm, self.layout, self.owner, self.spec = shm, layout, owner, spec
        self.name = shm.name
        self.capacity = int(layout["capacity"])
        buf = shm.buf
        # Counter of transitions written (published), alone on its cache line.
        self._counter = np.ndarray((1,), np.int64, buffer=buf, offset=base)
        self.arrays: dict[str, np.ndarray] = {}
        for key, shape, dtype, offset in layout["fields"]:
            self.arrays[key] = np.ndarray(tuple(shape), np.dtype(dtype), buffer=buf, offset=offset)

    @staticmethod
    def _fields(spec_state_dim: int, chw: tuple[int, ...] | None, act_dim: int, capacity: int,
                extra: Mapping[str, str] | None = None) -> list[tuple[str, tuple, str]]:
        fields: list[tuple[str, tuple, str]] = []
        for prefix in ("obs", "next_obs"):
            if spec_state_dim:
                fields.append((f"{prefix}.state", (capacity, spec_state_dim), "float32"))
            if chw is not None:
                fields.append((f"{prefix}.pixels", (capacity, *chw), "uint8"))
        fields += [
            ("action", (capacity, act_dim), "float32"),
            ("reward", (capacity,), "float32"),
            ("terminated", (capacity,), "bool"),
            ("policy_version", (capacity,), "int64"),
        ]
        fields += [(k, (capacity,), dtype) for k, dtype in (extra or {}).items()]
        return fields

    @classmethod
    def create(cls, spec: ObsSpec, act_dim: int, capacity: int, name: str | None = None,
               extra: Mapping[str, str] | None = None) -> "SharedReplay":
        """Allocate a new segment (zeroed) for ``capacity`` transitions; the caller owns it.
        extra: more scalar fields per row, name -> numpy dtype, given to ``add`` as keywords."""
        if capacity < 2:  # one slot is always reserved for the writer's next row
            raise ValueError(f"shared replay capacity must be >= 2, got {capacity}")
        fields = cls._fields(spec.state_dim, spec.image.chw if spec.image is not None else None, act_dim, capacity, extra)
        # Lay out: JSON header | counter (64 B) | arrays, each 64-byte aligned. The JSON holds the
        # offsets, which depend on its own length, so size it with placeholder offsets first.
        probe = {"capacity": capacity, "act_dim": act_dim, "fields": [[k, list(s), d, 10**12] for k, s, d in fields]}
        base = _align(_HDR + len(json.dumps(probe).encode()) + 64)
        offset = base + _ALIGN
        placed = []
        for key, shape, dtype in fields:
            placed.append([key, list(shape), dtype, offset])
            offset = _align(offset + int(np.prod(shape)) * np.dtype(dtype).itemsize)
        layout = {"capacity": capacity, "act_dim": act_dim, "fields": placed, "base": base}
        shm = shared_memory.SharedMemory(name=name, create=True, size=offset)
        assert _write_layout(shm.buf, _MAGIC_REPLAY, layout) <= base
        return cls(shm, layout, base, owner=True, spec=spec)

    @classmethod
    def attach(cls, name: str, spec: ObsSpec | None = None) -> "SharedReplay":
        """Open an existing segment by name: the reader's side, or (given ``spec``) a writer in
        another process than the creator's."""
        shm = shared_memory.SharedMemory(name=name)
        layout, _ = _read_layout(shm.buf, _MAGIC_REPLAY, "SharedReplay")
        return cls(shm, layout, int(layout["base"]), owner=False, spec=spec)

    # ---- writer ---------------------------------------------------------------------------------

    @property
    def written(self) -> int:
        """Transitions published so far (ever, not capped at capacity)."""
        return int(self._counter[0])

    def __len__(self) -> int:
        return min(self.written, self.capacity)

    def add(self, obs: Any, action: np.ndarray, reward: float, next_obs: Any, terminated: bool, policy_version: int = -1,
            **extra: Any) -> None:
        """Store one transition (observations as the env emitted them, ``extra`` fields as created);
        never waits for the reader."""
        if self.spec is None:
            raise RuntimeError("add() needs the ObsSpec: write through create(spec, ...) or attach(name, spec=spec)")
        n = int(self._counter[0])
        i = n % self.capacity
        a = self.arrays
        for prefix, o in (("obs", obs), ("next_obs", next_obs)):
            for key, value in canonical_obs(o, self.spec).items():
                a[f"{prefix}.{key}"][i] = value
        a["action"][i] = action
        a["reward"][i] = reward
        a["terminated"][i] = bool(terminated)
        a["policy_version"][i] = policy_version
        for key, value in extra.items():
            a[key][i] = value
        self._counter[0] = n + 1  # publish only once the row is complete

    def add_arrays(self, batch: Mapping[str, np.ndarray]) -> None:
        """Store N transitions given in the layout of ``arrays`` (keys as there), in order, as
        :meth:`robosac.sac.replay.Replay.add_arrays` does (used by ReplayStore.restore); the
        counter is published once every row is written."""
        n = int(self._counter[0])
        k = len(batch["reward"])
        start = max(0, k - self.capacity)
        idx = (n + start + np.arange(k - start)) % self.capacity
        for key, a in self.arrays.items():
            a[idx] = batch[key][start:]
        self._counter[0] = n + k

    def row(self, position: int) -> dict[str, np.ndarray]:
        """Copies of the fields of the transition written at ``position`` (0-based, ever)."""
        i = position % self.capacity
        return {k: a[i].copy() for k, a in self.arrays.items()}

    def oldest_intact(self) -> int:
        """The oldest position a reader can still copy whole: older rows are overwritten (or being
        overwritten). Check it again after copying a row to know the copy was not torn."""
        return self._safe_lo(self.written)

    # ---- reader ---------------------------------------------------------------------------------

    def _safe_lo(self, n: int) -> int:
        # Logical positions >= n - capacity + 1 are neither overwritten nor being overwritten while
        # the counter reads n (the writer may be writing position n, i.e. slot of n - capacity).
        return max(0, n - self.capacity + 1)

    def sample(
        self, batch_size: int, rng: np.random.Generator, device: torch.device | str = "cpu", with_version: bool = False,
        n_step: int = 1, gamma: float = 0.99,
    ) -> dict[str, Any]:
        """Uniform batch in :meth:`Replay.sample`'s format (``terminated`` as float32 0/1).

        ``with_version=True`` adds ``"policy_version"`` (int64, (B,)): the weights that acted.
        ``n_step`` > 1: n-step transitions over published rows, with "discount" (:func:`n_step_gather`).
        """
        n1 = self.written
        if n1 == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        pos = rng.integers(self._safe_lo(n1), n1, size=batch_size)
        arrays = {k: a for k, a in self.arrays.items() if with_version or k != "policy_version"}
        for _ in range(100):
            out = n_step_gather(arrays, pos, self.capacity, newest=n1 - 1, n_step=n_step, gamma=gamma)
            # The writer may have touched the oldest rows while they were copied: draw those again.
            # Later rows of an n-step sample are newer than its first, so checking the first suffices.
            bad = pos < self._safe_lo(self.written)
            if not bad.any():
                break
            n1 = self.written
            pos[bad] = rng.integers(self._safe_lo(n1), n1, size=int(bad.sum()))
        else:  # pragma: no cover - would need the writer to lap the whole ring 100 times
            raise RuntimeError("replay writer overran the reader repeatedly; capacity too small")
        out["terminated"] = out["terminated"].astype(np.float32)
        flat = {k: torch.from_numpy(v).to(device, non_blocking=True) for k, v in out.items()}
        return _nest(flat)

    # ---- lifetime -------------------------------------------------------------------------------

    def close(self) -> None:
        """Unmap; the creator also unlinks the segment."""
        self.arrays.clear()
        self._counter = None  # type: ignore[assignment]
        self.owner = _release(self.shm, self.owner)


# ---- weights --------------------------------------------------------------------------------------


def actor_state(agent) -> dict[str, torch.Tensor]:
    """What acting needs from a SAC agent: encoder + actor parameters/buffers, prefixed keys."""
    out: dict[str, torch.Tensor] = {}
    for mod in ("encoder", "actor"):
        for k, v in getattr(agent, mod).state_dict().items():
            out[f"{mod}.{k}"] = v
    return out


def load_actor_state(agent, state: Mapping[str, torch.Tensor]) -> None:
    """Inverse of :func:`actor_state`: load published weights into a SAC agent's encoder + actor."""
    for mod in ("encoder", "actor"):
        sub = {k[len(mod) + 1 :]: v for k, v in state.items() if k.startswith(mod + ".")}
        getattr(agent, mod).load_state_dict(sub)


# Header words of the weight store (int64), each slot has its own.
_W_LATEST_VERSION, _W_LATEST_SLOT = 0, 1
_S_SEQ, _S_VERSION, _S_UPDATES = 0, 1, 2  # slot: seqlock counter, version, learner updates
_SLOT_HDR = 64  # seq, version, updates (int64) + publish time (float64 at byte 24)


class WeightStore:
    """Versioned weights in a seqlock-guarded double buffer; learner ``publish``, collector ``latest``."""

    def __init__(self, shm: shared_memory.SharedMemory, layout: dict, base: int, owner: bool):
        self.shm, self.layout, self.owner = shm, layout, owner
        self.name = shm.name
        buf = shm.buf
        self._head = np.ndarray((2,), np.int64, buffer=buf, offset=base)
        self.nbytes = int(layout["nbytes"])
        slot_size = _align(_SLOT_HDR + self.nbytes)
        self._slot_hdr, self._slot_time, self._slot_data = [], [], []
        for s in range(2):
            off = base + _ALIGN + s * slot_size
            self._slot_hdr.append(np.ndarray((3,), np.int64, buffer=buf, offset=off))
            self._slot_time.append(np.ndarray((1,), np.float64, buffer=buf, offset=off + 24))
            self._slot_data.append(np.ndarray((self.nbytes,), np.uint8, buffer=buf, offset=off + _SLOT_HDR))
        self.tensors = [(k, tuple(shape), dtype, off) for k, shape, dtype, off in layout["tensors"]]
        self.last_meta: dict[str, float] = {}  # of the last pickup: version, updates, publish_time
        self.retries = 0  # torn copies detected and redone by latest()

    @classmethod
    def create(cls, template: Mapping[str, torch.Tensor], name: str | None = None) -> "WeightStore":
        """Size the store for state dicts shaped like ``template`` (e.g. :func:`actor_state`)."""
        tensors, nbytes = [], 0
        for k, v in template.items():
            arr = v.detach().cpu().numpy()
            tensors.append([k, list(arr.shape), arr.dtype.str, nbytes])
            nbytes = _align(nbytes + arr.nbytes)
        layout = {"tensors": tensors, "nbytes": nbytes}
        base = _align(_HDR + len(json.dumps(layout).encode()) + 64)  # room for the "base" entry
        layout["base"] = base
        size = base + _ALIGN + 2 * _align(_SLOT_HDR + nbytes)
        shm = shared_memory.SharedMemory(name=name, create=True, size=size)
        assert _write_layout(shm.buf, _MAGIC_WEIGHTS, layout) <= base
        return cls(shm, layout, base, owner=True)

    @classmethod
    def attach(cls, name: str) -> "WeightStore":
        shm = shared_memory.SharedMemory(name=name)
        layout, _ = _read_layout(shm.buf, _MAGIC_WEIGHTS, "WeightStore")
        return cls(shm, layout, int(layout["base"]), owner=False)

    @property
    def version(self) -> int:
        """The newest published version (0 = nothing published yet)."""
        return int(self._head[_W_LATEST_VERSION])

    def publish(self, state: Mapping[str, torch.Tensor], updates: int = 0) -> int:
        """Write ``state`` as the next version (single writer); returns the version. Never blocks."""
        version = self.version + 1
        # Never the slot readers are pointed at, even where a writer killed between the two head
        # words below left that slot one version ahead of the latest version.
        slot = 1 - int(self._head[_W_LATEST_SLOT])
        hdr, data = self._slot_hdr[slot], self._slot_data[slot]
        seq = int(hdr[_S_SEQ])
        # Odd: write in progress. A writer killed mid-write (a learner SIGKILLed while publishing)
        # left it odd already; a plain +1 would make it even while this write runs and odd once
        # the slot is marked latest, and every reader would then wait on a write that never ends.
        hdr[_S_SEQ] = seq + 1 + seq % 2
        for k, shape, dtype, off in self.tensors:
            arr = state[k].detach().cpu().contiguous().numpy()  # (np.ascontiguousarray makes a 0-d tensor 1-d)
            if arr.shape != shape or arr.dtype.str != dtype:
                hdr[_S_SEQ] += 1
                raise ValueError(f"weight {k!r}: got {arr.shape} {arr.dtype.str}, store holds {shape} {dtype}")
            data[off : off + arr.nbytes] = arr.reshape(-1).view(np.uint8)
        hdr[_S_VERSION] = version
        hdr[_S_UPDATES] = updates
        self._slot_time[slot][0] = time.monotonic()
        hdr[_S_SEQ] += 1  # even: complete
        self._head[_W_LATEST_SLOT] = slot
        self._head[_W_LATEST_VERSION] = version
        return version

    def latest(self, after_version: int = 0) -> tuple[int, dict[str, torch.Tensor]] | None:
        """``(version, state_dict)`` if a version newer than ``after_version`` exists, else None.

        Costs one shared-memory read when nothing is new. Never waits on the writer: a copy that
        overlapped a write (the writer lapped both slots) is simply redone.
        """
        if int(self._head[_W_LATEST_VERSION]) <= after_version:
            return None
        for _ in range(1000):
            slot = int(self._head[_W_LATEST_SLOT])
            hdr = self._slot_hdr[slot]
            seq = int(hdr[_S_SEQ])
            if seq % 2:  # being rewritten: the other slot now holds the newest version
                self.retries += 1
                continue
            blob = self._slot_data[slot].copy()
            version, updates, t = int(hdr[_S_VERSION]), int(hdr[_S_UPDATES]), float(self._slot_time[slot][0])
            if int(hdr[_S_SEQ]) != seq:
                self.retries += 1
                continue
            if version <= after_version:
                return None
            state = {
                k: torch.from_numpy(blob[off : off + int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize].view(np.dtype(dtype)).reshape(shape))
                for k, shape, dtype, off in self.tensors
            }
            self.last_meta = {"version": version, "updates": updates, "publish_time": t}
            return version, state
        raise RuntimeError("weight store: could not read a consistent copy (writer publishing continuously?)")

    def close(self) -> None:
        self._head = None  # type: ignore[assignment]
        self._slot_hdr, self._slot_time, self._slot_data = [], [], []
        self.owner = _release(self.shm, self.owner)
