"""A robot's control loop in a process of its own, beside its collector actor.

Why a process: the collector actor's process also runs Ray's call handling and the threads that
send transitions and fetch weights. Sharing one interpreter lock with them, the control loop woke
late at its deadlines (p99 0.7-1.7 ms on an idle machine against 0.0003 ms for the single-process
runtime). In its own process the loop has the interpreter to itself, as in ``robosac train``, and its thread
asks for SCHED_FIFO 50 (``realtime``; a normal thread where that is not permitted), so the actor's
threads, the learner and Ray's own processes on the same computer do not delay its wake-ups. The
process's other threads (its main thread, the camera reader) run at SCHED_FIFO 49: they share the
interpreter lock with the loop, and one of them preempted while holding it would stall the loop.
``phase`` staggers the loops of robots that share a computer (see ``HardwareRobot.phase``).

The two sides share memory only, and neither waits for the other:

- rows: a :class:`~robosac.runtime.shared.SharedReplay` ring the loop writes every transition into
  (with its episode marks and step timing); the actor copies new rows out every few ms. Rows the
  actor failed to copy before the ring lapped them are counted as lost.
- weights: a :class:`~robosac.runtime.shared.WeightStore` the actor publishes into; the loop picks
  up the newest at the start of a step (the row says which local version acted).
- figures: a small float64 array the loop and the child's main thread keep current (steps,
  episodes, reset time, overruns, ...), and flags the actor sets (warm: act with the weights;
  stop).

Rare events (start-up, safety stops, errors, the final figures) go over a pipe. The child's main
thread stops the loop, closes the env (torque off) and exits when asked to, and also when the
actor's process has died (its parent PID changed). Ray's ``ray.kill`` also kills the worker's
children, and then the servos' bus watchdog stops the robot, as for any host that dies; the next
incarnation removes the dead one's shared-memory segments (``segment_names`` / ``remove_segments``).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from typing import Any

import numpy as np

__all__ = ["RobotProcess", "EXTRA_FIELDS"]

# Per row, besides the replay's own fields: episode marks and the step's timing.
EXTRA_FIELDS = {"episode": "int64", "episode_end": "bool", "step": "int64", "late_s": "float64",
                "obs_to_action_s": "float64", "t_act": "float64"}
# Figures the child keeps current, in this order, in a shared float64 array.
FIGURES = ("steps", "episodes", "episode_step", "reset_s", "overruns", "running", "warm", "stop")
_F = {k: i for i, k in enumerate(FIGURES)}


def _child(conn: Any, env_id: str, env_kwargs: dict[str, Any], sac_config: Any, seed: int, realtime: bool,
           phase: float, parent_pid: int) -> None:
    """The child process: env + Collector; see the module docstring."""
    import gymnasium as gym
    import torch

    __import__("robosac")  # registers the env ids (robosac/...)
    from multiprocessing import shared_memory

    from robosac.runtime.collector import Collector, try_realtime
    from robosac.runtime.shared import SharedReplay, WeightStore, load_actor_state
    from robosac.sac.sac import Policy

    torch.set_num_threads(1)
    env = collector = None
    segments: list[Any] = []
    send_lock = threading.Lock()  # the loop thread (safety stops) and this thread both report

    def send(msg: tuple) -> None:
        with send_lock:
            conn.send(msg)

    try:
        env = gym.make(env_id, **env_kwargs)
        if hasattr(env.unwrapped.robot, "phase"):
            env.unwrapped.robot.phase = phase
        agent = Policy(env.observation_space, env.action_space, sac_config, seed=seed)
        env.action_space.seed(seed)
        conn.send(("spaces", env.observation_space, env.action_space))
        _, ring_name, weights_name, figures_name = conn.recv()
        ring = SharedReplay.attach(ring_name, spec=agent.spec)
        weights = WeightStore.attach(weights_name)
        fig_shm = shared_memory.SharedMemory(name=figures_name)
        fig = np.ndarray((len(FIGURES),), np.float64, buffer=fig_shm.buf)
        segments += [ring.shm, weights.shm, fig_shm]
        acting = {"version": 0}

        def act(obs: Any) -> tuple[np.ndarray, int]:
            got = weights.latest(acting["version"])
            if got is not None:
                load_actor_state(agent, got[1])
                acting["version"] = got[0]
            if not fig[_F["warm"]] or not acting["version"]:
                return env.action_space.sample(), 0
            return agent.act(obs), acting["version"]

        def sink(t: Any) -> None:
            c = collector
            ring.add(t.obs, t.action, t.reward, t.next_obs, t.terminated, t.policy_version,
                     episode=t.episode, episode_end=t.terminated or t.truncated, step=c.steps,
                     late_s=float(t.info.get("late_s", 0.0)), obs_to_action_s=float(t.info.get("obs_to_action_s", t.t_act - t.t_obs)),
                     t_act=t.t_act)
            if t.info.get("safety_stop"):
                send(("safety_stop", c.steps, str(t.info["safety_stop"]), dict(t.info.get("safety", {}))))

        if realtime:
            # Every thread of this process (this one, the camera reader the env started) runs just
            # below the loop's priority: the loop waits for the interpreter lock whenever another
            # thread holds it, and a normal thread holding it can be preempted for milliseconds by
            # the learner or the twins (measured: loop wake-ups 1.7-2.9 ms late with 4 robots on 2
            # cores). Only now, after the start-up's seconds of CPU (the env, the camera, the
            # networks): four robots starting under SCHED_FIFO starved their twins' serial replies
            # on 2 cores (every robot's servos silent 5 reads in a row).
            try_realtime(49, all_threads=True)
        collector = Collector(env, act, sink, seed=seed, realtime=realtime).start()
        conn.send(("started", os.getpid()))
        last_safety = 0.0
        while True:
            robot = getattr(env.unwrapped, "robot", None)
            fig[_F["steps"]], fig[_F["episodes"]], fig[_F["episode_step"]] = collector.steps, collector.episodes, collector.episode_step
            fig[_F["reset_s"]], fig[_F["overruns"]] = collector.reset_s, int(getattr(robot, "overruns", 0))
            fig[_F["running"]] = float(collector.running)
            if time.monotonic() - last_safety > 1.0:
                last_safety = time.monotonic()
                send(("safety", dict(collector.last_info.get("safety", {})), collector.scheduling))
            if fig[_F["stop"]] or os.getppid() != parent_pid or not collector.running:
                break
            time.sleep(0.02)
        collector.stop()
        fig[_F["steps"]], fig[_F["running"]] = collector.steps, 0.0
        err = collector.stats()["error"]
        send(("stopped", err))
    except BaseException as e:  # noqa: BLE001 - reported to the actor; the env's close leaves the robot safe
        try:
            send(("stopped", f"{type(e).__name__}: {e}"))
        except OSError:
            pass
    finally:
        if collector is not None:
            collector.stop()
        if env is not None:
            env.close()
        if os.getppid() != parent_pid:  # the actor was killed: its segments are ours to remove
            for shm in segments:
                try:
                    shm.unlink()
                except FileNotFoundError:
                    pass


class RobotProcess:
    """Start the child; then :meth:`pump` copies new rows out, :meth:`publish` hands it weights,
    :meth:`figure` reads its counters, :meth:`stop` ends it."""

    def __init__(self, env_id: str, env_kwargs: dict[str, Any], sac_config: Any, seed: int, *, realtime: bool = True,
                 phase: float = 0.0, ring_capacity: int = 400, start_timeout_s: float = 120.0) -> None:
        from multiprocessing import shared_memory

        from robosac.runtime.shared import SharedReplay, WeightStore, actor_state
        from robosac.sac.sac import Policy

        ctx = mp.get_context("spawn")
        self._conn, child_conn = ctx.Pipe()
        self.proc = ctx.Process(target=_child, args=(child_conn, env_id, env_kwargs, sac_config, seed, realtime, phase, os.getpid()),
                                name="robosac-robot", daemon=True)
        self.proc.start()
        child_conn.close()
        msg = self._recv_startup(start_timeout_s)
        self.observation_space, self.action_space = msg[1], msg[2]
        agent = Policy(self.observation_space, self.action_space, sac_config, seed=seed)  # for the layouts only
        self.spec = agent.spec
        self.ring = SharedReplay.create(agent.spec, int(np.prod(self.action_space.shape)), ring_capacity, extra=EXTRA_FIELDS)
        self.weights = WeightStore.create(actor_state(agent))
        self._fig_shm = shared_memory.SharedMemory(create=True, size=8 * len(FIGURES))
        self.fig = np.ndarray((len(FIGURES),), np.float64, buffer=self._fig_shm.buf)
        self.fig[:] = 0.0
        self._conn.send(("names", self.ring.name, self.weights.name, self._fig_shm.name))
        msg = self._recv_startup(start_timeout_s)
        self.pid = msg[1]
        self._lock = threading.Lock()  # events() and pump() may be called from two threads (pump, stop)
        self.pumped = 0  # ring position of the next row to copy out
        self.lost = 0  # rows the ring lapped before they were copied
        self.error: str | None = None
        self.stopped = False
        self.safety: dict[str, Any] = {}
        self.scheduling = "unknown yet"  # the loop thread's (SCHED_FIFO where permitted), reported within 1 s
        self.safety_stops: list[tuple[int, str]] = []

    def _recv_startup(self, timeout_s: float) -> tuple:
        if not self._conn.poll(timeout_s):
            self.proc.kill()
            raise RuntimeError(f"the robot process did not start within {timeout_s:.0f} s")
        msg = self._conn.recv()
        if msg[0] == "stopped":
            self.proc.join(10)
            raise RuntimeError(f"the robot process failed to start: {msg[1]}")
        return msg

    # ---- the actor's side ----------------------------------------------------------------------

    def events(self) -> None:
        """Read what the child reported (safety stops, safety figures, its end)."""
        with self._lock:
            self._events()

    def _events(self) -> None:
        try:
            while self._conn.poll():
                msg = self._conn.recv()
                if msg[0] == "safety_stop":
                    self.safety_stops.append((msg[1], msg[2]))
                    self.safety = msg[3]
                elif msg[0] == "safety":
                    self.safety, self.scheduling = msg[1], msg[2]
                elif msg[0] == "stopped":
                    self.stopped, self.error = True, msg[1]
        except (EOFError, OSError):
            if not self.stopped:
                self.stopped = True
                self.error = self.error or f"the robot process ended (exit code {self.proc.exitcode})"

    def pump(self) -> list[dict[str, np.ndarray]]:
        """Copies of the rows written since the last call, oldest first (rows lapped are counted in
        ``lost``)."""
        with self._lock:
            return self._pump()

    def _pump(self) -> list[dict[str, np.ndarray]]:
        n = self.ring.written
        lo = self.ring.oldest_intact()
        if self.pumped < lo:
            self.lost += lo - self.pumped
            self.pumped = lo
        rows = [self.ring.row(p) for p in range(self.pumped, n)]
        lo = self.ring.oldest_intact()  # a row copied while the writer lapped it is torn: drop it
        torn = max(0, lo - self.pumped)
        self.lost += torn
        self.pumped = n
        return rows[torn:]

    def publish(self, state: dict[str, Any], learner_version: int) -> int:
        """Hand weights to the loop; returns the local version the rows will carry."""
        return self.weights.publish(state, updates=learner_version)

    def figure(self, name: str) -> float:
        return float(self.fig[_F[name]])

    def set_warm(self) -> None:
        self.fig[_F["warm"]] = 1.0

    @property
    def running(self) -> bool:
        return self.proc.is_alive() and not self.stopped and bool(self.fig[_F["running"]])

    def stop(self, timeout_s: float = 20.0) -> None:
        """Ask the loop to stop and the env to close (robot left safe); wait for the process."""
        self.fig[_F["stop"]] = 1.0
        deadline = time.monotonic() + timeout_s
        while self.proc.is_alive() and time.monotonic() < deadline:
            self.events()
            time.sleep(0.02)
        self.events()
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)

    @property
    def segment_names(self) -> list[str]:
        return [self.ring.name, self.weights.name, self._fig_shm.name]

    def close(self) -> None:
        for r in (self.ring, self.weights):
            r.close()
        self.fig = None  # type: ignore[assignment]
        try:
            self._fig_shm.close()
            self._fig_shm.unlink()
        except (BufferError, FileNotFoundError):
            pass


def remove_segments(names: list[str]) -> None:
    """Unlink shared-memory segments a killed robot process and its actor left behind."""
    from multiprocessing import shared_memory

    for name in names:
        try:
            shm = shared_memory.SharedMemory(name=name)
        except (FileNotFoundError, ValueError):
            continue
        shm.close()
        shm.unlink()
