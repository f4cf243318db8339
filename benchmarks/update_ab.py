"""SAC updates/s of this checkout against an earlier git revision, in one process, rounds alternating.

For a change to the update's speed: absolute updates/s on this 2-core machine drift by more than a
typical change between two runs (BENCHMARKS.md), so both versions run side by side and the ratio
per round is the figure. The revision's robosac/sac/{sac,networks}.py are loaded from git as
modules of their own; everything else (spaces, replay, perf settings) is this checkout's.

    .venv/bin/python benchmarks/update_ab.py --against HEAD~1 [--pixels] [--rounds 8] [--updates 8]

Other settings: --image SIZE,STACK (e.g. 32,3), --batch N, --sac KEY=VALUE (repeatable, both
versions). The pixel claw's recipe at batch 256:
    --image 32,3 --batch 256 --sac crossq=true --sac policy_delay=3 --sac hidden=512,512 --sac shift_pad=2
    --sac recon_weight=1 --sac reward_head=true

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def load_revision(rev: str, tmp: Path):
    """robosac.sac.sac as it was at ``rev`` (its networks module with it), as a fresh module."""
    for name in ("networks", "sac"):
        src = subprocess.run(["git", "show", f"{rev}:robosac/sac/{name}.py"], cwd=ROOT, check=True, capture_output=True, text=True).stdout
        src = src.replace("from robosac.sac.networks import", "from ab_old_networks import")
        (tmp / f"ab_old_{name}.py").write_text(src)
    sys.path.insert(0, str(tmp))
    return importlib.import_module("ab_old_sac")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="git revision to compare with, e.g. HEAD~1")
    parser.add_argument("--pixels", action="store_true", help="the pixel figure's settings (64x64 RGB, batch 128); else state (batch 256)")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--updates", type=int, default=8, help="updates per version per round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--image", help="SIZE,STACK: square RGB frames, STACK of them (overrides --pixels' 64,1)")
    parser.add_argument("--batch", type=int, help="batch size (default 128 with images, 256 without)")
    parser.add_argument("--sac", action="append", default=[], metavar="KEY=VALUE", help="a SAC setting for both versions")
    args = parser.parse_args()
    image = tuple(int(v) for v in args.image.split(",")) if args.image else (64, 1) if args.pixels else None

    from robosac.sac import sac as new
    from robosac.sac.bench import ACT_DIM, _spaces
    from robosac.sac.perf import tune_learner_process
    from robosac.sac.replay import Replay

    tune_learner_process()
    torch.set_num_threads(args.threads)
    batch = args.batch or (128 if image else 256)
    with tempfile.TemporaryDirectory() as tmp:
        old = load_revision(args.against, Path(tmp))
        obs_space, act_space = _spaces(image)
        obs_space.seed(0)
        agents = {"this": new.SAC(obs_space, act_space, new.sac_config_from(args.sac), seed=0),
                  args.against: old.SAC(obs_space, act_space, old.sac_config_from(args.sac), seed=0)}
        replay = Replay(agents["this"].spec, ACT_DIM, 500, seed=0)
        rng = np.random.default_rng(0)
        for _ in range(500):
            replay.add(obs_space.sample(), rng.uniform(-1, 1, ACT_DIM).astype(np.float32), float(rng.normal()), obs_space.sample(), False)
        for agent in agents.values():
            for _ in range(5):
                agent.update(replay.sample(batch))
        rates: dict[str, list[float]] = {k: [] for k in agents}
        for _ in range(args.rounds):
            for name, agent in agents.items():
                t0 = time.perf_counter()
                for _ in range(args.updates):
                    agent.update(replay.sample(batch))
                rates[name].append(args.updates / (time.perf_counter() - t0))
    ratios = [a / b for a, b in zip(rates["this"], rates[args.against])]
    print(json.dumps({
        "date": time.strftime("%Y-%m-%d"), "against": args.against, "image": image, "sac": args.sac, "batch": batch, "threads": args.threads,
        "this_updates_per_s_median": statistics.median(rates["this"]),
        "against_updates_per_s_median": statistics.median(rates[args.against]),
        "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
    }))


if __name__ == "__main__":
    main()
