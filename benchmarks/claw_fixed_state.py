"""ClawValveTurn (fixed: start 0, target pi; sim backend; state only): robosac vs Stable-Baselines3.

Goal (learning-results issue): success >= 90 % over 20 deterministic evaluation episodes within
30 000 env steps, 3 seeds, SB3's SAC on the same env, budget and seeds.

robosac: `robosac train robosac/ClawValveTurn-v0` (the asynchronous runtime: collector thread +
learner process, 1 update per env step, SAC defaults). SB3: `SAC("MultiInputPolicy", env)` with its
defaults (learning_starts 100, batch 256, lr 3e-4, 1 gradient step per env step). Success is the
env's info["success"] at the last step of each evaluation episode (|error| < 0.1 rad), as ROBEL
scores it. Each run is its own subprocess; robosac and SB3 alternate per seed.

    .venv/bin/python benchmarks/claw_fixed_state.py --steps 30000 --seeds 0 1 2

Needs stable-baselines3 (`pip install -e .[bench]`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

EVAL_EPISODES = 20

_SB3_CHILD = r"""
import json, sys, time
import numpy as np, gymnasium as gym, torch
import robosac
from stable_baselines3 import SAC
steps, seed, episodes = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(2)
env = gym.make("robosac/ClawValveTurn-v0", backend="sim")
model = SAC("MultiInputPolicy", env, seed=seed, verbose=0)
t0 = time.monotonic()
model.learn(total_timesteps=steps)
wall = time.monotonic() - t0
returns, successes = [], []
for i in range(episodes):
    obs, _ = env.reset(seed=10_000 + seed * 100 + i)
    done, total = False, 0.0
    while not done:
        a, _ = model.predict(obs, deterministic=True)
        obs, r, term, trunc, info = env.step(a)
        total += float(r)
        done = term or trunc
    returns.append(total)
    successes.append(bool(info["success"]))
print(json.dumps({"eval_return_mean": float(np.mean(returns)), "success_rate": float(np.mean(successes)), "train_wall_s": wall}))
"""


def run_robosac(steps: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        cmd = [sys.executable, "-m", "robosac.cli", "train", "robosac/ClawValveTurn-v0", "--steps", str(steps), "--seed", str(seed),
               "--eval-episodes", str(EVAL_EPISODES), "--eval-every-episodes", "0", "--out", os.path.join(d, "run"), "--no-progress"]
        t0 = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.monotonic() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"robosac train failed (exit {proc.returncode}): {proc.stderr[-3000:]}")
    s = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"eval_return_mean": s["eval_return_mean"], "success_rate": s["eval_success_rate"], "run_wall_s": wall}


def run_sb3(steps: int, seed: int) -> dict:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _SB3_CHILD, str(steps), str(seed), str(EVAL_EPISODES)],
                          capture_output=True, text=True, check=True)
    s = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**s, "run_wall_s": time.monotonic() - t0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30_000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default="benchmarks/results/claw_fixed_state.json")
    args = ap.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    res: dict = {"env": "robosac/ClawValveTurn-v0 (fixed, sim, state)", "steps": args.steps, "eval_episodes": EVAL_EPISODES,
                 "date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(), "python": platform.python_version(),
                 "robosac": {}, "sb3": {}}
    for seed in args.seeds:
        res["robosac"][seed] = run_robosac(args.steps, seed)
        print("robosac", seed, res["robosac"][seed], flush=True)
        res["sb3"][seed] = run_sb3(args.steps, seed)
        print("sb3", seed, res["sb3"][seed], flush=True)
    for lib in ("robosac", "sb3"):
        runs = res[lib].values()
        res[lib + "_mean_success"] = sum(r["success_rate"] for r in runs) / len(res[lib])
        res[lib + "_mean_wall_s"] = sum(r["run_wall_s"] for r in runs) / len(res[lib])
    res["wall_ratio_sb3_over_robosac"] = res["sb3_mean_wall_s"] / res["robosac_mean_wall_s"]
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps({k: v for k, v in res.items() if not isinstance(v, dict)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
