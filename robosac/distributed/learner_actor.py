"""The learner as a Ray actor: SAC updates from every robot's transitions, versioned weights, and a
run directory that a restarted actor resumes from.

Methods run concurrently (a threaded actor), beside one training thread:
- ``add(robot, stream, first_seq, oldest_seq, rows)``: a collector's batch (dict of arrays, N rows,
  canonical layout: ``obs.state``, ``obs.pixels`` (uint8, C×H×W), ``action``, ``reward``,
  ``next_obs.*``, ``terminated`` plus ``policy_version``, ``episode``, ``episode_end``). Rows carry
  sequence numbers of the collector's stream; duplicates (a retry after a timeout) are dropped,
  rows the collector no longer holds are counted in ``gaps``, and a batch that starts past what the
  learner has (it restarted and lost rows it had not flushed) is refused, so the collector rewinds
  and resends. Answers ``next_seq`` and ``durable_seq`` (rows on disk; the collector lets them go).
- ``latest_weights(after_version, learner_id, robot, stream, want_weights)``: the learner's version,
  and the newest actor weights (numpy) when wanted and newer than the caller's, or when the
  caller's came from another incarnation of the learner.
- ``stats()``, ``checkpoint()``, ``stop()``.

Disk (the run directory, on the learner's node): ``replay/<robot>/chunk_*.npz`` (one
:class:`~robosac.runtime.replay_store.ReplayStore` per robot: env-step counter per robot, plus
``stream``/``seq``/``policy_version``) and ``learner.pt`` (:func:`robosac.persist.save_checkpoint`,
atomic: agent, counters, RNG; the same format ``robosac eval`` reads). Replay chunks are flushed
before each checkpoint, so the replay on disk is never behind the checkpoint. A new actor built
on the same directory (Ray's restart after a crash, or ``--resume``) restores both.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robosac.runtime.learner import UPDATE_STATS  # one list of what an update reports, recon_loss included

__all__ = ["LearnerActor", "LearnerSettings", "EXTRA_FIELDS"]

# Stored per row besides the replay's own fields (the bookkeeping step/episode/episode_end is the store's).
EXTRA_FIELDS = {"policy_version": ((), np.int64), "stream": ((), np.int64), "seq": ((), np.int64)}


@dataclass
class LearnerSettings:
    """How the learner actor trains and persists (SAC's own hyper-parameters are in SACConfig)."""

    batch_size: int = 256
    learning_starts: int = 1000  # transitions (all robots) before the first update
    max_updates_per_step: float = 1.0  # updates <= this x transitions received (the run's, across resumes)
    replay_capacity: int = 100_000  # transitions held in memory (all robots)
    publish_every: int = 10  # updates between weight publications
    checkpoint_every_s: float = 30.0
    flush_every: int = 1000  # rows per replay chunk (per robot)
    flush_interval_s: float = 5.0  # and at least this often while rows are pending, s
    threads: int = 1  # torch intra-op threads
    device: str = "auto"  # "auto": cuda when the actor got a GPU, else cpu
    seed: int = 0
    idle_sleep_s: float = 0.002

    def __post_init__(self) -> None:
        for k in ("batch_size", "replay_capacity", "publish_every", "flush_every", "threads"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"{k}: invalid value {getattr(self, k)!r}; allowed: an integer >= 1")
        if self.max_updates_per_step <= 0 or self.checkpoint_every_s <= 0 or self.flush_interval_s <= 0:
            raise ValueError("max_updates_per_step, checkpoint_every_s and flush_interval_s must be > 0")


class LearnerActor:
    """Wrap with ``ray.remote`` (see robosac.distributed.run); usable as a plain object in-process."""

    def __init__(self, run_dir: str, observation_space: Any, action_space: Any, sac_config: Any, settings: LearnerSettings) -> None:
        import torch

        from robosac.persist import CheckpointError, load_checkpoint, restore_rng_state
        from robosac.runtime.replay_store import ReplayStore
        from robosac.sac.replay import Replay
        from robosac.sac.perf import tune_learner_process
        from robosac.sac.sac import SAC

        tune_learner_process()  # before any torch op: the training and OpenMP threads inherit it
        self.s = settings
        self.run_dir = Path(run_dir)
        self.ckpt_path = self.run_dir / "learner.pt"
        torch.set_num_threads(settings.threads)
        device = settings.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.learner_id = uuid.uuid4().hex[:12]  # this incarnation; a restart gets a new one
        self.agent = SAC(observation_space, action_space, sac_config, device=device, seed=settings.seed)
        self.replay = Replay(self.agent.spec, action_space.shape[0], settings.replay_capacity, seed=settings.seed)
        self._fields = {k: (a.shape[1:], a.dtype) for k, a in self.replay.arrays.items()}
        self._fields.update(EXTRA_FIELDS)
        self._store_cls = ReplayStore
        self._lock = threading.Lock()  # replay, stores and sequence numbers
        self._stores: dict[str, Any] = {}
        self._robot_steps: dict[str, int] = {}  # next env-step index per robot (its store's counter)
        self._next_seq: dict[tuple[str, int], int] = {}
        self._durable: dict[tuple[str, int], int] = {}
        self._last_flush: dict[str, float] = {}
        self.per_robot: dict[str, dict[str, int]] = {}
        self.transitions = 0
        self.restored_transitions = self._restore_replay()
        self.version = 0
        self.restored_from_updates = -1
        if self.ckpt_path.exists():
            try:
                ck = load_checkpoint(self.ckpt_path)
                self.agent.load_state_dict(ck["agent"])
                restore_rng_state(ck["rng"], {"sample": self.replay.rng})
            except (CheckpointError, KeyError, ValueError, RuntimeError) as e:
                raise RuntimeError(f"learner cannot resume from {self.ckpt_path}: {e}") from e
            self.version = int(ck["counters"].get("weights_version", 0))
            self.restored_from_updates = self.agent.updates
        self.checkpoints = 0
        self.last_checkpoint_updates = self.restored_from_updates
        self.error: str | None = None
        self.update_stats: dict[str, float] = {}
        self._weights: dict[str, np.ndarray] = {}
        self._publish_t = time.monotonic()
        self._wlock = threading.Lock()
        self._publish()
        self._heartbeat = time.monotonic()
        self._started = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._train, name="learner", daemon=True)
        self._thread.start()

    # ---- restore ----------------------------------------------------------------------------

    def _store(self, robot: str) -> Any:
        st = self._stores.get(robot)
        if st is None:
            st = self._store_cls(self.run_dir / "replay" / robot, self._fields, flush_every=self.s.flush_every,
                                 flush_interval_s=None, keep_last=self.s.replay_capacity)
            self._stores[robot] = st
            self._robot_steps.setdefault(robot, 0)
            self._last_flush[robot] = time.monotonic()
            self.per_robot.setdefault(robot, {"transitions": 0, "gaps": 0, "duplicates": 0, "refused": 0})
        return st

    def _restore_replay(self) -> int:
        """Refill the replay from replay/<robot>/ chunks; sequence numbers continue from them.

        Returns the rows restored. ``transitions`` becomes the run's total, rows the stores dropped
        past ``replay_capacity`` included (a robot's step counter counts every row it delivered), so
        the update cap and ``learning_starts`` go on from where the run was, not from the rows kept.
        """
        root = self.run_dir / "replay"
        restored = 0
        for d in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
            st = self._store(d.name)
            for _, arrays in st.iter_chunks():  # validates every chunk; a bad one raises, naming it
                self.replay.add_arrays({k: arrays[k] for k in self.replay.arrays})
                restored += len(arrays["step"])
                self._robot_steps[d.name] = int(arrays["step"][-1]) + 1
                for stream in np.unique(arrays["stream"]):
                    key = (d.name, int(stream))
                    last = int(arrays["seq"][arrays["stream"] == stream].max()) + 1
                    self._next_seq[key] = self._durable[key] = max(self._next_seq.get(key, 0), last)
            self.per_robot[d.name]["transitions"] = self._robot_steps[d.name]
        self.transitions = sum(self._robot_steps.values())
        return restored

    # ---- collectors' calls ------------------------------------------------------------------

    def add(self, robot: str, stream: int, first_seq: int, oldest_seq: int, rows: dict[str, np.ndarray]) -> dict[str, Any]:
        """Store a batch of one robot's transitions (see the module docstring); returns the ack."""
        n = len(rows["reward"])
        key = (robot, int(stream))
        with self._lock:
            st = self._store(robot)
            pr = self.per_robot[robot]
            exp = self._next_seq.get(key, 0)
            accepted = 0
            if first_seq > exp and oldest_seq > exp:
                pr["gaps"] += oldest_seq - exp  # dropped by the collector's full outbox (or lost): gone
                exp = oldest_seq
            if first_seq > exp:
                pr["refused"] += 1  # we lost rows the collector still holds: it rewinds to exp
            else:
                skip = exp - first_seq
                pr["duplicates"] += min(skip, n)
                if skip < n:
                    self._append(robot, st, int(stream), first_seq + skip, {k: v[skip:] for k, v in rows.items()})
                    accepted = n - skip
                    exp = first_seq + n
            self._next_seq[key] = exp
            if st.pending == 0:
                self._mark_durable(robot)
            return {"next_seq": exp, "durable_seq": self._durable.get(key, 0), "accepted": accepted,
                    "learner_id": self.learner_id, "version": self.version, "transitions": self.transitions}

    def _append(self, robot: str, st: Any, stream: int, seq0: int, rows: dict[str, np.ndarray]) -> None:
        self.replay.add_arrays({k: rows[k] for k in self.replay.arrays})
        m = len(rows["reward"])
        for i in range(m):
            row = {k: rows[k][i] for k in self.replay.arrays}
            row.update(policy_version=rows["policy_version"][i], stream=stream, seq=seq0 + i)
            if st.append(row, self._robot_steps[robot], int(rows["episode"][i]), bool(rows["episode_end"][i])):
                self._mark_durable(robot)
                self._last_flush[robot] = time.monotonic()
            self._robot_steps[robot] += 1
        self.transitions += m
        self.per_robot[robot]["transitions"] += m

    def _mark_durable(self, robot: str) -> None:
        for key, nxt in self._next_seq.items():
            if key[0] == robot:
                self._durable[key] = nxt

    def _flush(self, force: bool) -> None:
        now = time.monotonic()
        with self._lock:
            for robot, st in self._stores.items():
                if st.pending and (force or now - self._last_flush[robot] >= self.s.flush_interval_s):
                    st.flush()
                    self._last_flush[robot] = now
                if st.pending == 0:
                    self._mark_durable(robot)

    def latest_weights(self, after_version: int, learner_id: str | None = None, robot: str | None = None,
                       stream: int | None = None, want_weights: bool = True) -> dict[str, Any]:
        """The learner's state for a collector's poll; ``weights`` (name -> numpy array) only if
        wanted and newer than ``after_version`` or the caller's weights came from another incarnation."""
        with self._wlock:
            fresh = want_weights and (learner_id != self.learner_id or self.version > after_version)
            out = {"learner_id": self.learner_id, "version": self.version, "updates": self.agent.updates,
                   "transitions": self.transitions, "age_s": time.monotonic() - self._publish_t,
                   "weights": self._weights if fresh else None}
        if robot is not None and stream is not None:
            out["durable_seq"] = self._durable.get((robot, int(stream)), 0)
        return out

    # ---- training ---------------------------------------------------------------------------

    def _publish(self) -> None:
        from robosac.runtime.shared import actor_state

        state = {k: v.detach().cpu().numpy().copy() for k, v in actor_state(self.agent).items()}
        with self._wlock:
            self._weights = state
            self.version += 1
            self._publish_t = time.monotonic()

    def checkpoint(self) -> int:
        """Flush every robot's replay chunks, then write learner.pt atomically; returns the updates saved."""
        from robosac.persist import capture_rng_state, save_checkpoint

        self._flush(force=True)
        counters = {"updates": self.agent.updates, "transitions": self.transitions, "weights_version": self.version,
                    "per_robot": {r: dict(v) for r, v in self.per_robot.items()}}
        save_checkpoint({"agent": self.agent.state_dict(), "counters": counters,
                         "rng": capture_rng_state({"sample": self.replay.rng})}, self.ckpt_path)
        self.checkpoints += 1
        self.last_checkpoint_updates = self.agent.updates
        return self.agent.updates

    def _train(self) -> None:
        s = self.s
        last_ckpt = time.monotonic()
        try:
            while not self._stop.is_set():
                now = self._heartbeat = time.monotonic()
                if now - last_ckpt >= s.checkpoint_every_s:
                    self.checkpoint()
                    last_ckpt = time.monotonic()
                else:
                    self._flush(force=False)
                n = self.transitions
                if n < s.learning_starts or self.agent.updates + 1 > s.max_updates_per_step * n:
                    time.sleep(s.idle_sleep_s)
                    continue
                with self._lock:
                    batch = self.agent.sample(self.replay, s.batch_size)
                self.update_stats = self.agent.update(batch)
                if self.agent.updates % s.publish_every == 0:
                    self._publish()
        except BaseException as e:  # noqa: BLE001 - reported by stats(); the driver restarts the actor
            self.error = f"{type(e).__name__}: {e}"

    def stop(self) -> dict[str, Any]:
        """End training: final publish, replay flush and checkpoint; returns stats()."""
        self._stop.set()
        self._thread.join(60)
        if self.error is None:
            self._publish()
            self.checkpoint()
        else:
            self._flush(force=True)
        return self.stats()

    def stats(self) -> dict[str, Any]:
        import ray

        # Asked outside Ray (the actor used in-process), get_runtime_context() would start a local Ray.
        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
        return {
            "learner_id": self.learner_id, "pid": os.getpid(), "node_id": node, "device": str(self.agent.device),
            "started": self._started, "updates": self.agent.updates, "version": self.version,
            "transitions": self.transitions, "replay_size": len(self.replay),
            "restored_transitions": self.restored_transitions, "restored_from_updates": self.restored_from_updates,
            "checkpoints": self.checkpoints, "last_checkpoint_updates": self.last_checkpoint_updates,
            "heartbeat_age_s": time.monotonic() - self._heartbeat, "training": self._thread.is_alive(),
            "weights_bytes": sum(a.nbytes for a in self._weights.values()),
            "per_robot": {r: dict(v) for r, v in self.per_robot.items()},
            "error": self.error, **{k: self.update_stats.get(k) for k in UPDATE_STATS},
        }

    def ready(self) -> str:
        return self.learner_id
