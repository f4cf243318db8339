"""The compute floor of a state SAC update on this machine: matmul FLOP/s against the update's FLOPs.

A state update (obs 24, act 9, 256x256 MLPs, batch 256, the shapes of `robosac bench learner`)
is matmuls plus per-op overhead. This script counts the update's matmul FLOPs from the layer
shapes and measures what this CPU does per second on the update's own matmul shape (a batched
256x256 @ 256x256, both critics in one call), in fp32 and bf16, with the learner's thread count.
The floor is FLOPs / (FLOP/s): the update rate with zero overhead, which no implementation of the
same update in that precision can beat on this machine.

    .venv/bin/python benchmarks/compute_floor.py [--threads 2]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

OBS, ACT, HIDDEN, BATCH = 24, 9, 256, 256


def mlp_flops(sizes: list[int], batch: int) -> int:
    """Forward matmul FLOPs (2 per multiply-add) of an MLP with these layer widths."""
    return sum(2 * batch * a * b for a, b in zip(sizes[:-1], sizes[1:]))


def update_flops() -> dict[str, int]:
    critic = 2 * mlp_flops([OBS + ACT, HIDDEN, HIDDEN, 1], BATCH)  # both members
    actor = mlp_flops([OBS, HIDDEN, HIDDEN, 2 * ACT], BATCH)
    parts = {
        "target: actor(s') + target critics(s', a')": actor + critic,
        "critic loss: critics(s, a), forward + backward (input and weight grads)": 3 * critic,
        "actor loss: actor(s) forward + backward": 3 * actor,
        "actor loss: critics(s, pi(s)) forward + backward (input grads only)": 2 * critic,
    }
    parts["total"] = sum(parts.values())
    return parts


def gflops(dtype: torch.dtype, seconds: float) -> float:
    a = torch.randn(2, HIDDEN, HIDDEN, dtype=dtype)
    b = torch.randn(2, HIDDEN, HIDDEN, dtype=dtype)
    for _ in range(50):
        torch.bmm(a, b)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.bmm(a, b)
        n += 1
    return 2 * 2 * HIDDEN**3 * n / (time.perf_counter() - t0) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    flops = update_flops()
    out = {"date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(), "threads": args.threads,
           "torch": torch.__version__, "update_mflop": {k: round(v / 1e6, 1) for k, v in flops.items()}}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        g = gflops(dtype, args.seconds)
        out[f"{name}_gflop_per_s"] = round(g, 1)
        out[f"{name}_floor_updates_per_s"] = round(g * 1e9 / flops["total"], 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
