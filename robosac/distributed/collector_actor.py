"""One robot's collector as a Ray actor, pinned to the node that owns the robot's serial port and camera.

Inside: a child process (:class:`~robosac.distributed.robot_process.RobotProcess`) running the
runtime's :class:`~robosac.runtime.collector.Collector` thread on the robot's env (the same control
loop, safety monitor and reset routine as ``robosac train`` in one process), sharing only memory
with the actor, so nothing the actor does (Ray's call handling, serialising transitions and
weights) competes with the loop for its interpreter lock. In the actor, three threads:

- pump: copies new transitions out of the child's shared ring into the
  :class:`~robosac.distributed.outbox.Outbox` (bounded, drop-oldest, numbered rows), with each
  step's timing and the weights that acted.
- sender: takes batches from the outbox and calls ``learner.add``; a reply acknowledges or rewinds.
  A call that does not answer within ``rpc_timeout_s`` marks the link down; the same call is
  awaited again (not resent, so a slow link is not flooded with copies) until it answers or fails,
  then resent.
- puller: every ``poll_interval_s`` asks ``learner.latest_weights(after_version)`` (a ``ray.get``
  with a timeout; the weights themselves at most every ``weights_interval_s``) and publishes newer
  weights into the child's shared weight store; the loop picks them up at the start of its next
  step. Until the learner has ``learning_starts`` transitions the robot acts uniformly at random
  (as the single-process run does); after that it keeps the last weights it has, whatever happens
  to the link.

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
from robosac.distributed.robot_process import RobotProcess, remove_segments

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
    realtime: bool = True  # the control loop thread asks for SCHED_FIFO (normal where not permitted)
    phase: float = 0.0  # fraction of a period that staggers the loop's deadlines (HardwareRobot.phase)


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
        import torch

        torch.set_num_threads(1)  # the actor only moves data: the robot computer's other core stays free
        self.robot, self.learner_name, self.s = robot, learner_name, settings
        self.stream = secrets.randbits(62)  # this incarnation's row numbering; a restart starts a new one
        self.started = time.time()
        self.twin = None
        env_kwargs = dict(env_kwargs)
        if twin_config is not None:
            self.twin = _start_twin(twin_config, robot)
            env_kwargs.update(port=self.twin.serial, camera_source=self.twin.camera)
        leftovers = _state_file(robot, "segments")
        if leftovers.exists():  # a previous incarnation's, killed before it could remove them
            remove_segments(leftovers.read_text().split())
        self.proc = RobotProcess(env_id, env_kwargs, sac_config, seed=settings.seed + self.stream % 100_000, realtime=settings.realtime,
                                 phase=settings.phase)
        leftovers.write_text(" ".join(self.proc.segment_names))
        self.outbox = Outbox(settings.outbox_capacity)
        self.link = _Link(self._figures)
        self.version = 0  # of the weights acting, as the learner numbers them (0: none yet)
        self.learner_id: str | None = None  # whose weights those are
        self.published: tuple[int, str | None] = (0, None)  # the newest weights handed to the loop
        # Local weight-store version -> (learner version, learner id, age at reply s, received at s).
        self._local: dict[int, tuple[int, str | None, float, float]] = {}
        self.seen: dict[str, Any] = {"version": 0, "learner_id": None, "transitions": 0}  # last poll's answer
        self._fetched_at = 0.0  # when the puller last received weights
        self._warm = False
        # Per step (loop step, value): timing, learner version - acting version (as last seen), and
        # the age of the acting weights (s since the learner published them when the step acted).
        w = settings.stats_window
        self.late_s: deque[tuple[int, float]] = deque(maxlen=w)
        self.obs_to_action_s: deque[tuple[int, float]] = deque(maxlen=w)
        self.staleness: deque[tuple[int, int]] = deque(maxlen=w)
        self.weight_age_s: deque[tuple[int, float]] = deque(maxlen=w)
        self._handle: Any = None
        self._pump_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=f, name=n, daemon=True)
                         for f, n in ((self._pump_loop, "pump"), (self._send_loop, "sender"), (self._poll_loop, "puller"))]
        for t in self._threads:
            t.start()

    # ---- the loop's rows (the loop itself runs in the child process) ---------------------------

    def _pump_once(self) -> None:
        with self._pump_lock:  # the pump thread and stop() both pump: rows must enter the outbox once, in order
            self._pump_rows()

    def _pump_rows(self) -> None:
        self.proc.events()
        for r in self.proc.pump():
            local = int(r["policy_version"])
            version, learner_id, age, received = self._local.get(local, (0, None, 0.0, 0.0))
            step = int(r["step"])
            self.late_s.append((step, float(r["late_s"])))
            self.obs_to_action_s.append((step, float(r["obs_to_action_s"])))
            if local:
                self.version, self.learner_id = version, learner_id
                if self.seen["learner_id"] == learner_id:
                    self.staleness.append((step, self.seen["version"] - version))
                self.weight_age_s.append((step, float(r["t_act"]) - received + age))
            row = {k: v for k, v in r.items() if k.startswith(("obs.", "next_obs."))}
            row.update(action=r["action"], reward=np.float32(r["reward"]), terminated=np.float32(r["terminated"]),
                       policy_version=np.int64(version), episode=np.int64(r["episode"]), episode_end=np.bool_(r["episode_end"]))
            self.outbox.put(row)

    def _pump_loop(self) -> None:
        while not self._stop.wait(0.01):
            self._pump_once()

    def _figures(self) -> dict[str, Any]:
        """What an outage record samples: loop steps, time spent in resets (s), rows waiting to be
        sent, safety stops, overruns."""
        p = self.proc
        return {"steps": int(p.figure("steps")), "reset_s": p.figure("reset_s"), "unsent": self.outbox.unsent,
                "safety_stops": len(p.safety_stops), "overruns": int(p.figure("overruns"))}

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
                have, have_id = self.published
                want = (have == 0 or self.seen["learner_id"] != have_id
                        or time.monotonic() - self._fetched_at >= self.s.weights_interval_s)
                ref = h.latest_weights.remote(have, have_id, self.robot, self.stream, want)
                inflight = (ref, time.monotonic())
            inflight, reply = self._settle(inflight)
            if reply is None:
                continue
            self.seen = {"version": reply["version"], "learner_id": reply["learner_id"], "transitions": reply["transitions"]}
            if reply["weights"] is not None:
                state = {k: torch.from_numpy(np.array(v)) for k, v in reply["weights"].items()}
                local = self.proc.publish(state, reply["version"])
                self._fetched_at = time.monotonic()
                self._local[local] = (reply["version"], reply["learner_id"], reply["age_s"], self._fetched_at)
                self.published = (reply["version"], reply["learner_id"])
            if reply["transitions"] >= self.s.learning_starts and not self._warm:
                self._warm = True  # sticky: a link that drops later never sends the robot back to random actions
                self.proc.set_warm()
            self.outbox.release(reply.get("durable_seq", 0))
            self._stop.wait(self.s.poll_interval_s)

    # ---- remote methods ---------------------------------------------------------------------------

    def spaces(self) -> tuple[Any, Any]:
        return self.proc.observation_space, self.proc.action_space

    def stats(self, since_step: int = 0) -> dict[str, Any]:
        """The robot's figures: loop timing (from ``since_step`` on, at most ``stats_window`` steps),
        outbox, link, weights in use and their staleness, safety."""
        from robosac.runtime.collector import percentiles

        p = self.proc
        steps = int(p.figure("steps"))
        lo = max(since_step, steps - self.s.stats_window)

        def since(d: deque) -> list:
            return [v for i, v in list(d) if i >= lo]

        try:
            import ray

            node = ray.get_runtime_context().get_node_id()
        except Exception:  # noqa: BLE001 - in-process use
            node = None
        return {
            "robot": self.robot, "stream": self.stream, "pid": os.getpid(), "loop_pid": p.pid, "segments": p.segment_names, "host": socket.gethostname(),
            "node_id": node, "started": self.started, "running": p.running, "steps": steps, "episodes": int(p.figure("episodes")),
            "episode_step": int(p.figure("episode_step")), "overruns": int(p.figure("overruns")), "scheduling": p.scheduling,
            "jitter_s": percentiles(since(self.late_s)), "obs_to_action_s": percentiles(since(self.obs_to_action_s)),
            "error": p.error, "safety_stops": len(p.safety_stops), "safety_stop_log": p.safety_stops[-50:], "safety": dict(p.safety),
            "outbox": {"produced": self.outbox.produced, "unsent": self.outbox.unsent, "held": self.outbox.held,
                       "max_held": self.outbox.max_held, "dropped": self.outbox.dropped,
                       "dropped_unconfirmed": self.outbox.dropped_unconfirmed, "capacity": self.outbox.capacity,
                       "lost_in_ring": p.lost},
            "link": self.link.as_dict(), "acting_version": self.version, "acting_learner_id": self.learner_id,
            "learner_version_seen": self.seen["version"], "warm": self._warm,
            "staleness_versions": percentiles(since(self.staleness)), "weight_age_s": percentiles(since(self.weight_age_s)),
        }

    def stop(self, drain_s: float = 10.0) -> dict[str, Any]:
        """Stop the loop (robot left as the env closes it: torque off), deliver what is left (up to
        ``drain_s``), and return stats()."""
        self.proc.stop()
        self._pump_once()  # the rows written between the last pump and the loop's end
        deadline = time.monotonic() + drain_s
        while self.outbox.unsent and time.monotonic() < deadline:
            time.sleep(0.05)
        out = self.stats()
        self._stop.set()
        for t in self._threads:
            t.join(self.s.rpc_timeout_s + 1.0)
        self.proc.close()
        _state_file(self.robot, "segments").unlink(missing_ok=True)
        if self.twin is not None:
            self.twin.stop()
            _state_file(self.robot, "twin").unlink(missing_ok=True)
        return out


def _start_twin(config: str, robot: str) -> Any:
    """`robosac twin CONFIG` on this node for `--twin`; a twin left by a previous incarnation of this
    robot's collector (killed before it could stop it) is stopped first, by its recorded PID."""
    import signal

    from robosac.runtime.bench import TwinProcess

    if not Path(config).exists():
        raise FileNotFoundError(f"--twin: the hardware config {config} is not on node {socket.gethostname()}")
    pidfile = _state_file(robot, "twin")
    try:
        old = int(pidfile.read_text())
        if "twin" in Path(f"/proc/{old}/cmdline").read_bytes().decode(errors="replace"):
            os.kill(old, signal.SIGTERM)
    except (OSError, ValueError):
        pass
    twin = TwinProcess(config)
    pidfile.write_text(str(twin.proc.pid))
    return twin


def _state_file(robot: str, what: str) -> Path:
    """Where an incarnation leaves what the next one must clean up: "twin" (the PID of the twin it
    started), "segments" (its robot process's shared-memory names)."""
    return Path(os.environ.get("TMPDIR", "/tmp")) / {"twin": f"robosac-twin-{robot}.pid", "segments": f"robosac-segments-{robot}.txt"}[what]
