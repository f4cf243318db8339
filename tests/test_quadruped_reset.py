"""The quadruped's scripted stand-up (robosac.robots.quadruped_reset) on SimRobot (the MJCF twin
behind the real SafetyMonitor: clip, rate limit, current stop).

Start states are made by teleporting / limp physics (test set-up only), then `robot.recover()`
(torque on, holding the present pose); the stand-up itself only sends joint goals through
`robot.step`. Every success checks the report AND ground truth. Heights: the report's is the
marker centre above the floor (0.292 m standing), ground truth below is the torso centre."""

from __future__ import annotations

import math
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from robosac.config import load_config  # noqa: E402
from robosac.robots.quadruped_reset import STAND, StandUpConfig, StandUpError, stand_up  # noqa: E402
from robosac.robots.robot import SimRobot  # noqa: E402
from sim.mujoco_sim import REPO_ROOT  # noqa: E402

MARKER_STAND_M = StandUpConfig().stand_height_m  # 0.292: marker centre when standing in the twin
TORSO_STAND_M = 0.256  # torso centre when standing in the twin (keyframe 0.258)

_CONFIG = load_config(REPO_ROOT / "hardware_configs/quadruped.yaml")


def _robot() -> SimRobot:
    r = SimRobot(_CONFIG)
    r.sim.reset("stand")
    r.recover()
    return r


def _tilted(robot: SimRobot, angle_rad: float, z_m: float) -> None:
    """Teleport (set-up only): stand pose, torso rolled by angle_rad at height z_m, settle, recover."""
    robot.sim.reset("stand")
    quat = np.zeros(4)
    mujoco.mju_axisAngle2Quat(quat, np.array([1.0, 0.0, 0.0]), angle_rad)
    robot.sim.data.qpos[2] = z_m
    robot.sim.data.qpos[3:7] = quat
    mujoco.mj_forward(robot.sim.model, robot.sim.data)
    robot.sim.step_for(1.5)
    robot.recover()


def _assert_up(robot: SimRobot, report) -> None:
    # The report's own check.
    assert report.final_tilt_rad < math.radians(10)
    assert abs(report.final_height_m - MARKER_STAND_M) < 0.03
    assert 0 <= report.attempts <= 3
    # Ground truth: torso z axis within 10 deg of vertical, height within 3 cm, joints at the pose.
    assert robot.sim.upright() > math.cos(math.radians(10))
    assert abs(robot.sim.torso_pose()[0][2] - TORSO_STAND_M) < 0.03
    assert abs(robot.sim.marker_position()[2] - MARKER_STAND_M) < 0.03
    stand = np.array([STAND[n] for n in robot.names])
    assert np.max(np.abs(robot.sim.read().positions_rad - stand)) < 0.15
    assert not robot.monitor.tripped and robot.torque_on.all()
    print(f"stand-up: {report.duration_s:.2f} s simulated, {report.attempts} attempt(s), "
          f"{report.safety_stops} safety stop(s), {report.poses}")


def test_already_standing():
    r = _robot()
    r.hold(0.5)
    rep = stand_up(r)
    _assert_up(r, rep)
    # Standing already: it only settles into the stand pose (no fold, well under a second).
    assert rep.attempts == 0 and rep.safety_stops == 0 and rep.poses == ("settle",)
    assert rep.duration_s < 1.0


def test_collapsed_limp():
    r = _robot()
    r.set_torque(False)
    r.sim.step_for(1.5)
    r.recover()
    assert r.sim.torso_pose()[0][2] < TORSO_STAND_M - 0.05  # really collapsed
    rep = stand_up(r)
    _assert_up(r, rep)
    assert rep.safety_stops == 0


def test_random_actions():
    # Random goals +-0.3 rad around the stand pose through the real safety monitor (fixed seed).
    # With seeds 2, 3, 5 these flip the twin upside down (then StandUpError, see
    # test_upside_down_raises); seed 0 leaves it wobbling on its feet.
    r = _robot()
    rng = np.random.default_rng(0)
    stand = np.array([STAND[n] for n in r.names])
    for _ in range(int(3.0 / r.dt_s)):
        r.step(stand + rng.uniform(-0.3, 0.3, 12))
    _assert_up(r, stand_up(r))


def test_safety_stop_is_recovered_and_counted():
    # A knee jammed while collapsed: the fold drives it into the jam, the current stop trips
    # (torque off); stand_up recovers and the next attempt (jam released by then) gets it up.
    r = _robot()
    r.set_torque(False)
    r.sim.step_for(1.5)
    r.recover()
    r.sim.jam(r.names.index("fr_knee"), 0.8)
    rep = stand_up(r)
    _assert_up(r, rep)
    assert rep.safety_stops >= 1 and rep.attempts == rep.safety_stops + 1


@pytest.mark.parametrize("side", [1, -1])
def test_lying_on_side_asks_a_human(side):
    # Known limit (module docstring "Limits"): no self-righting from a side; it must say so.
    r = _robot()
    _tilted(r, side * math.pi / 2, 0.16)
    assert r.sim.upright() < math.cos(math.radians(60))  # really on its side
    with pytest.raises(StandUpError, match="lying on its side.*A human has to put the robot on its feet"):
        stand_up(r)
    assert r.sim.upright() < math.cos(math.radians(60))  # nothing was faked: still on its side
    assert r.sim.upright() > math.cos(math.radians(120))  # and not flipped over by trying


def test_upside_down_raises():
    r = _robot()
    _tilted(r, math.pi, 0.3)
    assert r.torso().tilt > math.radians(120)  # ground truth here; the tracker would see nothing
    with pytest.raises(StandUpError, match="upside down"):
        stand_up(r)
    assert r.sim.upright() < 0  # nothing was faked: still upside down


class _BlindTracker:
    """The hardware tracker's view when the marker faces the floor: torso() is None."""

    def __init__(self, robot: SimRobot) -> None:
        self._r = robot

    def __getattr__(self, name):
        return getattr(self._r, name)

    def torso(self):
        return None


def test_marker_not_seen_raises():
    r = _robot()
    _tilted(r, math.pi, 0.3)
    with pytest.raises(StandUpError, match="does not see the torso marker"):
        stand_up(_BlindTracker(r))
    assert r.sim.upright() < 0
