"""How often a random policy trips the claw's current stop (sim backend), for a finger servo setting.

    .venv/bin/python benchmarks/claw_random_stops.py                          # the shipped config
    .venv/bin/python benchmarks/claw_random_stops.py --finger-mode 3 --current-a 1.5 --current-stop-s 0.5   # before

Plays `--episodes` episodes of uniform random actions (episode i reset with seed i, actions from
seed 0) and prints one JSON object: episodes, episodes ended by a current stop, the stop messages.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
from dataclasses import replace

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=30)
    ap.add_argument("--finger-mode", type=int, choices=(3, 5), default=None, help="operating mode of the nine finger servos")
    ap.add_argument("--current-a", type=float, default=None, help="fingers' limits.current_a, A")
    ap.add_argument("--current-stop-s", type=float, default=None, help="safety.current_stop_s, s")
    args = ap.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    import gymnasium as gym

    import robosac  # noqa: F401  (registers the envs)
    from robosac.config import load_config
    from robosac.envs.base import HARDWARE_CONFIGS

    cfg = load_config(HARDWARE_CONFIGS / "claw.yaml")
    servos = []
    for s in cfg.servos:
        if s.name != "valve":
            if args.finger_mode is not None:
                s = replace(s, operating_mode=args.finger_mode)
            if args.current_a is not None:
                s = replace(s, limits=replace(s.limits, current_a=args.current_a))
        servos.append(s)
    cfg = replace(cfg, servos=tuple(servos))
    if args.current_stop_s is not None:
        cfg = replace(cfg, safety=replace(cfg.safety, current_stop_s=args.current_stop_s))

    env = gym.make("robosac/ClawValveTurn-v0", config=cfg)
    rng = np.random.default_rng(0)
    stops: collections.Counter[str] = collections.Counter()
    for ep in range(args.episodes):
        env.reset(seed=ep)
        while True:
            _, _, term, trunc, info = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
            if term or trunc:
                if "safety_stop" in info:
                    stops[info["safety_stop"]] += 1
                break
    env.close()
    print(json.dumps({"episodes": args.episodes, "finger_mode": servos[0].operating_mode, "current_a": servos[0].limits.current_a,
                      "current_stop_s": cfg.safety.current_stop_s, "stopped_episodes": sum(stops.values()), "stops": dict(stops)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
