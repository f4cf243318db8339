"""The collector thread: transitions with policy versions and episode marks, timing telemetry on
the real-time twin, and a fault ending the loop with the robot left safe."""

from __future__ import annotations

import os
from dataclasses import replace

import gymnasium as gym
import numpy as np

import robosac  # noqa: F401
from _twin_inproc import BUS, running_twin
from robosac.runtime.collector import Collector, Transition, percentiles

CLAW = "robosac/ClawValveTurn-v0"


def test_transitions_carry_versions_and_episode_marks() -> None:
    env = gym.make(CLAW, backend="sim")
    got: list[Transition] = []
    version = {"v": 0}

    def act(obs):
        version["v"] += 1  # a new "policy" every step: each transition must carry its own
        return np.zeros(9, np.float32), version["v"]

    n = env.unwrapped.config.control.max_steps
    c = Collector(env, act, got.append, max_steps=n + 5, seed=0).start()
    c.join(30)
    assert c.error is None and not c.running
    assert len(got) == n + 5 and c.episodes == 1 and len(c.returns) == 1
    assert [t.policy_version for t in got] == list(range(1, n + 6))
    assert got[n - 1].truncated and got[n - 1].step == n - 1 and got[n].episode == 1 and got[n].step == 0
    for a, b in zip(got, got[1:]):
        if not (a.terminated or a.truncated):
            np.testing.assert_array_equal(a.next_obs["state"], b.obs["state"])  # consecutive
        assert b.t_obs >= a.t_act
    assert c.returns[0] == sum(t.reward for t in got[:n])
    assert c.episode_step == 5 and 0 < c.reset_s < 5  # two resets timed (the loop's non-stepping time)
    env.close()


def test_fixed_rate_on_the_twin_with_timing_telemetry() -> None:
    """50 Hz on the real-time twin: the period holds and the telemetry fills. (Jitter figures
    under load are a benchmark, `robosac bench loop`, not a test threshold.)"""
    with running_twin("hardware_configs/claw.yaml") as tw:
        cfg = tw.cfg
        cfg = replace(cfg, control=replace(cfg.control, rate_hz=50.0))
        env = gym.make(CLAW, backend="hardware", config=cfg, port=tw.port, camera_source=tw.camera_url, bus_settings=BUS)
        c = Collector(env, lambda obs: (np.zeros(9, np.float32), 0), max_steps=100, seed=0).start()
        c.join(30)
        assert c.error is None and c.steps == 100
        st = c.stats()
        assert st["jitter_s"]["p50"] < 0.002 and st["obs_to_action_s"]["p50"] < 0.02
        assert len(c.late_s) == len(c.obs_to_action_s) == 100
        env.close()


def test_a_fault_ends_the_loop_and_is_reported() -> None:
    env = gym.make(CLAW, backend="sim")

    def act(obs):
        a = np.zeros(9, np.float32)
        if c.steps == 5:
            a[0] = np.nan  # a broken policy: never reaches a servo
        return a, 0

    c = Collector(env, act, max_steps=50, seed=0)
    c.start().join(30)
    assert c.steps == 5 and "UnsafeCommandError" in c.stats()["error"]
    assert env.unwrapped.robot.info()["nonfinite_commands"] == 1
    env.close()


def test_realtime_loop_thread_reports_its_actual_scheduling() -> None:
    """realtime=True: the loop thread asks for SCHED_FIFO; `scheduling` must say what the thread
    really runs under (FIFO where permitted, as here as root; a normal thread and the refusal
    otherwise), and the caller's thread is left as it was."""
    env = gym.make(CLAW, backend="sim")
    seen: list[int] = []

    def act(obs):
        seen.append(os.sched_getscheduler(0))
        return np.zeros(9, np.float32), 0

    c = Collector(env, act, max_steps=3, seed=0, realtime=True)
    c.start().join(30)
    assert c.error is None and len(seen) == 3
    if c.scheduling == "SCHED_FIFO 50":
        assert set(seen) == {os.SCHED_FIFO}
    else:
        assert c.scheduling.startswith("normal (SCHED_FIFO refused") and set(seen) == {os.SCHED_OTHER}
    assert os.sched_getscheduler(0) == os.SCHED_OTHER and c.stats()["scheduling"] == c.scheduling
    env.close()


def test_percentiles() -> None:
    p = percentiles([-3.0, 1.0, 2.0])
    assert p["max"] == 3.0 and p["p50"] == 2.0
    assert np.isnan(percentiles([])["p99"])


def test_try_realtime_for_every_thread_a_process_has() -> None:
    """`try_realtime(p, all_threads=True)` raises the threads started before the call too (a robot
    process raises its camera reader that way once it is set up). In a child process: this one
    must stay a normal process."""
    import json
    import subprocess
    import sys

    code = (
        "import os, threading\n"
        "from robosac.runtime.collector import try_realtime\n"
        "ev = threading.Event(); t = threading.Thread(target=ev.wait); t.start()\n"
        "print(try_realtime(49, all_threads=True))\n"
        "print(sorted(os.sched_getparam(int(x)).sched_priority for x in os.listdir('/proc/self/task')))\n"
        "ev.set(); t.join()\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    said, printed = r.stdout.strip().splitlines()
    prios = json.loads(printed)
    assert len(prios) >= 2  # the main thread and the one it started first
    if said.startswith("normal (SCHED_FIFO refused"):
        assert set(prios) == {0}
    else:
        assert said == "SCHED_FIFO 49" and set(prios) == {49}
