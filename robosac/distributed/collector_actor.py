"""One robot's collector as a Ray actor, pinned to the node that owns the robot's serial port and camera.

Inside: the runtime's :class:`~robosac.runtime.collector.Collector` thread running the robot's env
(the same control loop, safety monitor and reset routine as ``robosac train`` in one process), and
two threads that talk to the learner so the control loop never does:

- sender: takes batches from the :class:`~robosac.distributed.outbox.Outbox` (bounded, drop-oldest,
  numbered rows) and calls ``learner.add``; a reply acknowledges or rewinds. A call that does not
  answer within ``rpc_timeout_s`` marks the link down; the same call is awaited again (not resent,
  so a slow link is not flooded with copies) until it answers or fails, then resent.
- puller: every ``poll_interval_s`` asks ``learner.latest_weights(after_version)`` (a ``ray.get``
  with a timeout; the weights themselves at most every ``weights_interval_s``) and leaves newer
  weights in a slot; ``act`` (in the control loop) swaps them in at the start of its next step. Until the learner has ``learning_starts`` transitions the robot
  acts uniformly at random (as the single-process run does); after that it keeps the last weights
  it has, whatever happens to the link.

The actor finds the learner by name (``ray.get_actor``), so a collector may start before the
learner, outlive its restarts, or join a running run. A robot that faults (a safety stop its reset
cannot clear, a bus or camera failure) ends its loop with the robot as the safety layer leaves it;
``stats()["error"]`` says why and the driver takes it out of the run.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robosac.distributed.cluster import NAMESPACE
from robosac.distributed.outbox import Outbox

__all__ = ["CollectorActor", "CollectorSettings"]


@dataclass
class CollectorSettings:
    outbox_capacity: int = 5000  # rows held while the learner is unreachable (x row bytes of memory)
    send_batch: int = 64  # rows per learner.add call, at most
    send_interval_s: float = 0.1  # pause between sends when the outbox is drained
    poll_interval_s: float = 0.1  # between polls of the learner's version (a few bytes each)
    weights_interval_s: float = 1.0  # fetch newer weights at most this often (a pixel actor is ~1.5 MB)
    rpc_timeout_s: float = 2.0  # a call unanswered this long marks the link down
    resend_after_s: float = 30.0  # give up waiting on an unanswered call and send again
    learning_starts: int = 1000  # random actions until the learner holds this many transitions
    seed: int = 0
    stats_window: int = 3000  # steps the timing percentiles in stats() cover, at most


class _Link:
    """Up/down bookkeeping shared by the sender and the puller. Each outage is kept (the last 20)
    with a sample of the robot's figures when it began and when the link came back (``sample``)."""

    def __init__(self, sample: Any) -> None:
        self.up = False
        self.ever_up = False
        self.drops = 0
        self.down_total_s = 0.0
        self.outages: deque[dict[str, Any]] = deque(maxlen=20)
        self._open: dict[str, Any] | None = None
        self._sample = sample
        self._lock = threading.Lock()

    def mark(self, ok: bool) -> None:
        with self._lock:
            now = time.monotonic()
            if ok and not self.up:
                if self._open is not None:
                    self.down_total_s += now - self._open["t_down"]
                    self.outages.append({**self._open, "t_up": now, "recovered": self._sample()})
                self.up, self.ever_up, self._open = True, True, None
            elif not ok and self.up:
                self.up = False
                self.drops += 1
                self._open = {"t_down": now, "first": self._sample()}

    def as_dict(self) -> dict[str, Any]:
        cur = time.monotonic() - self._open["t_down"] if self._open is not None else 0.0
        return {"up": self.up, "drops": self.drops, "down_total_s": self.down_total_s + cur, "outages": list(self.outages)}


