"""Pixel SAC updates/s for image sizes and frame stacks (state 24 + image, act 9, batch 128).

    .venv/bin/python benchmarks/learner_image_sizes.py [--seconds 5] [--threads 2]

Prints one JSON object; the figures behind the image setting chosen in robosac/sac/bench.py, and
(`pixel_claw_recipes_updates_per_s`) behind the pixel claw's settings in benchmarks/learning.py: 3 frames stacked,
plain SAC and CrossQ (policy delay 3) at 32x32, 48x48 and 64x64, and the whole recipe (with its
reconstruction loss and reward head) at batch 128 and 256.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from robosac.sac.bench import updates_per_second
from robosac.sac.perf import tune_learner_process
from robosac.sac.sac import SACConfig

RECIPES = {  # name: (image px, batch, SACConfig)
    "sac_64_b256": (64, 256, SACConfig()),
    "sac_48_b128": (48, 128, SACConfig()),
    "sac_32_b128": (32, 128, SACConfig(shift_pad=2)),
    "crossq256_32_b128": (32, 128, SACConfig(crossq=True, policy_delay=3, shift_pad=2)),
    "crossq512_48_b128": (48, 128, SACConfig(crossq=True, policy_delay=3, hidden=(512, 512))),
    "crossq512_32_b128": (32, 128, SACConfig(crossq=True, policy_delay=3, hidden=(512, 512), shift_pad=2)),
    # The pixel claw's recipe as benchmarks/learning.py runs it: with the reconstruction loss and the reward head.
    "recipe_b128": (32, 128, SACConfig(crossq=True, policy_delay=3, hidden=(512, 512), shift_pad=2, recon_weight=1.0, reward_head=True)),
    "recipe_b256": (32, 256, SACConfig(crossq=True, policy_delay=3, hidden=(512, 512), shift_pad=2, recon_weight=1.0, reward_head=True)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    tune_learner_process()
    torch.set_num_threads(args.threads)
    rows = {f"{size}x{size}x{stack}": updates_per_second((size, stack), 128, args.seconds)
            for size, stack in [(48, 1), (64, 1), (48, 3), (64, 3), (84, 1)]}
    recipes = {name: updates_per_second((size, 3), batch, args.seconds, config=cfg) for name, (size, batch, cfg) in RECIPES.items()}
    print(json.dumps({"date": time.strftime("%Y-%m-%d"), "threads": args.threads, "batch": 128, "pixel_updates_per_s": rows,
                      "pixel_claw_recipes_updates_per_s": recipes}))


if __name__ == "__main__":
    main()
