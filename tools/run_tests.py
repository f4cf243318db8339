"""`make test`: the whole suite as two pytest runs side by side, so both cores work.

- Tests marked ``compute`` (CPU-bound: SAC maths, learning on Pendulum and bandits, configs, unit
  conversions; no emulated servo bus, no real-time loop, no learner watchdog) run at the lowest CPU
  priority (nice 19) on one torch thread.
- The rest run at normal priority: their emulated servos must answer within the SDK's reply
  timeout and their control loops keep real time, so they take the CPU they need, and the compute
  run gets what they leave (about 1.3 of the 2 cores on average: they wait on clocks and serial
  replies much of the time).

Usage: ``python tools/run_tests.py [PYTEST ARGS]`` (passed to both runs). The compute run's output
follows the other's. The exit status is the failing run's; a run the arguments leave with no
tests counts as passed unless both are. Plain ``pytest`` still runs everything in one process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

NO_TESTS = 5  # pytest's exit status when no test was collected (or all were deselected)


def main(args: list[str]) -> int:
    pytest = [sys.executable, "-m", "pytest", "-q", *args]  # tests/conftest.py sets MUJOCO_GL for both
    t0 = time.monotonic()
    with tempfile.TemporaryFile("w+") as log:
        # Its own cache directory: two pytest runs writing one .pytest_cache could clobber it.
        compute = subprocess.Popen(["nice", "-n", "19", *pytest, "-m", "compute", "-o", "cache_dir=.pytest_cache/compute"],
                                   env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=log, stderr=subprocess.STDOUT)
        try:
            print("run_tests: the tests marked `compute` run beside these at nice 19; their output follows", flush=True)
            rest = subprocess.call([*pytest, "-m", "not compute"])
            print(f"run_tests: timing-sensitive tests done in {time.monotonic() - t0:.0f} s, rc {rest}", flush=True)
            rc_compute = compute.wait()
        finally:
            if compute.poll() is None:  # interrupted: do not leave it running
                compute.kill()
        log.seek(0)
        sys.stdout.write(log.read())
    print(f"run_tests: compute tests rc {rc_compute}; both done in {time.monotonic() - t0:.0f} s", flush=True)
    if {rest, rc_compute} == {NO_TESTS}:
        return NO_TESTS
    # Arguments that pick tests of one kind only (a file, -k) leave the other run with none: not a failure.
    return next((rc for rc in (rest, rc_compute) if rc not in (0, NO_TESTS)), 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
