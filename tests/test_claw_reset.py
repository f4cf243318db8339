"""The claw's reset (robosac/robots/claw_reset.py) on the real-time twin through the real dynamixel
SDK, when a finger trips a current stop during the reset.

A current stop switches every servo off. On the hardware path the other fingers used to fall limp
while `Robot.recover` waited for them to settle (~1 s on the twin), the move ended at once, and so
every finger counted as missed and was disentangled, attempt after attempt: one finger held on the
valve ended the reset with "finger(s) f0, f1, f2 did not reach the reset pose" (the 60-minute
real-time training run, BENCHMARKS.md). The sim backend never showed it: its recover takes no
simulated time, so the fingers do not fall."""

from __future__ import annotations

import math

import mujoco
import numpy as np
import pytest

from _twin_inproc import BUS, running_twin
from robosac.config import RobotConfig
from robosac.robots import claw_reset
from robosac.robots.claw_reset import ResetError, reset_claw, valve_goal_rad
from robosac.robots.robot import HardwareRobot

F0_MIDDLE_ID = 2  # hardware_configs/claw.yaml


def test_a_current_stop_on_one_finger_neither_drops_nor_fails_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    """Also: the held finger side-steps before its second and third attempts (the first move of
    each attempt, recorded as it goes to the robot), and the error says where it is."""
    first_moves: list[np.ndarray] = []
    move, drive = claw_reset._move_to_pose, claw_reset._drive

    def recording_move(*args, **kwargs):
        first_moves.append(None)
        return move(*args, **kwargs)

    def recording_drive(robot, goal, *args, **kwargs):
        if first_moves and first_moves[-1] is None:
            first_moves[-1] = goal.copy()
        return drive(robot, goal, *args, **kwargs)

    monkeypatch.setattr(claw_reset, "_move_to_pose", recording_move)
    monkeypatch.setattr(claw_reset, "_drive", recording_drive)
    with running_twin("hardware_configs/claw.yaml") as tw:
        robot = HardwareRobot(tw.cfg, port=tw.port, use_camera=False, **BUS)
        try:
            robot.recover()
            reset_claw(robot, 0.0)
            pose = np.array([tw.cfg.reset.pose_rad.get(n, 0.0) for n in robot.names])
            fingers = {f: [i for i, n in enumerate(robot.names) if n.startswith(f + "_")] for f in ("f0", "f1", "f2")}
            # f0's middle joint off its pose and held there (a finger hooked on the valve): driving
            # it to the pose pushes at the 1.2 A cap, a current stop after current_stop_s (1 s).
            goal = robot.monitor.last_goal
            goal[fingers["f0"][1]] = 0.2
            robot.step(goal)
            robot.hold(0.5)
            tw.chain.faults.jam(F0_MIDDLE_ID)
            first_moves.clear()

            with pytest.raises(ResetError, match=r"finger\(s\) f0 did not reach.*\(f0 at \[") as e:
                reset_claw(robot, 0.0)
            assert "f1" not in str(e.value) and "f2" not in str(e.value)
            # Attempt 1 starts on f0's path (held at middle 0.2, tip -0.8 rad, it reaches in: the tip
            # curls to the clear value first); attempts 2 and 3 first side-step f0's top joint to
            # +0.4 and then -0.4 rad, the other joints held.
            top, mid, tip = fingers["f0"]
            assert len(first_moves) == 3, first_moves
            assert first_moves[0][tip] == tw.cfg.reset.clear_pose_rad["f0_bottom"] and abs(first_moves[0][mid] - 0.2) < 0.15
            for g, side in zip(first_moves[1:], (claw_reset.SIDESTEP_RAD, -claw_reset.SIDESTEP_RAD)):
                assert g[top] == pose[top] + side and abs(g[mid] - 0.2) < 0.15 and g[tip] != pose[tip], g
            q = robot.read().position
            for f in ("f1", "f2"):  # they reached the pose and kept it through f0's stops
                assert np.all(np.abs(q[fingers[f]] - pose[fingers[f]]) <= tw.cfg.reset.tolerance_rad), (f, q)
            assert robot.monitor.info()["current_stop"] >= 1

            # Freed, f0 gets there too, and only f0 was disentangled on the way.
            tw.chain.faults.unjam(F0_MIDDLE_ID)
            robot.recover()
            report = reset_claw(robot, 0.0)
            assert set(report.disentangled) <= {"f0"}, report
            q = robot.read().position
            assert np.all(np.abs(q[:9] - pose[:9]) <= tw.cfg.reset.tolerance_rad), q
        finally:
            robot.close()


