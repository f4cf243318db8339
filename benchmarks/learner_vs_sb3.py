"""State SAC updates/s: robosac against Stable-Baselines3 in the same process, rounds alternating.

Same shapes as `robosac bench learner`'s state figure (obs 24, act 9, 256x256 MLPs, batch 256),
same replay contents (2 000 random transitions), same torch threads and process settings (glibc
keeps freed memory, denormals flushed) for both. Each round times `--updates` updates of one
library, then of the other, so a machine whose speed drifts (this one's does: a 256^3 fp32 matmul
ran at 190-345 GFLOP/s on different days) slows both alike; the ratio per round is the figure.

    .venv/bin/python benchmarks/learner_vs_sb3.py [--rounds 15] [--updates 60] [--threads 2]

Prints one JSON object. Needs `pip install -e .[bench]` (stable-baselines3).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import gymnasium as gym
import numpy as np
import torch

from robosac.sac.bench import ACT_DIM, STATE_DIM, _spaces
from robosac.sac.perf import tune_learner_process
from robosac.sac.replay import Replay
from robosac.sac.sac import SAC, SACConfig

BATCH, FILL = 256, 2_000


class _Spaces(gym.Env):
    """Only the spaces: SB3 builds its networks and replay buffer from an env; nothing is stepped."""

    def __init__(self) -> None:
        self.observation_space, self.action_space = _spaces(None)


def robosac_learner(seed: int):
    obs_space, act_space = _spaces(None)
    agent = SAC(obs_space, act_space, SACConfig(), seed=seed)
    replay = Replay(agent.spec, ACT_DIM, FILL, seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(FILL):
        replay.add(rng.uniform(-1, 1, STATE_DIM).astype(np.float32), rng.uniform(-1, 1, ACT_DIM).astype(np.float32),
                   float(rng.normal()), rng.uniform(-1, 1, STATE_DIM).astype(np.float32), False)

    def run(n: int) -> None:
        for _ in range(n):
            agent.update(replay.sample(BATCH))
    return run


def sb3_learner(seed: int):
    from stable_baselines3 import SAC as SB3SAC
    from stable_baselines3.common.logger import configure

    model = SB3SAC("MlpPolicy", _Spaces(), batch_size=BATCH, buffer_size=FILL, learning_starts=0, seed=seed, device="cpu", verbose=0)
    model.set_logger(configure(None, []))
    rng = np.random.default_rng(seed)
    for _ in range(FILL):
        model.replay_buffer.add(rng.uniform(-1, 1, (1, STATE_DIM)).astype(np.float32), rng.uniform(-1, 1, (1, STATE_DIM)).astype(np.float32),
                                rng.uniform(-1, 1, (1, ACT_DIM)).astype(np.float32), np.array([rng.normal()]), np.array([False]), [{}])

    def run(n: int) -> None:
        model.train(gradient_steps=n, batch_size=BATCH)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--updates", type=int, default=60, help="updates per library per round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    settings = tune_learner_process()
    torch.set_num_threads(args.threads)
    learners = {"robosac": robosac_learner(args.seed), "sb3": sb3_learner(args.seed)}
    for run in learners.values():
        run(20)  # warm-up: allocator, oneDNN kernels
    rates: dict[str, list[float]] = {name: [] for name in learners}
    for _ in range(args.rounds):
        for name, run in learners.items():
            t0 = time.perf_counter()
            run(args.updates)
            rates[name].append(args.updates / (time.perf_counter() - t0))
    ratios = [a / b for a, b in zip(rates["robosac"], rates["sb3"])]
    import stable_baselines3

    print(json.dumps({
        "date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} cores, {platform.machine()}",
        "torch": torch.__version__, "stable_baselines3": stable_baselines3.__version__, "threads": args.threads,
        "process_settings": settings, "shapes": {"obs": STATE_DIM, "act": ACT_DIM, "hidden": [256, 256], "batch": BATCH},
        "rounds": args.rounds, "updates_per_round": args.updates,
        "robosac_updates_per_s_median": statistics.median(rates["robosac"]),
        "sb3_updates_per_s_median": statistics.median(rates["sb3"]),
        "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
        "robosac_updates_per_s": rates["robosac"], "sb3_updates_per_s": rates["sb3"],
    }))


if __name__ == "__main__":
    main()
