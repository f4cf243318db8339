"""The walking env's hardware backend on the quadruped's twin, in a module of its own: the claw
tests in test_envs.py keep a claw twin running in this process for the whole module (its physics,
servo-chain and camera threads), and a second real-time twin beside it made the quadruped's
stand-up miss its timing under CI load."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

import robosac  # noqa: F401 - registers the env ids
from _twin_inproc import BUS, running_twin

QUAD = "robosac/QuadrupedWalk-v0"


def test_quadruped_hardware_backend_on_the_twin() -> None:
    """The walking env on the twin: the stand-up from limp (servos power up off), the overhead
    camera's ArUco tracking for the torso pose, observations in the env's space, and the reset
    of a robot that is still up (it settles into the stand pose, no fold). check_env runs on the
    sim backend (test_envs.py): its random actions can throw the real-time robot over, after which
    the hardware backend rightly asks a human (StandUpError) instead of restarting a simulation."""
    with running_twin("hardware_configs/quadruped.yaml") as tw:
        env = gym.make(QUAD, backend="hardware", port=tw.port, camera_source=tw.camera_url, bus_settings=BUS)
        obs, info = env.reset(seed=0)
        truth = tw.twin.ground_truth()
        assert truth["torso_pos_m"][2] > 0.23  # standing (limp it lies at ~0.19 m)
        assert info["reset_attempts"] >= 1 and env.observation_space.contains(obs)  # got up from limp
        # Torque came on only once the collapsing robot was still: it waited at least the 3 still
        # reads and came to rest before the 3 s timeout.
        from robosac.robots.robot import SETTLE_READS, SETTLE_TIMEOUT_S
        settle_s = env.unwrapped.robot.last_settle_s
        assert SETTLE_READS * env.unwrapped.robot.dt_s <= settle_s < SETTLE_TIMEOUT_S, settle_s
        obs, r, term, trunc, info = env.step(np.zeros(12, np.float32))
        torso, truth = info["torso"], tw.twin.ground_truth()
        assert abs(torso["x_m"] - truth["torso_pos_m"][0]) < 0.03 and abs(torso["y_m"] - truth["torso_pos_m"][1]) < 0.03
        # Small tilts read 0..16 deg from a 29 px marker (robosac/hal/aruco.py); the truth is upright.
        assert torso["tilt_rad"] < np.radians(20) and not term
        assert env.observation_space.contains(obs)
        for _ in range(10):  # small actions around the stand pose: the legs move off it, it stays up
            obs, *_ = env.step(np.full(12, 0.1, np.float32))
            assert env.observation_space.contains(obs)
        obs, info = env.reset()
        assert info["reset_attempts"] == 0, info  # still up: settled into the stand pose, no fold
        assert env.observation_space.contains(obs) and tw.twin.ground_truth()["torso_pos_m"][2] > 0.23
        env.close()
