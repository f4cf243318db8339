"""Can the valve's angle be read from the valve camera at 32, 48 and 64 px? A supervised probe.

The pixel claw must bring the valve within 0.1 rad of its target, seeing the valve only in the
camera. This trains robosac's pixel encoder (robosac.sac.networks.ObsEncoder, the conv stack SAC
uses, with the same random-shift augmentation) plus a linear head to regress (cos, sin) of the
valve angle from single frames, and reports the angle error on held-out frames. Frames come from
the sim backend with domain randomisation on (a fresh draw every episode), the fingers wherever
random actions left them, and the valve put at a uniform random angle in [-pi, pi) before each
frame. A size whose probe cannot get below 0.1 rad caps the policy's precision too.

    MUJOCO_GL=egl .venv/bin/python benchmarks/pixel_valve_probe.py [--sizes 32 48 64] [--updates 2000]

Prints one JSON object (and writes benchmarks/results/pixel_valve_probe.json).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import gymnasium as gym
import mujoco
import numpy as np
import torch

import robosac  # noqa: F401 - env ids
from robosac.persist import atomic_write_bytes
from robosac.sac.networks import ObsEncoder
from robosac.sac.perf import tune_learner_process
from robosac.sac.sac import random_shift
from robosac.sac.spaces import parse_obs_space


def frames(size: int, n: int, seed: int, per_episode: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """``n`` valve-camera frames (n, 3, size, size) uint8 and their valve angles (n,) rad."""
    env = gym.make("robosac/ClawValveTurn-v0", backend="sim", pixels=True, variant="random", valve_in_state=False,
                   image_size=[size, size])
    robot = env.unwrapped.robot
    rng = np.random.default_rng(seed)
    env.action_space.seed(seed)
    images, angles = [], []
    episode = 0
    while len(images) < n:
        env.reset(seed=seed * 100_000 + episode)
        episode += 1
        for _ in range(per_episode):
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            angle = float(rng.uniform(-math.pi, math.pi))
            robot.sim.set_valve(angle)
            mujoco.mj_forward(robot.sim.model, robot.sim.data)
            img, _ = robot.frame()
            images.append(np.moveaxis(img, -1, 0))
            angles.append(angle)
            if terminated or truncated or len(images) == n:
                break
    env.close()
    return np.stack(images), np.array(angles, np.float32)


def probe(size: int, updates: int, n_train: int, n_test: int, seed: int, pad: int) -> dict:
    t0 = time.monotonic()
    x_tr, a_tr = frames(size, n_train, seed)
    x_te, a_te = frames(size, n_test, seed + 1)
    render_s = time.monotonic() - t0
    torch.manual_seed(seed)
    spec = parse_obs_space(gym.spaces.Box(0, 255, (3, size, size), np.uint8))
    encoder = ObsEncoder(spec)
    head = torch.nn.Linear(encoder.out_dim, 2)
    opt = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=1e-3)
    x_tr_t, x_te_t = torch.from_numpy(x_tr), torch.from_numpy(x_te)
    y_tr = torch.from_numpy(np.stack([np.cos(a_tr), np.sin(a_tr)], 1))
    gen = torch.Generator().manual_seed(seed)
    t1 = time.monotonic()
    for _ in range(updates):
        idx = torch.randint(0, len(x_tr_t), (128,), generator=gen)
        pred = head(encoder({"pixels": random_shift(x_tr_t[idx], pad)}))
        loss = (pred - y_tr[idx]).pow(2).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = head(encoder({"pixels": random_shift(x_te_t, 0)})).numpy()
    err = np.abs((np.arctan2(pred[:, 1], pred[:, 0]) - a_te + np.pi) % (2 * np.pi) - np.pi)
    return {"train_frames": n_train, "test_frames": n_test, "updates": updates, "shift_pad": pad,
            "median_error_rad": float(np.median(err)), "p90_error_rad": float(np.percentile(err, 90)),
            "mean_error_rad": float(err.mean()), "fraction_within_0.1_rad": float((err < 0.1).mean()),
            "render_s": round(render_s, 1), "train_s": round(time.monotonic() - t1, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 48, 64])
    ap.add_argument("--updates", type=int, default=2000)
    ap.add_argument("--train-frames", type=int, default=4000)
    ap.add_argument("--test-frames", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default="benchmarks/results/pixel_valve_probe.json")
    args = ap.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    tune_learner_process()
    torch.set_num_threads(args.threads)
    # SAC's random shift: 4 px at 64x64 (DrQ's 4 at 84x84), scaled down with the image.
    res = {f"{s}x{s}": probe(s, args.updates, args.train_frames, args.test_frames, args.seed, max(1, round(4 * s / 64)))
           for s in args.sizes}
    out = {"date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(), "threads": args.threads, "seed": args.seed, "probe": res}
    atomic_write_bytes(args.json, json.dumps(out, indent=1).encode())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
