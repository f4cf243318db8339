"""Learner throughput: SAC updates per second on synthetic data of the robots' shapes.

Figures go into BENCHMARKS.md; run with `robosac bench learner`.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from gymnasium import spaces

from robosac.sac.perf import tune_learner_process
from robosac.sac.replay import Replay
from robosac.sac.sac import SAC, SACConfig

STATE_DIM, ACT_DIM = 24, 9  # a 9-servo claw: joint angles, velocities, valve features
# The chosen image setting: one 64x64 RGB frame. Proprioception already carries joint velocities,
# and the camera's job (valve angle, torso pose) is visible in one frame; a 3-frame stack triples
# the first conv's cost (figures for both in BENCHMARKS.md).
IMAGE_SIZE, FRAME_STACK = 64, 1


def _spaces(image: tuple[int, int] | None) -> tuple[spaces.Space, spaces.Box]:
    """State (24,) and action (9,) boxes, plus a (K, 3, S, S) uint8 image for ``image=(S, K)``."""
    state = spaces.Box(-1.0, 1.0, (STATE_DIM,), np.float32)
    act = spaces.Box(-1.0, 1.0, (ACT_DIM,), np.float32)
    if image is None:
        return state, act
    size, stack = image
    img = spaces.Box(0, 255, (stack, 3, size, size), np.uint8)
    return spaces.Dict({"state": state, "pixels": img}), act


def updates_per_second(image: tuple[int, int] | None, batch_size: int, seconds: float, seed: int = 0,
                       config: SACConfig | None = None) -> float:
    """Time ``SAC.update`` (sampling included) for ``seconds`` after a warm-up; updates/s.

    ``image``: None for state only, else (size px, frames stacked); ``config``: default SACConfig()."""
    obs_space, act_space = _spaces(image)
    obs_space.seed(seed)
    agent = SAC(obs_space, act_space, config or SACConfig(), seed=seed)
    replay = Replay(agent.spec, ACT_DIM, 2_000, seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(2_000):
        replay.add(obs_space.sample(), rng.uniform(-1, 1, ACT_DIM).astype(np.float32), float(rng.normal()), obs_space.sample(), False)
    for _ in range(5):
        agent.update(agent.sample(replay, batch_size))
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        agent.update(agent.sample(replay, batch_size))
        n += 1
    return n / (time.perf_counter() - start)


def bench_learner(args: argparse.Namespace) -> dict:
    tune_learner_process()
    if args.threads:
        torch.set_num_threads(args.threads)
    return {
        "state_updates_per_s": updates_per_second(None, 256, args.seconds),
        "pixel_updates_per_s": updates_per_second((IMAGE_SIZE, FRAME_STACK), 128, args.seconds),
        "settings": {
            "state": {"obs": STATE_DIM, "act": ACT_DIM, "hidden": list(SACConfig().hidden), "batch": 256},
            "pixels": {
                "state": STATE_DIM, "act": ACT_DIM, "image": [FRAME_STACK, 3, IMAGE_SIZE, IMAGE_SIZE],
                "encoder": f"3x3 convs {list(SACConfig().conv_channels)}, strides 2-2-1, channels-last, Linear->LayerNorm->tanh {SACConfig().feature_dim}",
                "hidden": list(SACConfig().hidden), "batch": 128, "augmentation": f"random shift ±{SACConfig().shift_pad} px",
            },
            "torch_threads": torch.get_num_threads(),
            "device": "cpu",
        },
    }
