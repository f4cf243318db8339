"""robosac SAC vs Stable-Baselines3 SAC on the same env, steps, seeds and hyper-parameters.

Each run is its own subprocess, robosac and SB3 alternating per seed so machine noise hits both;
both use the same torch thread count. Reports the deterministic eval return (10 episodes) and
env steps per second of the training loop, and the speed ratio robosac / SB3.

    .venv/bin/python benchmarks/sac_vs_sb3.py --env Pendulum-v1 --steps 10000 --seeds 0 1 2

Needs `pip install -e .[bench]` (stable-baselines3).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

from robosac.runtime.child import run_tied

# Shared settings: SB3's SAC defaults (which robosac's defaults also follow), except the learning
# rate: 1e-3 is rl-zoo's tuned value for Pendulum; at SB3's default 3e-4, 10 000 steps is the edge of
# convergence and the deterministic policy of either library still misses some swing-ups.
LEARNING_STARTS = 1000
BATCH = 256
LR = 1e-3
EVAL_EPISODES = 10


def run_robosac(env_id: str, steps: int, seed: int, threads: int, out: str) -> dict:
    cmd = [sys.executable, "-m", "robosac.cli", "train", env_id, "--steps", str(steps), "--seed", str(seed),
           "--learning-starts", str(LEARNING_STARTS), "--batch-size", str(BATCH), "--lr", str(LR),
           "--eval-episodes", str(EVAL_EPISODES), "--threads", str(threads), "--out", out, "--no-progress"]
    proc = run_tied(cmd, check=True)
    s = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"eval_return_mean": s["eval_return_mean"], "env_steps_per_s": s["env_steps_per_s"], "train_wall_s": s["train_wall_s"]}


_SB3_CHILD = r"""
import json, sys, time
import gymnasium as gym, numpy as np, torch
from stable_baselines3 import SAC
env_id, steps, seed, threads, ls, batch, lr, n_eval, flush = sys.argv[1:10]
torch.set_num_threads(int(threads))
torch.set_flush_denormal(flush == "1")
model = SAC("MlpPolicy", gym.make(env_id), learning_starts=int(ls), batch_size=int(batch), learning_rate=float(lr),
            buffer_size=int(steps), seed=int(seed), device="cpu", verbose=0)
t0 = time.perf_counter()
model.learn(total_timesteps=int(steps))
wall = time.perf_counter() - t0
env = gym.make(env_id)
rets = []
for i in range(int(n_eval)):
    obs, _ = env.reset(seed=int(seed) + 1_000_000 + i)
    done, total = False, 0.0
    while not done:
        obs, r, term, trunc, _ = env.step(model.predict(obs, deterministic=True)[0])
        total += float(r); done = term or trunc
    rets.append(total)
print(json.dumps({"eval_return_mean": float(np.mean(rets)), "env_steps_per_s": int(steps) / wall, "train_wall_s": wall}))
"""


def run_sb3(env_id: str, steps: int, seed: int, threads: int, flush_denormals: bool = False) -> dict:
    """SB3 as shipped, or with the denormal flushing robosac's learner turns on (a fairer peer)."""
    cmd = [sys.executable, "-c", _SB3_CHILD, env_id, str(steps), str(seed), str(threads), str(LEARNING_STARTS), str(BATCH), str(LR),
           str(EVAL_EPISODES), "1" if flush_denormals else "0"]
    proc = run_tied(cmd, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2, help="torch threads for both")
    parser.add_argument("--out", default="runs/bench_sac_vs_sb3")
    parser.add_argument("--sb3-flush-denormals", action="store_true",
                        help="also run SB3 with denormals flushed to zero, as robosac's learner runs")
    args = parser.parse_args()

    rows = []
    for seed in args.seeds:
        ours = run_robosac(args.env, args.steps, seed, args.threads, os.path.join(args.out, f"robosac_seed{seed}"))
        print(f"seed {seed} robosac {ours}", file=sys.stderr, flush=True)
        theirs = run_sb3(args.env, args.steps, seed, args.threads)
        print(f"seed {seed} sb3     {theirs}", file=sys.stderr, flush=True)
        row = {"seed": seed, "robosac": ours, "sb3": theirs}
        if args.sb3_flush_denormals:
            row["sb3_flush"] = run_sb3(args.env, args.steps, seed, args.threads, flush_denormals=True)
            print(f"seed {seed} sb3+ftz {row['sb3_flush']}", file=sys.stderr, flush=True)
        rows.append(row)

    def mean(lib: str, key: str) -> float:
        return sum(r[lib][key] for r in rows) / len(rows)

    import stable_baselines3
    import torch

    result = {
        "env": args.env, "steps": args.steps, "seeds": args.seeds, "threads": args.threads,
        "date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
        "torch": torch.__version__, "stable_baselines3": stable_baselines3.__version__,
        "robosac_eval_return_mean": mean("robosac", "eval_return_mean"),
        "sb3_eval_return_mean": mean("sb3", "eval_return_mean"),
        "robosac_env_steps_per_s": mean("robosac", "env_steps_per_s"),
        "sb3_env_steps_per_s": mean("sb3", "env_steps_per_s"),
        "runs": rows,
    }
    result["speed_ratio"] = result["robosac_env_steps_per_s"] / result["sb3_env_steps_per_s"]
    if args.sb3_flush_denormals:
        result["sb3_flush_eval_return_mean"] = mean("sb3_flush", "eval_return_mean")
        result["sb3_flush_env_steps_per_s"] = mean("sb3_flush", "env_steps_per_s")
        result["speed_ratio_vs_sb3_flush"] = result["robosac_env_steps_per_s"] / result["sb3_flush_env_steps_per_s"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