# The twin's joint angles (rad: f0 top, middle, bottom, f1 ..., f2 ..., valve) as one `make demo`
# episode left them (session 23; episode 9's 29 recorded actions replayed on the twin randomised
# with seed 0): f0 in over the valve with its tip bent out, caught on a prong.
F0_WEDGED_QPOS = [0.0351, -0.8803, 0.8742, 0.3677, 0.4159, -1.1303, -0.1141, 0.4982, -1.0222, 0.2729]


def test_a_finger_wedged_on_a_prong_side_steps_free() -> None:
    """From that pose every move of either path tripped a current stop on f0 and backed out, attempt
    after attempt, so the demo ended in ResetError (so does this test without the side-step). The
    side-step of f0's top joint before the second attempt frees it."""
    with running_twin("hardware_configs/claw.yaml", randomize_seed=0) as tw:
        robot = HardwareRobot(tw.cfg, port=tw.port, use_camera=False, **BUS)
        try:
            robot.recover()
            reset_claw(robot, F0_WEDGED_QPOS[-1])
            robot.set_torque(False)
            with tw.twin.lock:  # the robot put where the episode left it
                tw.sim.data.qpos[:] = F0_WEDGED_QPOS
                tw.sim.data.qvel[:] = 0.0
                mujoco.mj_forward(tw.sim.model, tw.sim.data)
            robot.recover(settle=False)
            robot.set_torque(False, ["valve"])

            report = reset_claw(robot, 0.0)
            assert report.attempts == 2 and report.disentangled == ["f0"], report
            pose = np.array([tw.cfg.reset.pose_rad.get(n, 0.0) for n in robot.names])
            q = robot.read().position
            assert np.all(np.abs(q[:9] - pose[:9]) <= tw.cfg.reset.tolerance_rad), q
        finally:
            robot.close()


def _resets_cleanly(robot: HardwareRobot, cfg: RobotConfig) -> None:
    """One attempt, no current stop, every finger at its reset pose."""
    report = reset_claw(robot, 0.0)
    assert report.attempts == 1 and report.current_stops == 0, report
    pose = np.array([cfg.reset.pose_rad.get(n, 0.0) for n in robot.names])
    q = robot.read().position
    assert np.all(np.abs(q[:9] - pose[:9]) <= cfg.reset.tolerance_rad), q


def test_fingers_over_the_prongs_come_down_outside_them() -> None:
    """With a prong under every finger (valve at -pi/3) and the fingers tucked at the clear pose (tips
    above the prongs' ends), the old straight move to the reset pose uncurled each tip onto a prong's
    end at the current cap, the same way on every attempt: ResetError (seed 1 of the real-time run,
    2026-12-04, BENCHMARKS.md). Tip-first, the tips uncurl outside the prongs: one attempt, no stop."""
    with running_twin("hardware_configs/claw.yaml") as tw:
        robot = HardwareRobot(tw.cfg, port=tw.port, use_camera=False, **BUS)
        try:
            robot.recover()
            reset_claw(robot, -np.pi / 3)
            clear = np.array([tw.cfg.reset.clear_pose_rad.get(n, 0.0) for n in robot.names])
            goal = robot.monitor.last_goal.copy()
            goal[:9] = clear[:9]
            for _ in range(10):
                robot.step(goal)
            assert np.all(np.abs(robot.read().position[:9] - clear[:9]) <= tw.cfg.reset.tolerance_rad)

            _resets_cleanly(robot, tw.cfg)
        finally:
            robot.close()


def test_a_finger_reaching_over_the_valve_lifts_its_tip_before_it_swings_out() -> None:
    """f2 as one real-time training episode ended (middle joint far in over the valve, tip joint
    bent back down): swung straight to the pose, its tip dragged over the hub and stuck there (a
    miss, or a current stop). Tip-first, it reaches the pose at the first attempt."""
    with running_twin("hardware_configs/claw.yaml") as tw:
        robot = HardwareRobot(tw.cfg, port=tw.port, use_camera=False, **BUS)
        try:
            robot.recover()
            reset_claw(robot, -2.26)
            f2 = [i for i, n in enumerate(robot.names) if n.startswith("f2_")]
            start = robot.monitor.last_goal.copy()
            end = start.copy()
            end[f2] = [-0.01, -0.96, 0.89]
            for k in range(30):
                robot.step(start + (end - start) * min(1.0, (k + 1) / 20))
            assert robot.read().position[f2[1]] < -0.8

            _resets_cleanly(robot, tw.cfg)
        finally:
            robot.close()


