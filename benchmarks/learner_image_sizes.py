"""Pixel SAC updates/s for image sizes and frame stacks (state 24 + image, act 9, batch 128).

    .venv/bin/python benchmarks/learner_image_sizes.py [--seconds 5] [--threads 2]

Prints one JSON object; the figures behind the image setting chosen in robosac/sac/bench.py.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from robosac.sac.bench import updates_per_second
from robosac.sac.perf import tune_learner_process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    tune_learner_process()
    torch.set_num_threads(args.threads)
    rows = {f"{size}x{size}x{stack}": updates_per_second((size, stack), 128, args.seconds)
            for size, stack in [(48, 1), (64, 1), (48, 3), (64, 3), (84, 1)]}
    print(json.dumps({"date": time.strftime("%Y-%m-%d"), "threads": args.threads, "batch": 128, "pixel_updates_per_s": rows}))


if __name__ == "__main__":
    main()
