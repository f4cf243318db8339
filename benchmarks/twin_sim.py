"""Fast-simulation throughput of each robot's MuJoCo model (sim/mujoco_sim.py), on one core.

For each robot: physics steps/s with no rendering, and with one rendered frame per step at 64×64
and 128×128 (the config's MJCF camera, EGL, Mesa on one thread), reported as steps/s = frames/s.
The process is pinned to one CPU (`--cpu`) and Mesa's rasteriser to one thread, so the figures
are per core. Prints one JSON object.

    MUJOCO_GL=egl .venv/bin/python benchmarks/twin_sim.py [--seconds 3] [--cpu 0]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("LP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from sim.mujoco_sim import MujocoSim  # noqa: E402

ROBOTS = {"claw": "hardware_configs/claw.yaml", "quadruped": "hardware_configs/quadruped.yaml"}


def _rate(fn, seconds: float) -> float:
    fn()  # warm-up (renderer creation, caches)
    n, t0 = 0, time.perf_counter()
    while (el := time.perf_counter() - t0) < seconds:
        fn()
        n += 1
    return n / el


def bench(config: str, seconds: float) -> dict:
    root = Path(__file__).resolve().parent.parent
    sim = MujocoSim(root / config)
    rng = np.random.default_rng(0)
    lo = np.array([s.limits.min_rad for s in sim.config.servos])
    hi = np.array([s.limits.max_rad for s in sim.config.servos])
    lo, hi = np.maximum(lo, -1.0), np.minimum(hi, 1.0)
    out: dict = {"timestep_s": sim.dt, "camera": sim.config.sim.camera if sim.config.sim else None}

    def physics_batch() -> None:  # 100 steps with a fresh random target (a policy at 5 Hz-ish)
        sim.set_targets(rng.uniform(lo, hi))
        sim.step(100)

    out["steps_per_s"] = 100 * _rate(physics_batch, seconds)
    out["realtime_multiple"] = out["steps_per_s"] * sim.dt
    for size in (64, 128):
        sim.reset()

        def step_render() -> None:
            sim.step(1)
            sim.render(None, size, size)

        out[f"steps_per_s_render_{size}"] = _rate(step_render, seconds)
    sim.reset()
    # Render alone (no physics), for reference.
    out["frames_per_s_render_only_64"] = _rate(lambda: sim.render(None, 64, 64), seconds)
    sim.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="time per measurement (s)")
    ap.add_argument("--cpu", type=int, default=0, help="CPU to pin to (-1: no pinning)")
    args = ap.parse_args()
    if args.cpu >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    res = {
        "benchmark": "twin_sim",
        "command": "MUJOCO_GL=egl .venv/bin/python benchmarks/twin_sim.py " + " ".join(sys.argv[1:]),
        "mujoco": mujoco.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "pinned_cpu": args.cpu,
        "cpu_count": os.cpu_count(),
        "load_avg_1min_at_start": os.getloadavg()[0],
        "robots": {name: bench(cfg, args.seconds) for name, cfg in ROBOTS.items()},
    }
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