def _f0_bent_out_over_the_valve(robot: HardwareRobot) -> None:
    """f0 as one real-time training episode ended (seed 1 at 512x512, step 3 580): middle joint in
    over the valve, tip joint bent out (middle + tip > 0), valve at 1.9 rad, on the twin randomised
    as that run's was (seed 0)."""
    reset_claw(robot, 1.9)
    f0 = [i for i, n in enumerate(robot.names) if n.startswith("f0_")]
    start = robot.monitor.last_goal.copy()
    end = start.copy()
    end[f0] = [0.04, -0.92, 1.43]
    for k in range(30):
        robot.step(start + (end - start) * min(1.0, (k + 1) / 20))
    q = robot.read().position
    assert q[f0[1]] < -0.8 and q[f0[2]] > 1.2, q


def test_a_finger_with_its_tip_bent_out_swings_out_first() -> None:
    """Curling that tip first swept it into the hub, where it wedged at the current cap, and every
    later move of the finger tripped again: ResetError after 3 attempts. Swung out first, it clears."""
    with running_twin("hardware_configs/claw.yaml", randomize_seed=0) as tw:
        robot = HardwareRobot(tw.cfg, port=tw.port, use_camera=False, **BUS)
        try:
            robot.recover()
            _f0_bent_out_over_the_valve(robot)
            _resets_cleanly(robot, tw.cfg)
        finally:
            robot.close()


def test_a_finger_that_trips_backs_out_the_way_it_came(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the order rule forced wrong (tip first for the bent-out f0), curling the tip trips a
    current stop. f0 backs out to where that move began, free, and the rest of the path (swing out,
    uncurl, pose) gets it there in the same attempt. Held where it stopped instead, the tip stayed
    wedged and every later move tripped again: ResetError after 3 attempts."""
    monkeypatch.setattr(claw_reset, "_reaches_in", lambda middle_rad, tip_rad: True)
    with running_twin("hardware_configs/claw.yaml", randomize_seed=0) as tw:
        robot = HardwareRobot(tw.cfg, port=tw.port, use_camera=False, **BUS)
        try:
            robot.recover()
            _f0_bent_out_over_the_valve(robot)
            report = reset_claw(robot, 0.0)
            assert report.current_stops >= 1 and report.attempts == 1, report
            pose = np.array([tw.cfg.reset.pose_rad.get(n, 0.0) for n in robot.names])
            q = robot.read().position
            assert np.all(np.abs(q[:9] - pose[:9]) <= tw.cfg.reset.tolerance_rad), q
        finally:
            robot.close()


@pytest.mark.parametrize(
    "q, start, want",
    [
        (math.pi + 0.05, 0.0, 0.0),  # half a turn on (the policy overshot the target pi): back, not on to 2 pi
        (-math.pi - 0.05, 0.0, 0.0),
        (10 * math.pi + 0.2, 0.0, 10 * math.pi),  # a full turn away is not unwound in one reset ...
        (0.3, 1.0, 1.0),
        (4.0, -1.0, 2 * math.pi - 1.0),  # ... nor is a move longer than 3/4 of a turn taken
        (627.9, 0.0, 198 * math.pi),  # past half the limit: one more turn towards zero
        (-627.9, 0.0, -198 * math.pi),
    ],
)
def test_the_valve_goal_unwinds_the_policys_turns(q: float, start: float, want: float) -> None:
    assert valve_goal_rad(q, start, 628.0) == pytest.approx(want)


def test_the_valve_goes_back_the_way_it_came_on_the_twin() -> None:
    """Episode after episode the policy turned the valve half a turn and a little more the same way;
    the reset, taking the shortest way on, wound the valve up to the config's 100-turn limit
    (627.999 rad) and failed there after 315 episodes. Now it goes back."""
    with running_twin("hardware_configs/claw.yaml") as tw:
        robot = HardwareRobot(tw.cfg, port=tw.port, use_camera=False, **BUS)
        try:
            robot.recover()
            reset_claw(robot, 0.0)
            for _ in range(3):
                reset_claw(robot, math.pi - 0.2)
                reset_claw(robot, math.pi + 0.2)  # on past half a turn, where the policy left it
                report = reset_claw(robot, 0.0)
                assert abs(report.valve_start_rad) < 0.1, report
        finally:
            robot.close()
