"""Stable-Baselines3 on the real-time twin: the peer for benchmarks/claw_realtime_training.py.

SB3 has no asynchronous learner, so it runs as a user would run it on a robot: one process that
steps the claw env (hardware backend on `robosac twin`: the real dynamixel-sdk on the twin's pty,
the camera over HTTP MJPEG, the safety monitor, the claw's own resets) and makes its gradient step
between env steps. The env paces itself at the config's 10 Hz (`HardwareRobot`: a deadline grid;
a period that starts more than one period late is an overrun), so an update slower than a period
shows up as overruns and as a robot that waits on its learner, not as a faster clock. The budget
is robosac's: 60 minutes of wall clock from the twin's start (or robosac's 26 000 steps, whichever
comes first). Then the final policy plays 20 deterministic episodes on a fresh twin, as
`robosac eval RUN --backend hardware --twin` does for robosac.

Variants: sb3_default (`SAC("MultiInputPolicy", env)`), sb3_tuned (lr 1e-3, learning_starts
1 000, as in learning.py) and sb3_crossq (sb3-contrib's CrossQ with 512x512 networks, robosac's
real-time algorithm, on the flattened observation). 1 torch thread: the twin needs the other core.

    MUJOCO_GL=egl .venv/bin/python benchmarks/claw_realtime_sb3.py --variant sb3_tuned --seed 0 \
        [--minutes 60] [--json benchmarks/results/claw_realtime_sb3_tuned_seed0.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

import robosac  # noqa: F401 - env ids
from robosac.config import load_config
from robosac.persist import atomic_write_bytes
from robosac.runtime.bench import TwinProcess
from robosac.runtime.telemetry import evaluate

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "hardware_configs" / "claw.yaml"
ENV_ID = "robosac/ClawValveTurn-v0"
VARIANTS: dict[str, dict[str, Any]] = {
    "sb3_default": {},
    "sb3_tuned": {"learning_rate": 1e-3, "learning_starts": 1000},
    "sb3_crossq": {"algo": "crossq", "policy_kwargs": {"net_arch": {"pi": [512, 512], "qf": [512, 512]}}},
}


def make_env(twin: TwinProcess, crossq: bool) -> gym.Env:
    """The claw env on ``twin``, built as `robosac train CONFIG --twin` builds it."""
    env = gym.make(ENV_ID, config=load_config(CONFIG), backend="hardware", pixels=False, render_mode="rgb_array",
                   **twin.env_kwargs())
    return gym.wrappers.FlattenObservation(env) if crossq else env  # sb3-contrib's CrossQ takes Box observations only


def main() -> None:
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.monitor import Monitor

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", choices=sorted(VARIANTS), required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget from the twin's start (default 60)")
    ap.add_argument("--steps", type=int, default=26_000, help="step budget, robosac's (default 26 000)")
    ap.add_argument("--eval-episodes", type=int, default=20)
    ap.add_argument("--json", default=None, help="results (default benchmarks/results/claw_realtime_<variant>_seed<S>.json)")
    args = ap.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    torch.set_num_threads(1)
    kwargs = dict(VARIANTS[args.variant])
    algo = SAC
    if kwargs.pop("algo", "sac") == "crossq":
        from sb3_contrib import CrossQ as algo
    crossq = algo is not SAC

    class Budget(BaseCallback):
        """Stops learning at the wall-clock deadline; records each episode's return and whether a safety stop ended it."""

        def __init__(self, deadline: float) -> None:
            super().__init__()
            self.deadline, self.curve, self.stops = deadline, [], 0

        def _on_step(self) -> bool:
            for info, done in zip(self.locals["infos"], self.locals["dones"]):
                if done and "episode" in info:
                    self.curve.append([self.num_timesteps, float(info["episode"]["r"])])
                    self.stops += bool(info.get("safety_stop"))
            return time.monotonic() < self.deadline

    t0 = time.monotonic()
    twin = TwinProcess(CONFIG)
    error = None
    try:
        env = Monitor(make_env(twin, crossq))
        robot = env.unwrapped.robot
        policy = "MlpPolicy" if crossq else "MultiInputPolicy"
        model = algo(policy, env, seed=args.seed, verbose=0, buffer_size=args.steps, **kwargs)
        budget = Budget(t0 + 60.0 * args.minutes)
        try:
            model.learn(total_timesteps=args.steps, callback=budget)
        except Exception as exc:  # noqa: BLE001 - reported with what was learned until then
            error = f"{type(exc).__name__}: {exc}"
        train_wall_s = time.monotonic() - t0
        train = {"steps": int(model.num_timesteps), "episodes": len(budget.curve), "overruns": int(robot.overruns),
                 "episodes_ended_by_safety_stop": budget.stops}
        env.close()
    finally:
        audit_train = (twin.stop() or {}).get("servo_limit_violations")
    out_json = Path(args.json or ROOT / "benchmarks" / "results" / f"claw_realtime_{args.variant}_seed{args.seed}.json")
    t1 = time.monotonic()
    twin = TwinProcess(CONFIG)
    try:
        env = make_env(twin, crossq)
        ev = evaluate(env, lambda o: model.predict(o, deterministic=True)[0], args.eval_episodes)
        ev_overruns = int(env.unwrapped.robot.overruns)
        env.close()
    finally:
        audit_eval = (twin.stop() or {}).get("servo_limit_violations")
    result = {
        "command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(), "variant": args.variant, "sb3_kwargs": VARIANTS[args.variant],
        "seed": args.seed, "budget_minutes": args.minutes, "train_wall_s": round(train_wall_s, 1), "error": error, **train,
        "steps_per_s": round(train["steps"] / train_wall_s, 2),
        "twin_servo_limit_violations_training": audit_train, "twin_servo_limit_violations_eval": audit_eval,
        "eval_wall_s": round(time.monotonic() - t1, 1), "eval_episodes": args.eval_episodes, "eval_overruns": ev_overruns,
        "eval_success_rate": ev["success_rate"], "eval_return_mean": ev["return_mean"], "eval_score_mean": ev["score_mean"],
        "curve": budget.curve,
    }
    atomic_write_bytes(out_json, json.dumps(result, indent=1).encode())
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}, indent=1))


if __name__ == "__main__":
    main()
