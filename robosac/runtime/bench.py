"""`robosac bench loop`: the claw on the running twin at a fixed rate with SAC learning beside it.

Two designs, same robot, same policy network:
- async: the collector thread acts with the newest published weights while a learner PROCESS
  updates flat out from the shared-memory replay (1 torch thread each, so on 2 cores neither
  starves the other);
- sequential: one SAC update inside each control period (what a single loop does).
Reported (JSON): |deadline jitter| p50/p99/max, overruns, observation-to-action latency, learner
updates/s, weight staleness (age of the weights in use, and publish-to-pickup delay), all over the
steady state: from the learner's first update on (sequential: after the first second); overruns
during start-up (first frames, the learner's warm-up) are reported apart.

The twin runs as its own process (`robosac twin`), as the robot would be its own hardware.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

__all__ = ["bench_loop", "TwinProcess"]

ROOT = Path(__file__).resolve().parents[2]


class TwinProcess:
    """`robosac twin CONFIG` in a subprocess; .serial and .cameras from its printed lines.

    randomize: the twin's default one-off domain randomisation (False: `--no-randomize`, the
    nominal model). camera_fps: the served camera's rate (None: the config's; a state-only run
    can lower it to leave the CPU to the control loops)."""

    def __init__(self, config: str | Path, *, randomize: bool = True, camera_fps: float | None = None) -> None:
        env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
        self.log = tempfile.TemporaryFile("w+")
        cmd = [sys.executable, "-m", "robosac.cli", "twin", str(config), "--report-s", "0"]
        if not randomize:
            cmd.append("--no-randomize")
        if camera_fps is not None:
            cmd += ["--camera-fps", str(camera_fps)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env, cwd=ROOT)
        lines: dict[str, str] = {}
        deadline = time.monotonic() + 60
        while "state" not in lines:
            line = self.proc.stdout.readline()
            if not line or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("robosac twin did not start")
            k, _, v = line.partition(": ")
            lines.setdefault(k, v.strip())
        self.serial, self.camera = lines["serial"], lines.get("camera")

    def env_kwargs(self) -> dict[str, Any]:
        """The hardware-backend env's keyword arguments for this twin: its serial port and camera,
        and a reply margin of 20 ms (real servos need 2): the emulated chain shares 2 cores with the
        learner and the renderer, and answers later than a servo's firmware."""
        return {"port": self.serial, "camera_source": self.camera, "bus_settings": {"margin_ms": 20.0}}

    def stop(self) -> dict[str, Any] | None:
        """Stop the twin; returns its final "twin stats" (clock, cameras, servo_limit_violations:
        {id: {goal item: count}} of goals outside the config's limits that reached a servo), or
        None if it printed none (killed, or crashed)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.seek(0)
        stats = None
        for line in self.log:
            if line.startswith("twin stats: "):
                stats = json.loads(line[len("twin stats: "):])
        return stats


def bench_loop(seconds: float = 60.0, rate_hz: float = 50.0, mode: str = "async", pixels: bool = True,
               image_size: int = 64, publish_every: int = 1, realtime: bool = True, phase: float = 0.0,
               camera_fps: float | None = None, bus_settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """One claw on its own twin with a learner beside it, for ``seconds`` of steady state.

    ``phase``: the loop's deadline phase (fraction of a period, `HardwareRobot.phase`), to stagger
    several of these run side by side as robosac.distributed staggers its robots; ``camera_fps``:
    the twin's camera rate (None: the config's); ``bus_settings``: ServoBus overrides (default: a
    20 ms reply margin)."""
    import gymnasium as gym
    import torch

    import robosac  # noqa: F401 - env ids
    from robosac.config import load_config
    from robosac.runtime.collector import Collector, percentiles
    from robosac.runtime.learner import AsyncLearner, LearnerConfig
    from robosac.sac.replay import Replay
    from robosac.sac.sac import SAC
    from robosac.sac.spaces import parse_obs_space

    if mode not in ("async", "sequential"):
        raise ValueError(f"mode: invalid value {mode!r}; allowed: async, sequential")
    torch.set_num_threads(1)  # the collector's inference; more threads only add jitter here
    cfg = load_config(ROOT / "hardware_configs" / "claw.yaml")
    cfg = replace(cfg, control=replace(cfg.control, rate_hz=rate_hz, episode_s=max(seconds * 2, 10.0)))
    # Nominal model: this measures the loop's timing, and runs compare best on one fixed robot.
    twin = TwinProcess(ROOT / "hardware_configs" / "claw.yaml", randomize=False, camera_fps=camera_fps)
    env = None
    tmp = tempfile.TemporaryDirectory()
    link = learner = None
    try:
        twin_kwargs = twin.env_kwargs() | ({"bus_settings": bus_settings} if bus_settings else {})
        env = gym.make("robosac/ClawValveTurn-v0", backend="hardware", config=cfg, pixels=pixels,
                       image_size=(image_size, image_size), **twin_kwargs)
        agent = SAC(env.observation_space, env.action_space, seed=0)
        spec = parse_obs_space(env.observation_space)
        act_dim = env.action_space.shape[0]
        pickups: list[float] = []
        ages: list[tuple[float, float]] = []  # (time, age of the weights in use), s
        state = {"version": 0}  # sequential: updates done inside the loop
        batch = 128
        if mode == "async":
            link = AsyncLearner(agent, env.observation_space, env.action_space, 20_000, Path(tmp.name) / "learner.pt",
                                config=LearnerConfig(batch_size=batch, learning_starts=batch, max_updates_per_step=1000.0,
                                                     publish_every=publish_every, checkpoint_every_s=3600.0, threads=1))
            link.start()
            replay, learner = link.replay, link.process

            def act(obs):
                picked = link.refresh()
                now = time.monotonic()
                if picked:
                    pickups.append(now - link.publish_time)
                ages.append((now, now - link.publish_time))
                return agent.act(obs), link.version

            def sink(t):
                replay.add(t.obs, t.action, t.reward, t.next_obs, t.terminated, t.policy_version)
        else:
            local = Replay(spec, act_dim, capacity=20_000, seed=0)

            def act(obs):
                if len(local) >= batch:
                    agent.update(agent.sample(local, batch))
                    state["version"] += 1
                return agent.act(obs), state["version"]

            def sink(t):
                local.add(t.obs, t.action, t.reward, t.next_obs, t.terminated)

        n_steps = int((seconds + 5.0) * rate_hz)  # + start-up, so the steady state lasts `seconds`
        col = Collector(env, act, sink, max_steps=n_steps, seed=0, realtime=realtime)
        t0 = time.monotonic()
        u0, i0, o0 = 0, 0, 0
        robot = env.unwrapped.robot
        robot.phase = float(phase)
        col.start()
        t_end = time.monotonic() + seconds + 10.0  # a slow (sequential) loop is cut at the time
        # Warm-up excluded from the learner rate: count from when updates begin.
        while col.running:
            time.sleep(0.5)
            if time.monotonic() > t_end:
                col.stop()
            if learner is not None and u0 == 0 and learner.stats()["updates"] > 0:
                # Steady state from here: the learner is updating and publishing.
                u0, t0, i0, o0 = learner.stats()["updates"], time.monotonic(), col.steps, robot.overruns
            elif learner is None and i0 == 0 and col.steps >= rate_hz:
                t0, i0, o0 = time.monotonic(), col.steps, robot.overruns
        wall = time.monotonic() - t0
        if col.error is not None:
            raise RuntimeError(f"collector failed: {col.stats()['error']}")
        st = col.stats()
        if learner is not None:
            ls = learner.stats()
            updates, ups = ls["updates"], (ls["updates"] - u0) / max(wall, 1e-9)
        else:
            updates, ups = state["version"], state["version"] / max(wall, 1e-9)
        # Figures from the steady state on (learner updating; sequential: after the first second):
        # start-up (first frames, warm-up without weights) is reported apart.
        skip = i0
        ages_ss = [a for t, a in ages if t >= t0]
        return {
            "mode": mode,
            "rate_hz": rate_hz,
            "seconds": seconds,
            "pixels": [image_size, image_size, 3] if pixels else None,
            "steps": st["steps"],
            "steady_state_steps": st["steps"] - i0,
            "overruns": st["overruns"] - o0,
            "overruns_during_start_up": o0,
            "jitter_ms": {k: 1000 * v for k, v in percentiles(col.late_s[skip:]).items()},
            "obs_to_action_ms": {k: 1000 * v for k, v in percentiles(col.obs_to_action_s[skip:]).items()},
            "act_ms": {k: 1000 * v for k, v in percentiles(col.act_s[skip:]).items()},
            "learner_updates": updates,
            "learner_updates_per_s": ups,
            "weights_age_s": percentiles(ages_ss) if ages_ss else None,
            "weights_pickup_delay_s": percentiles(pickups) if pickups else None,
            "collector_scheduling": col.scheduling,
            "phase": float(phase),
            "cores": os.cpu_count(),
        }
    finally:
        if link is not None:
            link.close()
        if env is not None:
            env.close()
        twin.stop()
        tmp.cleanup()


def bench_loop_cli(args: Any) -> dict[str, Any]:
    """`robosac bench loop --seconds S`: the asynchronous design, then the sequential one, each for S s."""
    return {"async": bench_loop(seconds=args.seconds), "sequential": bench_loop(seconds=args.seconds, mode="sequential")}
