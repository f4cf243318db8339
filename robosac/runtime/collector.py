"""The collector: a thread that runs an env at its control rate, acting with the newest policy.

The hardware backend paces itself (`HardwareRobot` sleeps to each period's deadline, then spins
briefly, and never bursts to catch up); the sim backend runs as fast as it can. The collector
adds what a training run needs around `env.step`:

- `act(obs) -> (action, policy_version)`: called once per step; with a learner process it reads
  the newest published weights without blocking (see robosac.runtime.shared.WeightStore).
- every transition goes to `sink(Transition)` with the policy version that produced it and its
  timestamps; episode starts/ends are marked; `resetting` is set while the robot resets itself,
  so a learner can pause then.
- timing per step: |deadline jitter| (`late_s`), observation-to-action latency, period, overruns;
  `stats()` summarises them (p50/p99/max).
- `realtime=True`: the loop thread asks for SCHED_FIFO (priority 50), so that other busy
  processes on the robot's computer do not delay its wake-ups; without the permission (not root,
  no CAP_SYS_NICE or rtprio limit) it runs as a normal thread. `scheduling` says which.
- an exception (a safety stop that reset cannot clear, a stale camera, a bus fault) ends the loop;
  the robot is left as the safety layer leaves it (torque off or holding) and the exception is kept
  in `error` for the caller.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

__all__ = ["Collector", "Transition", "percentiles", "try_realtime"]


def try_realtime(priority: int = 50, all_threads: bool = False) -> str:
    """Try SCHED_FIFO `priority` for the calling thread (threads it starts later inherit it), or
    with ``all_threads`` for every thread this process has now (Linux); say what was done (users
    may lack the permission)."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))  # 0 = this thread
        for tid in [int(t) for t in os.listdir("/proc/self/task")] if all_threads else []:
            try:
                os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(priority))
            except ProcessLookupError:  # a thread that ended meanwhile
                pass
        return f"SCHED_FIFO {priority}"
    except (AttributeError, PermissionError, OSError) as e:
        return f"normal (SCHED_FIFO refused: {e.__class__.__name__})"


@dataclass
class Transition:
    obs: dict[str, np.ndarray]
    action: np.ndarray
    reward: float
    next_obs: dict[str, np.ndarray]
    terminated: bool
    truncated: bool
    policy_version: int
    episode: int
    step: int  # step within the episode (0-based)
    t_obs: float  # time.monotonic() when obs was available, s
    t_act: float  # time.monotonic() when the action was handed to the env, s
    info: dict[str, Any]


def percentiles(x: list[float] | np.ndarray) -> dict[str, float]:
    """p50, p99 and max of |x| (NaN when empty)."""
    a = np.abs(np.asarray(x, dtype=float))
    if a.size == 0:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "max": float(a.max())}


class Collector:
    """Run `env` in a thread. act(obs) -> (action, version); sink(Transition) gets every step.

    max_steps: stop after this many env steps (None: until stop()). seed: the first reset's seed.
    on_reset(info): called with each finished reset's info (how the robot's own reset went)."""

    def __init__(
        self,
        env: Any,
        act: Callable[[dict[str, np.ndarray]], tuple[np.ndarray, int]],
        sink: Callable[[Transition], None] | None = None,
        *,
        max_steps: int | None = None,
        seed: int | None = None,
        resetting: Any = None,
        realtime: bool = False,
        on_reset: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.env = env
        self.on_reset = on_reset
        self.act = act
        self.sink = sink
        self.max_steps = max_steps
        self.seed = seed
        self.realtime = realtime
        self.scheduling = "normal (not requested)"  # the loop thread's, once it runs
        # Set while the robot resets itself; pass a learner's pause event to pause learning then.
        self.resetting = resetting if resetting is not None else threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.steps = 0
        self.episodes = 0
        self.episode_step = 0  # steps taken in the current episode
        self._reset_done_s = 0.0  # time spent in finished resets, s
        self._reset_t0: float | None = None  # monotonic start of the reset under way
        self.returns: list[float] = []
        self.late_s: list[float] = []
        self.obs_to_action_s: list[float] = []
        self.act_s: list[float] = []  # time inside act(), s
        self.versions: list[int] = []
        self.last_info: dict[str, Any] = {}  # the newest step's info (frame age, temperatures, safety)

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> "Collector":
        self._thread = threading.Thread(target=self._run, name="collector", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.join(timeout)

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def reset_s(self) -> float:
        """Time the loop has spent resetting the robot so far, the reset under way included (s)."""
        t0 = self._reset_t0
        return self._reset_done_s + (time.monotonic() - t0 if t0 is not None else 0.0)

    # -- loop ----------------------------------------------------------------------------------
    def _reset(self) -> dict[str, np.ndarray]:
        self.resetting.set()
        self._reset_t0 = t0 = time.monotonic()
        try:
            obs, info = self.env.reset(seed=self.seed if self.episodes == 0 else None)
        finally:
            self._reset_done_s += time.monotonic() - t0
            self._reset_t0 = None
            self.resetting.clear()
        self.episode_step = 0
        if self.on_reset is not None:
            self.on_reset(info)
        return obs

    def _run(self) -> None:
        if self.realtime:
            self.scheduling = try_realtime()
        try:
            obs = self._reset()
            t_obs = time.monotonic()
            ret = 0.0
            while not self._stop.is_set() and (self.max_steps is None or self.steps < self.max_steps):
                t0 = time.monotonic()
                action, version = self.act(obs)
                t_act = time.monotonic()
                next_obs, reward, terminated, truncated, info = self.env.step(action)
                t_next = time.monotonic()
                self.act_s.append(t_act - t0)
                self.late_s.append(float(info.get("late_s", 0.0)))
                self.obs_to_action_s.append(float(info.get("obs_to_action_s", t_act - t_obs)))
                self.versions.append(int(version))
                self.last_info = info
                if self.sink is not None:
                    self.sink(Transition(obs, np.asarray(action), float(reward), next_obs, bool(terminated), bool(truncated),
                                         int(version), self.episodes, self.episode_step, t_obs, t_act, info))
                self.steps += 1
                self.episode_step += 1
                ret += float(reward)
                obs, t_obs = next_obs, t_next
                if terminated or truncated:
                    self.returns.append(ret)
                    self.episodes += 1
                    ret = 0.0
                    if self._stop.is_set() or (self.max_steps is not None and self.steps >= self.max_steps):
                        break
                    obs = self._reset()
                    t_obs = time.monotonic()
        except BaseException as e:  # noqa: BLE001 - kept for the caller; the robot is already safe
            self.error = e

    # -- telemetry -----------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Loop figures so far: steps, episodes, overruns, |deadline jitter| and
        observation-to-action latency (s, p50/p99/max), time in act() (s)."""
        robot = getattr(self.env.unwrapped, "robot", None)
        return {
            "steps": self.steps,
            "episodes": self.episodes,
            "scheduling": self.scheduling,
            "overruns": int(getattr(robot, "overruns", 0)),
            "jitter_s": percentiles(self.late_s),
            "obs_to_action_s": percentiles(self.obs_to_action_s),
            "act_s": percentiles(self.act_s),
            "error": None if self.error is None else f"{type(self.error).__name__}: {self.error}",
        }
