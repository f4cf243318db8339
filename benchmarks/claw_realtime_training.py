"""The claw learning on the real-time twin through the full hardware path, against the wall clock.

`robosac train hardware_configs/claw.yaml --twin`: the twin's emulated servo chain on a pty driven
by the real dynamixel-sdk, its camera served over HTTP MJPEG and read by cv2.VideoCapture, the
safety monitor, the claw's own resets, the collector at 10 Hz under SCHED_FIFO and the learner in
its own process: what a bench run does, with the twin in place of the claw. The twin randomises
itself once (seed 0), as `robosac twin` does by default. After training, `robosac eval RUN
--backend hardware --twin --episodes N` plays the final policy on a fresh twin.

Reported: wall-clock time of the training run (twin start-up to the final checkpoint, without the
final evaluation), steps, episodes, updates, loop jitter and overruns, safety stops, the twin's own
count of goals outside the config's limits that reached a servo (`twin_servo_limit_violations`,
must be {}), and the evaluation's success rate, return and score.

    MUJOCO_GL=egl .venv/bin/python benchmarks/claw_realtime_training.py [--steps 26000] [--seed 0]

Steps for a 60-minute budget on a 2-core machine: 10 Hz with 8 s episodes, resets and the current
stops between them made 7.4 steps/s (2026-12-02, 31 min measured), so 26 000 steps is ~59 minutes. The
learner (one thread, CrossQ 512x512, ~17 updates/s alone on a core) keeps up at one update per step. Writes
benchmarks/results/claw_realtime_training.json (and the run directory, --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from robosac.persist import atomic_write_bytes
from robosac.runtime.child import run_tied

ROOT = Path(__file__).resolve().parent.parent


def _robosac(*args: str, timeout: float) -> dict:
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    r = run_tied([sys.executable, "-m", "robosac.cli", *args], cwd=ROOT, env=env, timeout=timeout)
    if r.returncode != 0:
        raise SystemExit(f"robosac {' '.join(args)} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=26_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-episodes", type=int, default=20)
    ap.add_argument("--out", default="runs/claw_realtime")
    ap.add_argument("--train-args", nargs="*", default=["--lr", "1e-3", "--sac", "crossq=true", "--sac", "policy_delay=3", "--sac", "hidden=512,512"],
                    help="more `robosac train` options (default: the claw's tuned settings, as in learning.py: lr 1e-3, CrossQ, 512x512)")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "claw_realtime_training.json"))
    args = ap.parse_args()

    t0 = time.monotonic()
    train = _robosac("train", "hardware_configs/claw.yaml", "--twin", "--steps", str(args.steps), "--seed", str(args.seed),
                     "--eval-episodes", "0", "--eval-every-episodes", "0", "--no-progress", "--out", args.out, *args.train_args,
                     timeout=3 * 3600)
    train_wall_s = time.monotonic() - t0
    rows = [json.loads(line) for line in (Path(args.out) / "metrics.jsonl").read_text().splitlines()]
    episodes = [r for r in rows if r["kind"] == "episode"]
    t1 = time.monotonic()
    ev = _robosac("eval", args.out, "--backend", "hardware", "--twin", "--episodes", str(args.eval_episodes), timeout=3600)
    result = {
        "command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
        "seed": args.seed, "steps": train["steps"], "episodes": train["episodes"], "updates": train["updates"],
        "train_wall_s": round(train_wall_s, 1), "steps_per_s": round(train["steps"] / train_wall_s, 2),
        "loop_jitter_ms": train["loop_jitter_ms"], "overruns": train["overruns"], "loop_scheduling": train["loop_scheduling"],
        "episodes_ended_by_safety_stop": sum(1 for e in episodes if e.get("safety_stop")),
        "twin_servo_limit_violations_training": train.get("twin_servo_limit_violations"),
        "twin_servo_limit_violations_eval": ev.get("twin_servo_limit_violations"),
        "eval_wall_s": round(time.monotonic() - t1, 1), "eval_episodes": args.eval_episodes,
        "eval_success_rate": ev["success_rate"], "eval_return_mean": ev["return_mean"], "eval_score_mean": ev["score_mean"],
        "curve": [[e["step"], e["ret"]] for e in episodes],
    }
    atomic_write_bytes(args.json, json.dumps(result, indent=1).encode())
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}, indent=1))


if __name__ == "__main__":
    main()
