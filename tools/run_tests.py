"""`make test`: the whole suite as three pytest runs side by side, so both cores work.

- The tests marked ``compute`` (CPU-bound: SAC maths, learning on Pendulum and bandits, configs,
  unit conversions; no emulated servo bus, no real-time loop, no learner watchdog) and those marked
  ``train_run`` (a whole training run in its own processes, on the sim backend or Pendulum:
  CPU-heavy, no real-time deadline) run in a pytest process each, on one torch thread, under
  SCHED_IDLE: they get a core only when no other task wants it.
- The rest run as usual: their emulated servos must answer within the SDK's reply timeout and
  their control loops keep real time, so they take the CPU they need, and the two idle-class runs
  share what they leave (the rest wait on clocks and serial replies much of the time).

Why SCHED_IDLE and not nice 19: a core running only idle-class tasks counts as free when the
kernel places a waking task, so an emulated servo's reply thread starts at once. Beside nice-19
and nice-10 runs (two busy cores) an in-process twin's servos missed their replies for hundreds of
ms in 2 of 4 runs (`ServoSilentError`); beside the compute run alone at nice 19 they never did.

Usage: ``python tools/run_tests.py [PYTEST ARGS]`` (passed to every run). The idle-class runs'
output follows the other's. The exit status is the first failing run's; a run the arguments leave
with no tests counts as passed unless all are. Plain ``pytest`` still runs everything in one process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

NO_TESTS = 5  # pytest's exit status when no test was collected (or all were deselected)
BACKGROUND = ("compute", "train_run")  # markers run under SCHED_IDLE, each in a pytest process of its own


def _idle() -> None:
    """In the child before exec: SCHED_IDLE, inherited by its threads and processes (Linux grants it
    without privilege; where it is refused, nice 19, said in the run's output)."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (OSError, AttributeError) as e:
        os.nice(19)
        os.write(2, f"run_tests: SCHED_IDLE refused ({e!r}); running at nice 19\n".encode())


def main(args: list[str]) -> int:
    pytest = [sys.executable, "-m", "pytest", "-q", *args]  # tests/conftest.py sets MUJOCO_GL for all
    t0 = time.monotonic()
    logs = [tempfile.TemporaryFile("w+") for _ in BACKGROUND]
    # Each its own cache directory: pytest runs writing one .pytest_cache could clobber it.
    background = [subprocess.Popen([*pytest, "-m", mark, "-o", f"cache_dir=.pytest_cache/{mark}"], preexec_fn=_idle,
                                   env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=log, stderr=subprocess.STDOUT)
                  for mark, log in zip(BACKGROUND, logs)]
    try:
        print(f"run_tests: the tests marked {' and '.join(BACKGROUND)} run beside these under SCHED_IDLE; their output follows", flush=True)
        rest = subprocess.call([*pytest, "-m", " and ".join(f"not {m}" for m in BACKGROUND)])
        print(f"run_tests: timing-sensitive tests done in {time.monotonic() - t0:.0f} s, rc {rest}", flush=True)
        codes = [rest]
        for mark, proc, log in zip(BACKGROUND, background, logs):
            codes.append(proc.wait())
            log.seek(0)
            sys.stdout.write(log.read())
            print(f"run_tests: {mark} tests rc {codes[-1]}", flush=True)
        print(f"run_tests: all done in {time.monotonic() - t0:.0f} s", flush=True)
    finally:
        for proc in background:
            if proc.poll() is None:  # interrupted: do not leave it running
                proc.kill()
        for log in logs:
            log.close()
    if set(codes) == {NO_TESTS}:
        return NO_TESTS
    # Arguments that pick tests of one kind only (a file, -k) leave the other runs with none: not a failure.
    return next((rc for rc in codes if rc not in (0, NO_TESTS)), 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