class CollectorActor:
    """Wrap with ``ray.remote(resources={"robot:<name>": 1})`` (see robosac.distributed.run)."""

    def __init__(self, robot: str, learner_name: str, env_id: str, env_kwargs: dict[str, Any], sac_config: Any,
                 settings: CollectorSettings, twin_config: str | None = None) -> None:
        import gymnasium as gym
        import torch

        __import__("robosac")  # registers the env ids (robosac/...)
        from robosac.runtime.collector import Collector
        from robosac.sac.sac import SAC

        torch.set_num_threads(1)  # acting only: the robot computer's other core stays free
        self.robot, self.learner_name, self.s = robot, learner_name, settings
        self.stream = secrets.randbits(62)  # this incarnation's row numbering; a restart starts a new one
        self.started = time.time()
        self.twin = None
        env_kwargs = dict(env_kwargs)
        if twin_config is not None:
            self.twin = _start_twin(twin_config, robot)
            env_kwargs.update(port=self.twin.serial, camera_source=self.twin.camera)
        self.env = gym.make(env_id, **env_kwargs)
        self.agent = SAC(self.env.observation_space, self.env.action_space, sac_config, seed=settings.seed)
        self.env.action_space.seed(settings.seed + self.stream % 100_000)
        self.outbox = Outbox(settings.outbox_capacity)
        self.link = _Link(self._figures)
        self.version = 0  # of the weights acting (0: none yet)
        self.learner_id: str | None = None  # whose weights those are
        self.seen: dict[str, Any] = {"version": 0, "learner_id": None, "transitions": 0}  # last poll's answer
        self._pending: tuple[int, str, dict[str, Any], float] | None = None  # (version, learner id, state, age at reply)
        self._picked_at = time.monotonic()
        self._fetched_at = 0.0  # when the puller last received weights
        self._age_at_pickup = 0.0
        self._warm = False
        # Per step (loop step, value): learner version - acting version (as last seen), and the age of
        # the acting weights (s since the learner published them, on the learner's clock + ours since pickup).
        self.staleness: deque[tuple[int, int]] = deque(maxlen=settings.stats_window)
        self.weight_age_s: deque[tuple[int, float]] = deque(maxlen=settings.stats_window)
        self.safety_stops = 0
        self.safety_stop_log: deque[tuple[int, str]] = deque(maxlen=50)  # (loop step, reason), newest last
        self.collector: Any = None
        self.safety: dict[str, Any] = {}
        self._handle: Any = None
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=f, name=n, daemon=True) for f, n in ((self._send_loop, "sender"), (self._poll_loop, "puller"))]
        for t in self._threads:
            t.start()
        self.collector = Collector(self.env, self._act, self._sink, seed=settings.seed + self.stream % 100_000).start()

    # ---- the control loop's side (no Ray calls here) -------------------------------------------

    def _act(self, obs: Any) -> tuple[np.ndarray, int]:
        from robosac.runtime.shared import load_actor_state

        p = self._pending
        if p is not None:
            self._pending = None
            load_actor_state(self.agent, p[2])
            self.version, self.learner_id, self._age_at_pickup = p[0], p[1], p[3]
            self._picked_at = time.monotonic()
        if self.version:
            step = self.collector.steps if self.collector is not None else 0
            if self.seen["learner_id"] == self.learner_id:
                self.staleness.append((step, self.seen["version"] - self.version))
            self.weight_age_s.append((step, time.monotonic() - self._picked_at + self._age_at_pickup))
        if not self._warm or not self.version:
            return self.env.action_space.sample(), 0
        return self.agent.act(obs), self.version

    def _sink(self, t: Any) -> None:
        from robosac.sac.replay import canonical_obs

        row: dict[str, Any] = {}
        for prefix, o in (("obs", t.obs), ("next_obs", t.next_obs)):
            for k, v in canonical_obs(o, self.agent.spec).items():
                row[f"{prefix}.{k}"] = np.array(v)  # a copy: the env may reuse its buffers
        row.update(action=np.asarray(t.action, np.float32), reward=np.float32(t.reward), terminated=np.float32(t.terminated),
                   policy_version=np.int64(t.policy_version), episode=np.int64(t.episode),
                   episode_end=np.bool_(t.terminated or t.truncated))
        self.outbox.put(row)
        self.safety = t.info.get("safety", self.safety)
        if t.info.get("safety_stop"):
            self.safety_stops += 1
            self.safety_stop_log.append((self.collector.steps, str(t.info["safety_stop"])))

    def _figures(self) -> dict[str, Any]:
        """What an outage record samples: loop steps, time spent in resets (s), rows waiting to be
        sent, safety stops, overruns."""
        c = self.collector
        robot = getattr(self.env.unwrapped, "robot", None)
        return {"steps": c.steps if c is not None else 0, "reset_s": c.reset_s if c is not None else 0.0, "unsent": self.outbox.unsent, "safety_stops": self.safety_stops,
                "overruns": int(getattr(robot, "overruns", 0))}

    # ---- the link's side ------------------------------------------------------------------------

    def _learner(self) -> Any:
        import ray

        if self._handle is None:
            try:
                self._handle = ray.get_actor(self.learner_name, namespace=NAMESPACE)
            except ValueError:  # not created yet (or gone for good): the caller retries
                return None
        return self._handle

    def _await(self, ref: Any, sent_at: float) -> tuple[str, Any]:
        """("ok", value) | ("slow", None): unanswered so far | ("failed", None): resend."""
        import ray
        from ray.exceptions import GetTimeoutError, RayError

        try:
            return "ok", ray.get(ref, timeout=self.s.rpc_timeout_s)
        except GetTimeoutError:
            return ("failed" if time.monotonic() - sent_at > self.s.resend_after_s else "slow"), None
        except RayError as e:
            if type(e).__name__ == "ActorDiedError":  # gone for good: look the name up again
                self._handle = None
            return "failed", None

    def _settle(self, inflight: tuple[Any, float]) -> tuple[tuple[Any, float] | None, Any]:
        """Await an in-flight call and mark the link: (the call if still unanswered else None, its
        reply or None). A failed call is dropped after a 0.5 s pause; the caller sends it again."""
        status, reply = self._await(*inflight)
        self.link.mark(status == "ok")
        if status == "slow":
            return inflight, None
        if status == "failed":
            self._stop.wait(0.5)
        return None, reply

    def _send_loop(self) -> None:
        inflight: tuple[Any, float] | None = None
        while not self._stop.is_set():
            if inflight is None:
                h = self._learner()
                b = self.outbox.batch(self.s.send_batch) if h is not None else None
                if b is None:
                    if h is None:
                        self.link.mark(False)
                    self._stop.wait(self.s.send_interval_s if h is not None else 1.0)
                    continue
                first, oldest, rows = b
                arrays = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
                inflight = (h.add.remote(self.robot, self.stream, first, oldest, arrays), time.monotonic())
            inflight, reply = self._settle(inflight)
            if reply is None:
                continue
            self.outbox.ack(reply["next_seq"], reply["durable_seq"])
            self.seen["transitions"] = reply["transitions"]

    def _poll_loop(self) -> None:
        import torch

        inflight: tuple[Any, float] | None = None
        while not self._stop.is_set():
            h = self._learner()
            if h is None:
                self._stop.wait(1.0)
                continue
            if inflight is None:
                # Weights only when due (or none yet, or from a learner that has restarted since):
                # every poll would move the whole actor across the network several times a second.
                want = (self.version == 0 or self.seen["learner_id"] != self.learner_id
                        or time.monotonic() - self._fetched_at >= self.s.weights_interval_s)
                ref = h.latest_weights.remote(self.version, self.learner_id, self.robot, self.stream, want)
                inflight = (ref, time.monotonic())
            inflight, reply = self._settle(inflight)
            if reply is None:
                continue
            self.seen = {"version": reply["version"], "learner_id": reply["learner_id"], "transitions": reply["transitions"]}
            if reply["transitions"] >= self.s.learning_starts:
                self._warm = True  # sticky: a link that drops later never sends the robot back to random actions
            if reply["weights"] is not None:
                state = {k: torch.from_numpy(np.array(v)) for k, v in reply["weights"].items()}
                self._pending = (reply["version"], reply["learner_id"], state, reply["age_s"])
                self._fetched_at = time.monotonic()
            self.outbox.release(reply.get("durable_seq", 0))
            self._stop.wait(self.s.poll_interval_s)

    # ---- remote methods ---------------------------------------------------------------------------

    def spaces(self) -> tuple[Any, Any]:
        return self.env.observation_space, self.env.action_space

    def stats(self, since_step: int = 0) -> dict[str, Any]:
        """The robot's figures: loop timing (from ``since_step`` on, at most ``stats_window`` steps),
        outbox, link, weights in use and their staleness, safety."""
        from robosac.runtime.collector import percentiles

        c = self.collector
        lo = max(since_step, c.steps - self.s.stats_window)
        cs = c.stats()
        try:
            import ray

            node = ray.get_runtime_context().get_node_id()
        except Exception:  # noqa: BLE001 - in-process use
            node = None
        return {
            "robot": self.robot, "stream": self.stream, "pid": os.getpid(), "host": socket.gethostname(), "node_id": node,
            "started": self.started, "running": c.running, "steps": c.steps, "episodes": c.episodes, "episode_step": c.episode_step,
            "overruns": cs["overruns"], "jitter_s": percentiles(c.late_s[lo:]), "obs_to_action_s": percentiles(c.obs_to_action_s[lo:]),
            "error": cs["error"], "safety_stops": self.safety_stops, "safety_stop_log": list(self.safety_stop_log), "safety": dict(self.safety),
            "outbox": {"produced": self.outbox.produced, "unsent": self.outbox.unsent, "held": self.outbox.held,
                       "max_held": self.outbox.max_held, "dropped": self.outbox.dropped,
                       "dropped_unconfirmed": self.outbox.dropped_unconfirmed, "capacity": self.outbox.capacity},
            "link": self.link.as_dict(), "acting_version": self.version, "acting_learner_id": self.learner_id,
            "learner_version_seen": self.seen["version"], "warm": self._warm,
            "staleness_versions": percentiles([v for i, v in list(self.staleness) if i >= lo]),
            "weight_age_s": percentiles([v for i, v in list(self.weight_age_s) if i >= lo]),
        }

    def stop(self, drain_s: float = 10.0) -> dict[str, Any]:
        """Stop the loop (robot left as the env closes it: torque off), deliver what is left (up to
        ``drain_s``), and return stats()."""
        self.collector.stop()
        deadline = time.monotonic() + drain_s
        while self.outbox.unsent and time.monotonic() < deadline:
            time.sleep(0.05)
        out = self.stats()
        self._stop.set()
        for t in self._threads:
            t.join(self.s.rpc_timeout_s + 1.0)
        self.env.close()
        if self.twin is not None:
            self.twin.stop()
            _twin_pidfile(self.robot).unlink(missing_ok=True)
        return out


def _start_twin(config: str, robot: str) -> Any:
    """`robosac twin CONFIG` on this node for `--twin`; a twin left by a previous incarnation of this
    robot's collector (killed before it could stop it) is stopped first, by its recorded PID."""
    import signal

    from robosac.runtime.bench import TwinProcess

    if not Path(config).exists():
        raise FileNotFoundError(f"--twin: the hardware config {config} is not on node {socket.gethostname()}")
    pidfile = _twin_pidfile(robot)
    try:
        old = int(pidfile.read_text())
        if "twin" in Path(f"/proc/{old}/cmdline").read_bytes().decode(errors="replace"):
            os.kill(old, signal.SIGTERM)
    except (OSError, ValueError):
        pass
    twin = TwinProcess(config)
    pidfile.write_text(str(twin.proc.pid))
    return twin


def _twin_pidfile(robot: str) -> Path:
    return Path(os.environ.get("TMPDIR", "/tmp")) / f"robosac-twin-{robot}.pid"
