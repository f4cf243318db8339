"""A ring replay buffer over preallocated numpy arrays; images stay uint8 until the learner.

Storage is one flat dict of arrays (``Replay.arrays``) so the runtime can later place the same
arrays in shared memory without touching the sampling code. Observations are stored in the
canonical layout the networks use: ``state`` float32 (N, S), ``pixels`` uint8 (N, C, H, W).
Actions are stored in env units; ``terminated`` marks true terminal states (no bootstrap), while a
time-limit truncation is stored as not terminated, so the target bootstraps through it.

n-step returns are built at sampling time from consecutive rows (:func:`n_step_gather`), so the
stored rows stay one env step each and any n can be chosen later.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from robosac.sac.spaces import ObsSpec


def canonical_obs(obs: Any, spec: ObsSpec) -> dict[str, np.ndarray]:
    """One env observation -> {"state": float32 (S,), "pixels": uint8 (C, H, W)} (keys as present)."""
    out: dict[str, np.ndarray] = {}
    if spec.state_dim:
        parts = [np.asarray(obs if k is None else obs[k], dtype=np.float32) for k in spec.state_keys]
        out["state"] = parts[0] if len(parts) == 1 else np.concatenate(parts)
    if spec.image is not None:
        img = np.asarray(obs if spec.image.key is None else obs[spec.image.key])
        if img.dtype != np.uint8:
            raise TypeError(f"image observation must be uint8, got {img.dtype}")
        if spec.image.channels_last:
            img = np.moveaxis(img, -1, -3)  # (..., H, W, C) -> (..., C, H, W)
        out["pixels"] = img.reshape(spec.image.chw)
    return out


class Replay:
    """Fixed-capacity FIFO of transitions; ``sample`` returns torch tensors on ``device``."""

    def __init__(self, spec: ObsSpec, act_dim: int, capacity: int, seed: int | None = None):
        if capacity < 1:
            raise ValueError(f"replay capacity must be >= 1, got {capacity}")
        self.spec, self.capacity = spec, capacity
        self.arrays: dict[str, np.ndarray] = {}
        for prefix in ("obs", "next_obs"):
            if spec.state_dim:
                self.arrays[f"{prefix}.state"] = np.zeros((capacity, spec.state_dim), np.float32)
            if spec.image is not None:
                self.arrays[f"{prefix}.pixels"] = np.zeros((capacity, *spec.image.chw), np.uint8)
        self.arrays["action"] = np.zeros((capacity, act_dim), np.float32)
        self.arrays["reward"] = np.zeros((capacity,), np.float32)
        self.arrays["terminated"] = np.zeros((capacity,), np.float32)
        self.size = 0  # transitions held
        self.cursor = 0  # next slot to write
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.size

    def add(self, obs: Any, action: np.ndarray, reward: float, next_obs: Any, terminated: bool) -> int:
        """Store one transition; ``obs``/``next_obs`` as the env emitted them. Returns its slot."""
        i = self.cursor
        for prefix, o in (("obs", obs), ("next_obs", next_obs)):
            for key, value in canonical_obs(o, self.spec).items():
                self.arrays[f"{prefix}.{key}"][i] = value
        self.arrays["action"][i] = action
        self.arrays["reward"][i] = reward
        self.arrays["terminated"][i] = float(terminated)
        self.cursor = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        return i

    def add_arrays(self, batch: Mapping[str, np.ndarray]) -> None:
        """Store N transitions given in the canonical layout of ``arrays`` (keys as there), in order.

        Used to refill the ring from disk (:class:`robosac.runtime.replay_store.ReplayStore`); when
        N exceeds the capacity only the newest ``capacity`` rows are kept, as FIFO order would.
        """
        n = len(batch["reward"])
        start = max(0, n - self.capacity)
        idx = (self.cursor + np.arange(n - start)) % self.capacity
        for key, array in self.arrays.items():
            array[idx] = batch[key][start:]
        self.cursor = int((self.cursor + n - start) % self.capacity)
        self.size = min(self.size + n - start, self.capacity)

    def sample(self, batch_size: int, device: torch.device | str = "cpu", n_step: int = 1, gamma: float = 0.99) -> dict[str, Any]:
        """Uniform batch: {"obs": {...}, "action" (B, A), "reward" (B,), "next_obs": {...}, "terminated" (B,)}.

        With ``n_step`` > 1 each sample is an n-step transition (:func:`n_step_gather`) and the
        batch also holds "discount" (B,): gamma ** (env steps spanned), for the bootstrap term."""
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        pos = self.rng.integers(0, self.size, size=batch_size)  # 0 = the oldest row held
        first = self.cursor - self.size  # logical position -> slot is (first + p) % capacity
        out = n_step_gather(self.arrays, pos + first, self.capacity, newest=first + self.size - 1, n_step=n_step, gamma=gamma)
        return _nest({k: torch.from_numpy(v).to(device, non_blocking=True) for k, v in out.items()})


def n_step_gather(
    arrays: Mapping[str, np.ndarray], pos: np.ndarray, capacity: int, newest: int, n_step: int, gamma: float
) -> dict[str, np.ndarray]:
    """The rows at logical positions ``pos`` (B,) of a ring (slot = position % capacity), as
    n-step transitions when ``n_step`` > 1.

    A sample starting at row i runs on through rows i+1 .. i+n-1 while they continue its episode:
    the row before was not terminal, the row is published (<= ``newest``), and its ``obs.state``
    is exactly the previous row's ``next_obs.state`` (the collector hands each ``next_obs`` on as
    the next ``obs``; a reset, or a row from another robot in a shared replay, breaks the chain).
    Over the m rows taken: reward = sum_k gamma^k r_(i+k), next_obs and terminated are the last
    row's, and "discount" = gamma^m. With ``n_step`` == 1 the rows come back unchanged, without
    "discount". As with DrQ-v2 and SB3's n-step buffer, no off-policy correction is applied.
    """
    keys = list(arrays)
    slot = pos % capacity
    if n_step == 1:
        return {k: arrays[k][slot] for k in keys}
    if "obs.state" not in arrays:
        raise ValueError("n_step > 1 needs a state observation to tell where episodes end")
    reward = arrays["reward"][slot].astype(np.float32)
    discount = np.full(len(pos), gamma, np.float32)
    last = pos.copy()
    going = ~arrays["terminated"][slot].astype(bool) & (pos < newest)
    for _ in range(n_step - 1):
        i = np.flatnonzero(going)
        if i.size == 0:
            break
        prev, nxt = last[i] % capacity, (last[i] + 1) % capacity
        same = np.all(arrays["obs.state"][nxt] == arrays["next_obs.state"][prev], axis=1)
        i, nxt = i[same], nxt[same]
        reward[i] += discount[i] * arrays["reward"][nxt]
        discount[i] *= gamma
        last[i] += 1
        going[:] = False
        going[i] = ~arrays["terminated"][nxt].astype(bool) & (last[i] < newest)
    end = last % capacity
    out = {k: arrays[k][end if k.startswith("next_obs.") or k == "terminated" else slot] for k in keys}
    out["reward"] = reward
    out["discount"] = discount
    return out


def _nest(flat: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    out: dict[str, Any] = {"obs": {}, "next_obs": {}}
    for key, value in flat.items():
        prefix, _, sub = key.partition(".")
        if sub:
            out[prefix][sub] = value
        else:
            out[key] = value
    return out
