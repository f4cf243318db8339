"""Where on the clock a control loop's deadlines should lie: lateness of a SCHED_FIFO spin-wait
(HardwareRobot's pacing: sleep to 1 ms before the deadline, then spin) against the deadline's
offset from the whole milliseconds of the monotonic clock.

On Linux the kernel's timer tick interrupts each CPU on whole milliseconds (every 1-10 ms by the
kernel's HZ); a spin that should end on a tick is held up by the interrupt. This is why
HardwareRobot puts its deadlines half a millisecond off the whole milliseconds.

    .venv/bin/python benchmarks/deadline_offsets.py --rate-hz 20 --steps 100

Writes benchmarks/results/deadline_offsets.json. Without permission for SCHED_FIFO it runs as a
normal thread and says so.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np

from robosac.persist import atomic_write_bytes

ROOT = Path(__file__).resolve().parents[1]


def lateness_us(offset_s: float, dt_s: float, steps: int) -> np.ndarray:
    """|lateness| (us) of `steps` spin-waited deadlines at offset_s + k * dt_s."""
    now = time.monotonic()
    deadline = offset_s + math.ceil((now - offset_s) / dt_s) * dt_s + dt_s
    late = np.empty(steps)
    for i in range(steps):
        pause = deadline - time.monotonic() - 0.001
        if pause > 0:
            time.sleep(pause)
        while time.monotonic() < deadline:
            pass
        late[i] = time.monotonic() - deadline
        deadline += dt_s
    return 1e6 * np.abs(late)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate-hz", type=float, default=20.0)
    ap.add_argument("--steps", type=int, default=100, help="deadlines per offset")
    ap.add_argument("--offsets-ms", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0, 2.0, 2.5, 3.0, 4.0, 12.5, 25.0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "deadline_offsets.json"))
    args = ap.parse_args()
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(50))
        scheduling = "SCHED_FIFO 50"
    except (AttributeError, PermissionError, OSError) as e:
        scheduling = f"normal (SCHED_FIFO refused: {type(e).__name__})"
    rows = []
    for off in args.offsets_ms:
        late = lateness_us(off / 1000.0, 1.0 / args.rate_hz, args.steps)
        row = {"offset_ms": off, "p50_us": round(float(np.percentile(late, 50)), 2), "p99_us": round(float(np.percentile(late, 99)), 2),
               "max_us": round(float(late.max()), 2)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = {"command": f"benchmarks/deadline_offsets.py --rate-hz {args.rate_hz:g} --steps {args.steps}", "date": time.strftime("%Y-%m-%d"),
           "cores": os.cpu_count(), "kernel": platform.release(), "scheduling": scheduling, "rows": rows}
    atomic_write_bytes(args.out, (json.dumps(out, indent=1) + "\n").encode())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
