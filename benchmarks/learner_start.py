"""Learner start-up: how long a run waits for its learner, spawned (before session 44) or forked
from a server that has already imported torch (now).

Each trial is a fresh Python, like `robosac train`: it starts the learner's server (forkserver
mode) or not (spawn mode), imports torch and builds its acting `Policy` as the collector does, then
starts an `AsyncLearner` (obs 24, act 9, SAC defaults). It reports the seconds from its own start
to the learner's first heartbeat (``first_s``), then kills the learner three times and reports
each restart's seconds to a heartbeat (``restart_s``; the supervisor's path after a crash). Modes
alternate, so a machine whose speed drifts slows both alike.

    .venv/bin/python benchmarks/learner_start.py [--trials 3]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

TRIAL = r"""
import json, sys, time
t0 = time.monotonic()
import robosac.runtime.learner as L
if sys.argv[1] == "spawn":
    import multiprocessing as mp
    L._context = lambda: mp.get_context("spawn")
else:
    L.start_learner_server()
import numpy as np
import torch
from gymnasium import spaces
from robosac.sac.sac import Policy, SACConfig

obs, act = spaces.Box(-1, 1, (24,), np.float32), spaces.Box(-1, 1, (9,), np.float32)
cfg = SACConfig()
link = L.AsyncLearner(Policy(obs, act, cfg, seed=0), obs, act, 1000, sys.argv[2], cfg,
                      L.LearnerConfig(learning_starts=10**9, checkpoint_every_s=600.0))

def beating() -> float:
    while not link.process.started_beating:
        time.sleep(0.002)
    return time.monotonic()

link.start()
first = beating() - t0
restarts = []
for _ in range(3):
    link.process.kill()
    t = time.monotonic()
    link.start()
    restarts.append(beating() - t)
link.close()
print(json.dumps({"first_s": first, "restart_s": restarts}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=3)
    args = p.parse_args()
    runs: dict[str, list[dict]] = {"spawn": [], "forkserver": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.trials):
            for mode in runs:
                r = subprocess.run([sys.executable, "-c", TRIAL, mode, os.path.join(tmp, f"{mode}{i}.pt")],
                                   capture_output=True, text=True, timeout=300)
                if r.returncode:
                    sys.exit(f"{mode} trial failed:\n{r.stderr[-3000:]}")
                runs[mode].append(json.loads(r.stdout.strip().splitlines()[-1]))
    out = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()}, "trials": args.trials}
    for mode, rs in runs.items():
        out[mode] = {"first_s_median": round(statistics.median(r["first_s"] for r in rs), 2),
                     "restart_s_median": round(statistics.median(x for r in rs for x in r["restart_s"]), 2),
                     "first_s": [round(r["first_s"], 2) for r in rs]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
